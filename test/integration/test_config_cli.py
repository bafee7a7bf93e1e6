"""`sidecar --check-config FILE`: the real binary validates a config without starting anything,
exits 0 or 1, and prints every problem as "FILE:LINE: KEY: REASON" on stderr.

No Redis is needed: checking a config must never connect to anything."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO_ROOT / "config" / "sidecar.yaml"
# The binary answers at once; the bound only keeps a hung binary from hanging the suite.
TIMEOUT_S = 30


def sidecar_bin() -> str:
    path = os.environ.get("SIDECAR_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"SIDECAR_BIN must name the built sidecar binary, got {path!r}")
    return path


def check_config(path: Path, extra_env: dict[str, str] | None = None):
    # The caller's own SIDECAR_* variables must not change what the file means.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(extra_env or {})
    return subprocess.run([sidecar_bin(), "--check-config", str(path)], capture_output=True,
                          text=True, env=env, timeout=TIMEOUT_S, check=False)


def error_lines(stderr: str, path: Path) -> dict[str, tuple[int, str]]:
    """Maps each reported key to (line, reason) from the "FILE:LINE: KEY: REASON" lines."""
    found = {}
    pattern = re.compile(re.escape(str(path)) + r"(?::(\d+))?: ([^:\s]+): (.*)")
    for line in stderr.splitlines():
        m = pattern.fullmatch(line)
        if m:
            found[m.group(2)] = (int(m.group(1) or 0), m.group(3))
    return found


def test_shipped_config_is_valid():
    result = check_config(SHIPPED_CONFIG)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_typo_bad_type_and_bad_url_are_each_reported_with_key_and_line(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text(
        "listen: \"127.0.0.1:8080\"\n"           # 1
        "redis:\n"                                # 2
        "  url: \"http://127.0.0.1:6379\"\n"      # 3  not a redis URL
        "limits:\n"                               # 4
        "  max_conections: 10\n"                  # 5  typo
        "  max_message_bytes: [64KiB]\n"          # 6  a list where a size is needed
        "websocket:\n"                            # 7
        "  heartbeat_ms: soon\n"                  # 8  a word where a number is needed
    )
    result = check_config(config)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = error_lines(result.stderr, config)
    assert set(errors) == {"redis.url", "limits.max_conections", "limits.max_message_bytes",
                           "websocket.heartbeat_ms"}, result.stderr
    assert errors["redis.url"][0] == 3
    assert "redis://" in errors["redis.url"][1]
    assert errors["limits.max_conections"] == (5, 'unknown key; did you mean "max_connections"?')
    assert errors["limits.max_message_bytes"][0] == 6
    assert "byte count" in errors["limits.max_message_bytes"][1]
    assert errors["websocket.heartbeat_ms"][0] == 8
    assert "must be an integer in 100..3600000" in errors["websocket.heartbeat_ms"][1]


@pytest.mark.parametrize("pattern", [
    "https://app.example.com/",         # a path: browsers never send one
    "https://app.example.com/login",
    "https://app.example.com?tab=1",    # a query
    "https://alice@app.example.com",    # userinfo
    "app.example.com",                  # no scheme
])
def test_an_origin_pattern_that_can_never_match_fails_the_check(tmp_path, pattern):
    # Such a pattern passed --check-config before, and then every browser got 403.
    config = tmp_path / "origins.yaml"
    shipped = SHIPPED_CONFIG.read_text()
    assert "\norigins: []\n" in shipped
    config.write_text(shipped.replace("\norigins: []\n",
                                      f'\norigins:\n  - "https://ok.example"\n  - "{pattern}"\n'))
    result = check_config(config)
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr, config)
    assert set(errors) == {"origins[1]"}, result.stderr
    assert "scheme://host[:port]" in errors["origins[1]"][1]


def test_bad_compression_values_fail_the_check_with_key_and_line(tmp_path):
    config = tmp_path / "compression.yaml"
    config.write_text(
        "compression:\n"                        # 1
        "  enabled: sometimes\n"                # 2
        "  min_bytes: 32MiB\n"                  # 3  over 16 MiB
        "  level: 11\n"                         # 4
        "  client_max_window_bits: 8\n"         # 5  zlib cannot honour 8
    )
    result = check_config(config)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = error_lines(result.stderr, config)
    assert errors == {
        "compression.enabled": (2, 'must be true or false, got "sometimes"'),
        "compression.min_bytes": (3, 'must be 0..16 MiB, got "32MiB"'),
        "compression.level": (4, "must be 1..9, got 11"),
        "compression.client_max_window_bits": (5, "must be 9..15, got 8"),
    }, result.stderr
    config.write_text("compression: {enabled: false, min_bytes: 0, level: 9, "
                      "client_max_window_bits: 9}\n")
    result = check_config(config)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_bad_sidecar_redis_url_overrides_a_good_file(tmp_path):
    config = tmp_path / "ok.yaml"
    config.write_text(SHIPPED_CONFIG.read_text())
    result = check_config(config, {"SIDECAR_REDIS_URL": "rediss://127.0.0.1:6379"})
    assert result.returncode == 1
    errors = error_lines(result.stderr, config)
    assert errors.get("SIDECAR_REDIS_URL", (None, ""))[0] == 0, result.stderr
    assert "TLS is not supported" in errors["SIDECAR_REDIS_URL"][1]

    result = check_config(config, {"SIDECAR_REDIS_URL": "redis://127.0.0.1:7001/1"})
    assert result.returncode == 0, result.stderr


def test_jwt_mode_needs_a_key_unless_the_environment_gives_one(tmp_path):
    config = tmp_path / "jwt.yaml"
    config.write_text("auth:\n  mode: jwt\n")
    result = check_config(config)
    assert result.returncode == 1
    assert error_lines(result.stderr, config)["auth.jwt"][0] == 2, result.stderr

    result = check_config(config, {"SIDECAR_JWT_SECRET": "a-long-enough-test-secret"})
    assert result.returncode == 0, result.stderr


def test_missing_file_is_an_error_naming_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = check_config(missing)
    assert result.returncode == 1
    assert f"{missing}: cannot read the config file" in result.stderr


def test_control_and_connection_channel_errors_name_key_and_line(tmp_path):
    config = tmp_path / "control.yaml"
    config.write_text(
        "channels:\n"                             # 1
        "  broadcast: \"everyone\"\n"             # 2
        "  connection: \"conn:{user}\"\n"         # 3  needs {conn}
        "control:\n"                              # 4
        "  channel: \"everyone\"\n"               # 5  the broadcast channel
        "  secret_env: CTL_TEST_SECRET\n"         # 6  not set
    )
    result = check_config(config)
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr, config)
    assert set(errors) == {"channels.connection", "control.channel", "control.secret_env"}, \
        result.stderr
    assert errors["channels.connection"][0] == 3 and "{conn}" in errors["channels.connection"][1]
    assert errors["control.channel"][0] == 5 and "channels.broadcast" in errors["control.channel"][1]
    assert errors["control.secret_env"][0] == 6 and "CTL_TEST_SECRET" in \
        errors["control.secret_env"][1]
    # The same file is valid once the secret is there and the names are fixed; the secret itself
    # is never printed.
    config.write_text("control:\n  secret_env: CTL_TEST_SECRET\n")
    result = check_config(config, {"CTL_TEST_SECRET": "hunter2-control"})
    assert result.returncode == 0, result.stderr
    assert "hunter2-control" not in result.stderr + result.stdout
