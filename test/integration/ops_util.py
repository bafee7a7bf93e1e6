"""Helpers for the operations tests (endpoints, lifecycle, deploy files), on top of harness.py.

They cover what the harness leaves out because only operations tests need it: HTTP requests to a
port other than the main listener (admin.listen, an nginx in front), parsing Prometheus text and
running Debian's ``promtool`` on it, reading JSON log lines, and finding the ports a config uses.
Every wait is bounded and polls a condition; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess

from harness import HOST, read_http_response

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
