"""bench_smoke: a few seconds of the load generator against the naive floor and a real
redis-server on free loopback ports. Asserts that every expected delivery arrived, with zero
loss, reorder or duplicate. Usage: smoke.py LOADGEN NAIVE_FLOOR

bench_history_smoke (smoke.py --history LOADGEN SIDECAR): the sidecar with history, published
with FCALL to sidecar.v1 clients for a second, then a small resume storm; asserts zero loss and
that every client came back recovered with exactly the missed messages, in order."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise SystemExit(f"bench_smoke: timed out waiting for {what}")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def run_loadgen(args, timeout):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    assert out.returncode == 0, f"loadgen exited {out.returncode}"
    assert lines, "no JSON line"
    return json.loads(lines[-1])


def history(loadgen, sidecar):
    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    rport = free_port()
    procs = []
    tmp = tempfile.mkdtemp(prefix="bench-history-smoke-")
    try:
        procs.append(subprocess.Popen(
            [redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL))
        wait_for(lambda: port_open(rport), 10, "redis-server")
        for mode in ("fcall", "storm"):
            sport = free_port()
            config = os.path.join(tmp, f"{mode}.yaml")
            with open(config, "w") as f:
                f.write(f'listen: "127.0.0.1:{sport}"\n'
                        f'redis: {{ url: "redis://127.0.0.1:{rport}/0" }}\n'
                        'routes: [ { path: "/ws/{org}", channel: "org:{org}" } ]\n'
                        'log: { level: warn }\n'
                        'history:\n'
                        '  - { channel: "org:{org}", size: 1000, ttl_s: 600, max_recover: 300 }\n')
            server = subprocess.Popen([sidecar, "--config", config])
            procs.append(server)
            wait_for(lambda: port_open(sport), 10, "sidecar")
            common = [loadgen, "--url", f"ws://127.0.0.1:{sport}/ws/{{room}}",
                      "--publish", f"redis://127.0.0.1:{rport}", "--publish-fcall",
                      "--subprotocol", "sidecar.v1", "--server-pid", str(server.pid),
                      "--label", f"history-{mode}"]
            if mode == "fcall":
                report = run_loadgen(common + ["--connections", "200", "--rooms", "10",
                                               "--fixed-rate", "10000", "--fixed-seconds", "1"], 40)
                p = report["phases"][0]
                # 10,000 deliveries/s in rooms of 20 is 500 FCALLs/s; 1 s of it is 10,000.
                assert p["expected"] == 10000 == p["unique"] == p["received"], p
                assert p["lost"] == 0 and p["out_of_order"] == 0 and p["duplicates"] == 0, p
                assert p["publish_errors"] == 0, p
            else:
                report = run_loadgen(common + ["--connections", "300", "--rooms", "10",
                                               "--resume-storm", "20"], 60)
                s = report["storm"]
                assert s["ok"] and s["exact"] == 300 == s["recovered"] == s["live"], s
                # Reads are shared by the clients of a room that resume from one position: far
                # fewer than one per client (how many per room depends on loop turns), and every
                # one of them is an FCALL that Redis counted.
                assert 10 <= s["history_reads"] <= 60 and s["fcalls"] == s["history_reads"], s
                assert s["rss_peak_kb"] > 0, s
            server.terminate()
            server.wait(timeout=10)
        print("bench_history_smoke: OK")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if sys.argv[1] == "--history":
        history(sys.argv[2], sys.argv[3])
        return
    loadgen, floor = sys.argv[1], sys.argv[2]
    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    rport, fport = free_port(), free_port()
    procs = []
    tmp = tempfile.mkdtemp(prefix="bench-smoke-")
    try:
        procs.append(subprocess.Popen(
            [redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL))
        wait_for(lambda: port_open(rport), 10, "redis-server")
        server = subprocess.Popen([floor, "--listen", f"127.0.0.1:{fport}",
                                   "--redis", f"127.0.0.1:{rport}"])
        procs.append(server)
        wait_for(lambda: port_open(fport), 10, "naive floor")
        out = subprocess.run(
            [loadgen, "--url", f"ws://127.0.0.1:{fport}/ws/{{room}}",
             "--publish", f"redis://127.0.0.1:{rport}", "--connections", "300", "--rooms", "10",
             "--fixed-rate", "15000", "--fixed-seconds", "2", "--churn", "100",
             "--server-pid", str(server.pid), "--label", "smoke"],
            capture_output=True, text=True, timeout=90)
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        assert out.returncode == 0, f"loadgen exited {out.returncode}"
        assert lines, "no JSON line"
        report = json.loads(lines[-1])
        assert report["opened"] == 300, report["opened"]
        assert report["rss_per_conn_kb"] > 0, "RSS was not measured"
        phases = {p["name"]: p for p in report["phases"]}
        assert set(phases) == {"fixed", "churn"}, phases.keys()
        for name, p in phases.items():
            # 15,000 deliveries/s in rooms of 30 is 500 publishes/s; 2 s of it is 30,000 deliveries.
            assert p["expected"] == 30000 == p["published"] * 30, (name, p["expected"])
            assert p["lost"] == 0, (name, p["lost"])
            assert p["unique"] == p["expected"], (name, p["unique"])
            assert p["received"] == p["expected"], (name, p["received"])
            assert p["out_of_order"] == 0 and p["duplicates"] == 0, name
            assert not p["publisher_behind"], name
            assert p["p99_ms"] > 0, name
        assert phases["churn"]["churn_per_s"] > 50, phases["churn"]["churn_per_s"]
        assert report["server_closed"] == 0
        print("bench_smoke: OK")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
