"""Every file under deploy/ is checked against the real binary and real tools: shipped configs pass
--check-config; the command lines of the Dockerfile, compose, Kubernetes and systemd use flags the
binary accepts and configs it accepts; probe paths answer 200 on a live sidecar; the Dockerfile's
runtime packages cover what the binary links; the health check script tells healthy from not;
Debian's nginx with deploy/nginx/sidecar.conf relays a WebSocket and its publishes; the demo
publisher's seed 001 events reach a client. No Docker engine or cluster runs here, so what needs
one is checked by reading the file and running the pieces it names."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from harness import REPO_ROOT, connect_ws, free_port, recv_message, run, sidecar_bin, wait_until
from ops_util import (Nginx, apt_packages, dockerfile_stages, get_json, http_on, seconds_of,
                     systemd_unit)

DEPLOY = REPO_ROOT / "deploy"
SEED_001_TYPES = ["SYNC_PROCESSING", "SYNC_SUCCESS", "SYNC_CONFLICT", "SYNC_FAILED"]
# Libraries every Debian base image already has; the runtime stage need not install them.
BASE_IMAGE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}


def check_config(path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    full_env.update(env or {})
    return subprocess.run([sidecar_bin(), "--check-config", str(path)], capture_output=True,
                          text=True, timeout=30, env=full_env)


def accepted_flags() -> set[str]:
    """The flags the binary documents in --help (and therefore parses)."""
    out = subprocess.run([sidecar_bin(), "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    return set(re.findall(r"--[a-z][a-z-]*", out.stdout))


def check_command_line(args: list[str], files: dict[str, Path], env: dict | None = None):
    """Checks a sidecar command line as a deploy file writes it (without the program name): every
    flag is one the binary accepts, and the config it names (mapped from the container or host
    path to the repository file that ends up there) passes --check-config."""
    flags = accepted_flags()
    assert args, "empty command line"
    for a in args:
        if a.startswith("-"):
            assert a in flags, f"{a} is not a flag the binary accepts ({sorted(flags)})"
    assert "--config" in args, args
    target = args[args.index("--config") + 1]
    assert target in files, f"{target} is not provided by this deploy file ({files})"
    r = check_config(files[target], env)
    assert r.returncode == 0, f"{args} -> {files[target]}:\n{r.stdout}{r.stderr}"


def live_config(path_or_text, redis_url: str, admin: bool = True) -> str:
    """A deploy config adapted to run here: listen on the test port, the test Redis, and the
    admin listener (if any) on another free loopback port. Everything else stays as shipped."""
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    doc = yaml.safe_load(text) or {}
    doc["listen"] = "127.0.0.1:@PORT@"
    doc.setdefault("redis", {})["url"] = "@REDIS_URL@"
    if "admin" in doc and doc["admin"].get("listen"):
        if admin:
            doc["admin"]["listen"] = f"127.0.0.1:{free_port()}"
        else:
            del doc["admin"]["listen"]
    return json.dumps(doc, indent=2) + "\n"


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def k8s_docs() -> list[dict]:
    docs = []
    for p in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return docs


def k8s_kind(kind: str) -> list[dict]:
    return [d for d in k8s_docs() if d.get("kind") == kind]


def sidecar_container(deployment: dict) -> dict:
    [c] = [c for c in deployment["spec"]["template"]["spec"]["containers"]
           if c["name"] == "sidecar"]
    return c


def configmap_sidecar_yaml() -> str:
    [cm] = [d for d in k8s_kind("ConfigMap") if d["metadata"]["name"] == "sidecar-config"]
    return cm["data"]["sidecar.yaml"]


# ----------------------------------------------------------------------------- configs and YAML


def test_deploy_tree_has_every_promised_file():
    for rel in ("Dockerfile", "docker-compose.yml", "nginx/sidecar.conf",
                "systemd/sidecar.service", "kubernetes/deployment.yaml",
                "kubernetes/service.yaml", "kubernetes/ingress.yaml",
                "kubernetes/configmap.yaml", "publisher/sync_events.sh", "healthcheck.sh"):
        assert (DEPLOY / rel).is_file(), rel
    assert list((DEPLOY / "config").glob("*.yaml"))


def test_every_yaml_file_parses():
    files = yaml_files()
    assert len(files) >= 8, files
    for p in files:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        assert docs, f"{p} holds no YAML document"
        for d in docs:
            assert isinstance(d, dict), f"{p}: top level must be a mapping, got {type(d)}"


@pytest.mark.parametrize("path", sorted((DEPLOY / "config").glob("*.yaml")) +
                         [REPO_ROOT / "config" / "sidecar.yaml"],
                         ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_shipped_config_passes_check_config(path):
    r = check_config(path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_config_would_catch_a_broken_deploy_config(tmp_path):
    # The checks above can fail: the same file with one bad key is refused.
    text = (DEPLOY / "config" / "kubernetes.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("heartbeat_ms: 25000", "heartbeat_ms: 25s"))
    assert bad.read_text() != text
    r = check_config(bad)
    assert r.returncode == 1
    assert "websocket.heartbeat_ms" in r.stderr


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_on_bookworm_slim_and_runs_as_non_root():
    stages = dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    assert len(stages) >= 2
    assert all(s["from"] == "debian:bookworm-slim" for s in stages), [s["from"] for s in stages]
    runtime = stages[-1]
    users = [rest for word, rest in runtime["instructions"] if word == "USER"]
    assert users, "runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    # The runtime stage copies the binary from the build stage, not from the build context.
    copies = [rest for word, rest in runtime["instructions"] if word == "COPY"]
    assert any(c.startswith(f"--from={stages[0]['name']}") and "sidecar" in c for c in copies)
    # No compiler in the runtime stage.
    runtime_pkgs = [p for w, r in runtime["instructions"] if w == "RUN" for p in apt_packages(r)]
    assert not [p for p in runtime_pkgs if p.endswith("-dev") or p == "build-essential"]


def test_dockerfile_build_stage_uses_the_bootstrap_packages():
    stages = dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    build_pkgs = [p for w, r in stages[0]["instructions"] if w == "RUN" for p in apt_packages(r)]
    assert build_pkgs
    bootstrap = (REPO_ROOT / "scripts" / "bootstrap.sh").read_text()
    listed = set(re.search(r"packages=\((.*?)\)", bootstrap, re.S).group(1).split())
    assert set(build_pkgs) <= listed, set(build_pkgs) - listed


def test_dockerfile_runtime_packages_cover_every_linked_library():
    ldd = subprocess.run(["ldd", sidecar_bin()], capture_output=True, text=True, timeout=30)
    assert ldd.returncode == 0, ldd.stderr
    needed = set()
    for lib in re.findall(r"=>\s+(/\S+)", ldd.stdout):
        if re.search(r"lib(a|ub|t|l)san", lib):
            continue  # a sanitizer build's runtime, never in a release image
        real = os.path.realpath(lib)
        for candidate in (real, "/usr" + lib, lib):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                needed.add(r.stdout.split(":")[0])
                break
        else:
            pytest.fail(f"no Debian package owns {lib}")
    stages = dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    runtime_pkgs = {p for w, r in stages[-1]["instructions"] if w == "RUN"
                    for p in apt_packages(r)}
    missing = needed - BASE_IMAGE_PACKAGES - runtime_pkgs
    assert not missing, f"runtime stage lacks {sorted(missing)} (ldd: {sorted(needed)})"


def _dockerignore_allows(patterns: list[str], path: str) -> bool:
    allowed = True
    for pat in patterns:
        negate = pat.startswith("!")
        p = pat[1:] if negate else pat
        p = p.rstrip("/")
        if p == "*" or path == p or path.startswith(p + "/"):
            allowed = negate
    return allowed


def test_dockerfile_copies_only_files_that_exist_and_pass_the_dockerignore():
    stages = dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    ignore = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text()
              .splitlines() if line.strip() and not line.startswith("#")]
    sources = []
    for s in stages:
        for word, rest in s["instructions"]:
            if word == "COPY" and not rest.startswith("--from"):
                sources += rest.split()[:-1]
    assert sources
    for src in sources:
        assert (REPO_ROOT / src).exists(), src
        assert _dockerignore_allows(ignore, src.rstrip("/")), f"{src} is excluded from the context"
    assert not _dockerignore_allows(ignore, "build-ops/sidecar")


def _docker_files() -> dict[str, Path]:
    """Container path -> repository file, from the runtime stage's COPY lines."""
    stages = dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    files = {}
    for word, rest in stages[-1]["instructions"]:
        if word == "COPY" and not rest.startswith("--from"):
            src, dst = rest.split()[-2:]
            files[dst] = REPO_ROOT / src
    return files


def test_dockerfile_entrypoint_and_cmd_are_a_command_the_binary_accepts():
    runtime = dockerfile_stages((DEPLOY / "Dockerfile").read_text())[-1]
    entry = [json.loads(r) for w, r in runtime["instructions"] if w == "ENTRYPOINT"][-1]
    cmd = [json.loads(r) for w, r in runtime["instructions"] if w == "CMD"][-1]
    copied_to = [rest.split()[-1] for w, rest in runtime["instructions"] if w == "COPY"]
    assert entry[0] in copied_to, f"{entry[0]} is not where the binary is copied"
    check_command_line(entry[1:] + cmd, _docker_files())


def test_dockerfile_healthcheck_tells_healthy_from_unhealthy(sidecar):
    runtime = dockerfile_stages((DEPLOY / "Dockerfile").read_text())[-1]
    [hc] = [r for w, r in runtime["instructions"] if w == "HEALTHCHECK"]
    argv = json.loads(hc[hc.index("CMD") + 3:].strip())
    script = _docker_files()[argv[0]]
    config = yaml.safe_load((DEPLOY / "config" / "docker.yaml").read_text())
    assert argv[1] == config["listen"].rsplit(":", 1)[1], "health check port != listen port"
    assert argv[2] == "/health"

    def probe(port, path="/health"):
        return subprocess.run(["bash", str(script), str(port), path], capture_output=True,
                              timeout=10).returncode

    assert probe(sidecar.port) == 0
    assert probe(sidecar.port, "/no-such-endpoint") != 0
    assert probe(free_port()) != 0
    # Unhealthy as well while Redis is down? No: /health is liveness and stays 200 by design.


# ----------------------------------------------------------------------------- docker compose


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_runs_redis_sidecar_and_a_publisher():
    services = compose()["services"]
    assert {"redis", "sidecar", "publisher"} <= set(services)
    sc = services["sidecar"]
    context = (DEPLOY / sc["build"]["context"]).resolve()
    assert context == REPO_ROOT.resolve()
    assert (context / sc["build"]["dockerfile"]).is_file()
    assert sc["depends_on"]["redis"]["condition"] == "service_healthy"


def _compose_volumes(service: dict) -> dict[str, Path]:
    out = {}
    for v in service.get("volumes", []):
        src, dst = v.split(":")[:2]
        out[dst] = (DEPLOY / src).resolve()
    return out


def test_compose_sidecar_command_and_mounted_config_are_accepted():
    sc = compose()["services"]["sidecar"]
    files = {**_docker_files(), **_compose_volumes(sc)}
    env = {k: str(v) for k, v in sc.get("environment", {}).items()}
    check_command_line(sc["command"], files, env)
    # The published port is the one the mounted config listens on.
    config = yaml.safe_load(files["/etc/sidecar/sidecar.yaml"].read_text())
    listen_port = config["listen"].rsplit(":", 1)[1]
    assert any(p.split(":")[-1] == listen_port for p in sc["ports"]), sc["ports"]
    # docker stop must not kill the sidecar before its drain ends.
    drain_s = config.get("shutdown", {}).get("drain_timeout_ms", 10000) / 1000
    assert seconds_of(sc["stop_grace_period"]) > drain_s


def test_compose_publisher_script_is_mounted_where_its_command_runs_it():
    pub = compose()["services"]["publisher"]
    mounts = _compose_volumes(pub)
    cmd = pub["command"]
    script = cmd[-1]
    mount_dir = os.path.dirname(script)
    assert mount_dir in mounts, (script, mounts)
    assert (mounts[mount_dir] / os.path.basename(script)).is_file()
    assert pub["environment"]["REDIS_HOST"] == "redis"


def test_demo_publisher_delivers_seed_001_events_through_the_sidecar(redis, sidecar):
    script = DEPLOY / "publisher" / "sync_events.sh"

    async def main():
        c = await connect_ws(sidecar.ws_url("/ws/org-rio"))
        wait_until(lambda: redis.numsub("org:org-rio") >= 1, 10, "a subscriber on org:org-rio")
        env = {**os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port),
               "ORG": "org-rio", "ROUNDS": "2", "INTERVAL": "0"}
        r = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        got = [json.loads(await recv_message(c)) for _ in range(8)]
        await c.close()
        return got

    got = run(main())
    assert [e["type"] for e in got] == SEED_001_TYPES * 2
    assert [e["pfaId"] for e in got] == ["pfa-1"] * 4 + ["pfa-2"] * 4
    assert all(e["organizationId"] == "org-rio" for e in got)
    assert got[2]["details"]["conflictingFields"] == ["forecastStart"]


def test_demo_script_shows_the_whole_loop_and_stops_by_itself():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update({"SIDECAR_BIN": sidecar_bin(), "ROUNDS": "2", "INTERVAL": "0",
                "DEMO_TIMEOUT": "20"})
    r = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "demo.sh")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    received = re.findall(r"^client: event \d+/8: (\S+)\s+(\S+)", r.stdout, re.M)
    assert received == [(t, f"pfa-{i}") for i in (1, 2) for t in SEED_001_TYPES], r.stdout
    assert "sidecar_redis_messages_total 8" in r.stdout
    assert "exit code 0" in r.stdout


# ----------------------------------------------------------------------------- Kubernetes


def test_kubernetes_configmap_embeds_deploy_config_verbatim():
    assert configmap_sidecar_yaml() == (DEPLOY / "config" / "kubernetes.yaml").read_text()


def kustomize_by_parsing() -> list[dict]:
    """What ``kubectl kustomize deploy/kubernetes`` would output, by reading the kustomization:
    every document of every resource it lists, in order. It uses no other kustomize feature
    (the check below fails if one is added, since this reading would then be wrong)."""
    kdir = DEPLOY / "kubernetes"
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization", k
    assert set(k) <= {"apiVersion", "kind", "resources"}, \
        f"kustomization uses {sorted(set(k) - {'apiVersion', 'kind', 'resources'})}; teach " \
        "kustomize_by_parsing() what they do"
    docs = []
    for rel in k["resources"]:
        path = kdir / rel
        assert path.is_file(), f"kustomization names {rel}, which does not exist"
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_kustomization_lists_every_manifest():
    k = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    manifests = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(k["resources"]) == sorted(manifests)
    kinds = [d["kind"] for d in kustomize_by_parsing()]
    assert sorted(kinds) == ["ConfigMap", "Deployment", "Ingress", "Service"], kinds


def test_kubernetes_kustomization_renders_with_kubectl_as_parsed():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (not a Debian package): the kustomization is "
                    "checked by parsing only (test_kubernetes_resources_reference_each_other)")
    r = subprocess.run([kubectl, "kustomize", str(DEPLOY / "kubernetes")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rendered = [d for d in yaml.safe_load_all(r.stdout) if d]
    key = lambda d: (d["kind"], d["metadata"]["name"])
    assert sorted(map(key, rendered)) == sorted(map(key, kustomize_by_parsing()))


def test_kubernetes_resources_reference_each_other():
    """The rendered set is consistent: each name one resource uses is one another defines."""
    docs = kustomize_by_parsing()
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(set(names)) == len(names), f"duplicate resources {names}"
    by_kind = lambda kind: {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}
    configmaps, services = by_kind("ConfigMap"), by_kind("Service")
    [dep] = by_kind("Deployment").values()
    template = dep["spec"]["template"]
    labels = template["metadata"]["labels"]
    pod = template["spec"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= labels.items(), (selector, labels)
    # Volumes: each configMap one exists, each mount names a volume.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for v in volumes.values():
        if "configMap" in v:
            assert v["configMap"]["name"] in configmaps, (v, sorted(configmaps))
    ports_by_name, port_numbers = {}, set()
    for c in pod["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, (c["name"], m)
        for p in c.get("ports", []):
            ports_by_name[p["name"]] = p["containerPort"]
            port_numbers.add(p["containerPort"])
    # Services select this pod and target its ports.
    assert services
    for name, svc in services.items():
        sel = svc["spec"]["selector"]
        assert sel and sel.items() <= labels.items(), f"Service {name} selects {sel}, pod {labels}"
        for p in svc["spec"]["ports"]:
            t = p["targetPort"]
            assert t in ports_by_name or t in port_numbers, f"Service {name} targets {t}"
    # The Ingress routes to a Service port that exists.
    for ing in by_kind("Ingress").values():
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, backend
                svc_ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in svc_ports, backend
    # The sidecar's ports are the ones its ConfigMap's config listens on; its probes use a port
    # the container has and a path the sidecar serves on that port.
    sc = sidecar_container(dep)
    config = yaml.safe_load(configmaps["sidecar-config"]["data"]["sidecar.yaml"])
    sc_ports = {p["name"]: p["containerPort"] for p in sc["ports"]}
    assert sc_ports["ws"] == int(config["listen"].rsplit(":", 1)[1])
    admin_port = int(config["admin"]["listen"].rsplit(":", 1)[1])
    assert sc_ports["admin"] == admin_port
    main_paths = {"/health", "/ready", "/ws/config"}  # what the main port serves with admin.listen
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in sc:
            get = sc[probe]["httpGet"]
            port = sc_ports.get(get["port"], get["port"])
            assert port in sc_ports.values(), (probe, get)
            assert port == admin_port or get["path"] in main_paths, (probe, get)
    # Prometheus scrapes the admin port, where /metrics is.
    ann = template["metadata"].get("annotations", {})
    if "prometheus.io/port" in ann:
        assert int(ann["prometheus.io/port"]) == admin_port, ann
        assert ann.get("prometheus.io/path", "/metrics") == "/metrics", ann


def test_kubernetes_pod_runs_app_and_sidecar_with_requests_and_a_valid_command(tmp_path):
    [dep] = k8s_kind("Deployment")
    pod = dep["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert "sidecar" in names and len(names) >= 2, names
    for c in pod["containers"]:
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], c["name"]
    sc = sidecar_container(dep)
    [mount] = [m for m in sc["volumeMounts"]
               if any(v["name"] == m["name"] and v["configMap"]["name"] == "sidecar-config"
                      for v in pod["volumes"] if "configMap" in v)]
    cfg = tmp_path / "sidecar.yaml"
    cfg.write_text(configmap_sidecar_yaml())
    check_command_line(sc.get("command", [])[1:] + sc["args"],
                       {f"{mount['mountPath']}/sidecar.yaml": cfg})


def test_kubernetes_grace_period_covers_prestop_and_drain():
    [dep] = k8s_kind("Deployment")
    pod = dep["spec"]["template"]["spec"]
    sc = sidecar_container(dep)
    pre = sc["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "sleep"
    pause_s = float(pre[1])
    config = yaml.safe_load(configmap_sidecar_yaml())
    drain_s = config["shutdown"]["drain_timeout_ms"] / 1000
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= pause_s + drain_s + 2, (grace, pause_s, drain_s)
    # ...and not wildly above it, or a stuck rollout waits for nothing.
    assert grace <= pause_s + drain_s + 30


def test_kubernetes_ports_match_the_config(tmp_path):
    [dep] = k8s_kind("Deployment")
    sc = sidecar_container(dep)
    ports = {p["name"]: p["containerPort"] for p in sc["ports"]}
    config = yaml.safe_load(configmap_sidecar_yaml())
    assert ports["ws"] == int(config["listen"].rsplit(":", 1)[1])
    if config.get("admin", {}).get("listen"):
        assert ports["admin"] == int(config["admin"]["listen"].rsplit(":", 1)[1])
    for probe in ("livenessProbe", "readinessProbe"):
        assert sc[probe]["httpGet"]["port"] in ports or sc[probe]["httpGet"]["port"] in \
            ports.values()
    [svc] = k8s_kind("Service")
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in ports, p
    [ing] = k8s_kind("Ingress")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == svc["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}
    # The Ingress path reaches a sidecar route.
    route_prefixes = [r["path"].split("{org}")[0] for r in config["routes"]]
    path = ing["spec"]["rules"][0]["http"]["paths"][0]["path"]
    assert any(p.startswith(path) for p in route_prefixes), (path, route_prefixes)


def test_kubernetes_ingress_read_timeout_is_above_the_heartbeat():
    [ing] = k8s_kind("Ingress")
    ann = ing["metadata"]["annotations"]
    config = yaml.safe_load(configmap_sidecar_yaml())
    heartbeat_s = config.get("websocket", {}).get("heartbeat_ms", 25000) / 1000
    for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout",
                "nginx.ingress.kubernetes.io/proxy-send-timeout"):
        assert float(ann[key]) > 2 * heartbeat_s, key


def test_probe_paths_answer_200_on_a_live_sidecar_with_the_shipped_config(redis,
                                                                           sidecar_factory):
    """Every probe path the deploy files name, GET on a sidecar running the Kubernetes config
    (addresses moved to test ports), answers 200 on the port the probe uses."""
    [dep] = k8s_kind("Deployment")
    sc_spec = sidecar_container(dep)
    paths = [sc_spec[p]["httpGet"]["path"]
             for p in ("livenessProbe", "readinessProbe", "startupProbe") if p in sc_spec]
    stages = dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    [hc] = [r for w, r in stages[-1]["instructions"] if w == "HEALTHCHECK"]
    paths.append(json.loads(hc[hc.index("CMD") + 3:].strip())[2])
    nginx_site = (DEPLOY / "nginx" / "sidecar.conf").read_text()
    paths += re.findall(r"location = (/\S+)", nginx_site)
    assert {"/health", "/ready"} <= set(paths)
    sc = sidecar_factory(config_text=live_config(configmap_sidecar_yaml(), redis.url))
    for path in sorted(set(paths)):
        status, _, _ = sc.http("GET", path)
        assert status == 200, path


# ----------------------------------------------------------------------------- systemd


def unit() -> dict:
    return systemd_unit((DEPLOY / "systemd" / "sidecar.service").read_text())


def _systemd_files() -> dict[str, Path]:
    # The unit's install comment puts deploy/config/systemd.yaml at /etc/sidecar/sidecar.yaml.
    text = (DEPLOY / "systemd" / "sidecar.service").read_text()
    m = re.search(r"install .*?(deploy/config/\S+\.yaml)\s+(/etc/\S+)", text)
    assert m, "the unit's comment does not say where the config is installed"
    return {m.group(2): REPO_ROOT / m.group(1)}


def test_systemd_exec_lines_are_commands_the_binary_accepts():
    svc = unit()["Service"]
    files = _systemd_files()
    [start] = svc["ExecStart"]
    argv = shlex.split(start)
    assert argv[0].endswith("/sidecar")
    check_command_line(argv[1:], files)
    for pre in svc.get("ExecStartPre", []):
        argv = shlex.split(pre.lstrip("-"))
        if argv[0].endswith("/sidecar"):
            args = [a if a != "--check-config" else "--config" for a in argv[1:]]
            assert "--check-config" in argv
            check_command_line(args, files)


def test_systemd_unit_is_hardened_and_stops_after_the_drain():
    svc = unit()["Service"]
    for key, want in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                      "PrivateTmp": "yes", "PrivateDevices": "yes", "DynamicUser": "yes",
                      "RestrictNamespaces": "yes", "LockPersonality": "yes"}.items():
        assert svc.get(key) == [want], key
    assert svc["CapabilityBoundingSet"] == [""]
    assert "AF_INET" in svc["RestrictAddressFamilies"][0]
    assert svc["ExecReload"][0].endswith("-HUP $MAINPID")
    config = yaml.safe_load(next(iter(_systemd_files().values())).read_text())
    drain_s = config["shutdown"]["drain_timeout_ms"] / 1000
    assert seconds_of(svc["TimeoutStopSec"][0]) > drain_s


def test_systemd_analyze_verify_finds_nothing(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd, which "
                    "scripts/bootstrap.sh installs): the unit is checked by parsing only")
    text = (DEPLOY / "systemd" / "sidecar.service").read_text()
    files = _systemd_files()
    text = text.replace("/usr/local/bin/sidecar", sidecar_bin())
    for dst, src in files.items():
        text = text.replace(dst, str(src))

    def verify(unit_text: str, name: str):
        d = tmp_path / name
        d.mkdir()
        path = d / "sidecar.service"
        path.write_text(unit_text)
        r = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True,
                           text=True, timeout=60)
        out = r.stdout + r.stderr
        return r.returncode, [line for line in out.splitlines() if "sidecar.service" in line], out

    rc, problems, out = verify(text, "shipped")
    assert rc == 0 and not problems, out
    # systemd-analyze is not a rubber stamp here: one misspelled key in the same unit is reported.
    assert "\nExecStart=" in text
    rc, problems, out = verify(text.replace("\nExecStart=", "\nExecStrat="), "broken")
    assert rc != 0 and any("ExecStrat" in line for line in problems), out


# ----------------------------------------------------------------------------- nginx


def nginx_site() -> str:
    return (DEPLOY / "nginx" / "sidecar.conf").read_text()


def test_nginx_site_passes_nginx_t():
    with tempfile.TemporaryDirectory(prefix="sidecar-nginx-") as d:
        ng = Nginx(nginx_site(), free_port(), free_port(), d)
        rc, out = ng.test_config()
        assert rc == 0, out
        # nginx -t is not a rubber stamp: a typo in the same file is refused.
        broken = Nginx(nginx_site().replace("proxy_http_version 1.1;", "proxy_http_versoin 1.1;"),
                       free_port(), free_port(), os.path.join(d, "broken"))
        assert broken.test_config()[0] != 0


def test_nginx_read_timeout_is_above_the_heartbeat():
    timeouts = [seconds_of(v) for v in re.findall(r"proxy_read_timeout\s+(\S+);", nginx_site())]
    assert timeouts
    config = yaml.safe_load((DEPLOY / "config" / "systemd.yaml").read_text())
    heartbeat_s = config.get("websocket", {}).get("heartbeat_ms", 25000) / 1000
    assert min(timeouts) > 2 * heartbeat_s
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", nginx_site())
    assert re.search(r"proxy_set_header\s+Connection\s+\$\w+;", nginx_site())
    upstream = re.search(r"upstream \w+ \{[^}]*server (\S+);", nginx_site()).group(1)
    assert upstream == config["listen"], "nginx upstream != the systemd config's listen"


def test_real_nginx_relays_a_websocket_and_its_publishes(redis, sidecar_factory):
    sc = sidecar_factory(config_text=live_config(DEPLOY / "config" / "systemd.yaml", redis.url))
    with tempfile.TemporaryDirectory(prefix="sidecar-nginx-") as d:
        ng = Nginx(nginx_site(), free_port(), sc.port, d).start()
        try:
            assert http_on(ng.port, "GET", "/health")[0] == 200
            status, _, doc = get_json(ng.port, "/ready")
            assert (status, doc["status"]) == (200, "ready")
            # The admin endpoints are not published through nginx.
            assert http_on(ng.port, "GET", "/metrics")[0] == 404

            async def main():
                c = await connect_ws(f"ws://127.0.0.1:{ng.port}/ws/org-rio")
                assert c.welcome["type"] == "connected" and c.welcome["org"] == "org-rio"
                wait_until(lambda: redis.numsub("org:org-rio") >= 1, 10, "a subscriber")
                payloads = [json.dumps({"type": t, "pfaId": "pfa-9"}) for t in SEED_001_TYPES]
                for p in payloads:
                    redis.publish("org:org-rio", p)
                got = [await recv_message(c) for _ in payloads]
                assert got == payloads
                # Ping/pong through the proxy too: the client's own messages reach the sidecar.
                await c.send('{"type":"ping"}')
                assert json.loads(await recv_message(c))["type"] == "pong"
                await c.close()

            run(main())
        finally:
            ng.stop()
