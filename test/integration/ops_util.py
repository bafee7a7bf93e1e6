"""Helpers for the operations tests (endpoints, lifecycle, deploy files), on top of harness.py.

They cover what the harness leaves out because only operations tests need it: HTTP requests to a
port other than the main listener (admin.listen, an nginx in front), parsing Prometheus text and
running Debian's ``promtool`` on it, reading JSON log lines, and finding the ports a config uses.
Every wait is bounded and polls a condition; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess

from harness import HOST, read_http_response, wait_until

# One Prometheus sample line: a name, optional {labels}, a value (timestamps are not used here).
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)$")


def http_on(port: int, method: str, path: str, headers: dict | None = None,
            timeout: float = 5.0, host: str = HOST):
    """One HTTP/1.1 request to ``host:port`` over a fresh socket: ``(status, headers, body)``."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    req = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(req)
        return read_http_response(s, timeout)


def get_json(port: int, path: str, headers: dict | None = None, timeout: float = 5.0):
    """GET ``path`` on ``port`` and decode the body as JSON: ``(status, headers, document)``."""
    status, hdrs, body = http_on(port, "GET", path, headers, timeout)
    return status, hdrs, json.loads(body)


def port_refuses(port: int) -> bool:
    """True when nothing accepts TCP connections on ``127.0.0.1:port`` any more."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return False
    except OSError:
        return True


def parse_prometheus(text: str) -> dict[str, float]:
    """Maps each sample (name with its label set, as written) to its value. Comment lines are
    skipped; a line that is neither a comment nor a sample raises, so a broken exposition fails
    the test that reads it."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        out[m.group(1)] = float(m.group(2))
    return out


def promtool_check(text: str) -> tuple[int, str]:
    """Runs ``promtool check metrics`` (Debian's prometheus package) on an exposition; returns its
    exit code and everything it printed. Exit 0 means it parsed and passed the lint."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool is not installed (Debian package prometheus)")
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def json_log_records(log_text: str) -> list[dict]:
    """Decodes every non-empty line of a log as JSON; raises on the first line that is not."""
    records = []
    for n, line in enumerate(log_text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise AssertionError(f"log line {n} is not JSON ({e}): {line!r}") from None
    return records


def events(sidecar, name: str) -> list[str]:
    """The logfmt lines of ``sidecar``'s log whose event is ``name``."""
    return [line for line in sidecar.log().splitlines()
            if re.search(rf"(^|\s)event={re.escape(name)}(\s|$)", line)]


# ----------------------------------------------------------------------------- deploy/ files


def dockerfile_stages(text: str) -> list[dict]:
    """Splits a Dockerfile into stages: ``[{"from": "debian:bookworm-slim", "name": "build",
    "instructions": [("RUN", "apt-get ..."), ...]}]``. Continuation lines are joined and
    comments dropped, which is all the deploy tests need."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    stages: list[dict] = []
    for line in lines:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"from": parts[0], "name": name, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((word, rest))
    return stages


def apt_packages(run_line: str) -> list[str]:
    """The package names of the ``apt-get install`` in a RUN line (options and the rest of the
    shell pipeline are dropped)."""
    m = re.search(r"apt-get install((?:\s+[^&;|]+)*)", run_line)
    if not m:
        return []
    return [w for w in m.group(1).split() if not w.startswith("-") and "=" not in w]


def systemd_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Parses a unit file into ``{section: {key: [values in order]}}``."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out.setdefault(section, {}).setdefault(key.strip(), []).append(value.strip())
    return out


def seconds_of(value: str) -> float:
    """A duration as nginx, systemd or compose writes it ("120s", "30s", "1m", "15", "250ms")."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*", value)
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    n, unit = float(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}[unit]


class Nginx:
    """Debian's nginx running one site file in a private prefix, in the foreground, stopped by
    pid. ``listen``/``upstream`` rewrite the file's own addresses to test ports, and the rewrite
    must hit exactly once each, so a changed file fails loudly instead of testing nothing."""

    def __init__(self, site_text: str, listen_port: int, upstream_port: int, workdir: str,
                 listen_pattern: str = r"listen 80;", upstream_pattern: str = r"127\.0\.0\.1:8080"):
        self.port = listen_port
        self.dir = workdir
        site, n1 = re.subn(listen_pattern, f"listen {HOST}:{listen_port};", site_text)
        site, n2 = re.subn(upstream_pattern, f"{HOST}:{upstream_port}", site)
        if (n1, n2) != (1, 1):
            raise AssertionError(f"expected one listen and one upstream address to rewrite, "
                                 f"found {n1} and {n2}")
        os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
        with open(os.path.join(workdir, "site.conf"), "w") as f:
            f.write(site)
        temp = " ".join(f"{k}_temp_path {workdir}/tmp_{k};"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf = os.path.join(workdir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(f"worker_processes 1;\npid {workdir}/nginx.pid;\n"
                    f"error_log {workdir}/logs/error.log;\n"
                    f"events {{ worker_connections 256; }}\n"
                    f"http {{\n  access_log off;\n  {temp}\n  include {workdir}/site.conf;\n}}\n")
        self.proc: subprocess.Popen | None = None

    def _args(self) -> list[str]:
        return ["nginx", "-p", self.dir, "-c", self.conf, "-e", f"{self.dir}/logs/error.log"]

    def test_config(self) -> tuple[int, str]:
        """``nginx -t``: exit code and output."""
        r = subprocess.run(self._args() + ["-t"], capture_output=True, timeout=30)
        return r.returncode, (r.stdout + r.stderr).decode(errors="replace")

    def start(self, timeout: float = 10.0) -> "Nginx":
        self.proc = subprocess.Popen(self._args() + ["-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()}")
            return not port_refuses(self.port)

        wait_until(up, timeout, f"nginx on port {self.port}")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
