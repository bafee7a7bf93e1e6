"""Helpers for the security integration tests (auth, origins, limits, inbound).

Keys are made by the openssl CLI and tokens are minted by PyJWT (Debian's python3-jwt), so the
sidecar's verifier is checked against tools we did not write. A handful of deliberately broken
tokens (alg confusion, bad base64, bad JSON) are assembled by hand with the standard library,
because PyJWT refuses to produce them.

Handshakes go over raw sockets so that every refusal can be checked as what it is: an HTTP status
with a JSON body, and no Redis SUBSCRIBE at all. "No SUBSCRIBE" is seen in Redis's own command
stream: a MONITOR connection opened before the request records every SUBSCRIBE Redis executes, and
after the refusal a sentinel connection that must be accepted joins a fresh org. The refused
request's SUBSCRIBE, if any, went out earlier on the same Redis link as the sentinel's, so once
MONITOR shows the sentinel's SUBSCRIBE, everything before it has been seen. Looking for the refused
org in PUBSUB CHANNELS afterwards (as this check once did) misses a SUBSCRIBE that an UNSUBSCRIBE
undid a moment later; counting SUBSCRIBE calls in INFO commandstats cannot tell them from the
shared broadcast channel's, which every session joins and the last one leaving unsubscribes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from harness import HOST, RawWs, RespConn, read_http_head, upgrade_request, wait_until

_sentinel_ids = itertools.count(1)


# ----------------------------------------------------------------------------- keys and tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args: str, cwd: str | None = None) -> bytes:
    return subprocess.run(["openssl", *args], capture_output=True, check=True, timeout=60,
                          cwd=cwd).stdout


@dataclass
class KeyPair:
    private_pem: bytes
    public_pem: bytes
    public_path: str


class Keys:
    """Two key pairs each of RSA 2048, EC P-256 and EC P-384, made by the openssl CLI."""

    SPECS = {
        "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "rsa2": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "ec256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ec384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "ec256b": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ec384b": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    }

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sidecar-keys-")
        self.pairs: dict[str, KeyPair] = {}
        for name, spec in self.SPECS.items():
            priv = os.path.join(self.dir, f"{name}.key")
            pub = os.path.join(self.dir, f"{name}.pub.pem")
            openssl("genpkey", *spec, "-out", priv)
            openssl("pkey", "-in", priv, "-pubout", "-out", pub)
            self.pairs[name] = KeyPair(Path(priv).read_bytes(), Path(pub).read_bytes(), pub)

    def __getitem__(self, name: str) -> KeyPair:
        return self.pairs[name]

    def jwks(self, kids: dict[str, str]) -> dict:
        """A JWK Set holding the public keys named by ``kids`` ({kid: key name}), made by PyJWT."""
        out = []
        for kid, name in kids.items():
            key = load_pem_public_key(self.pairs[name].public_pem)
            conv = RSAAlgorithm if name.startswith("rsa") else ECAlgorithm
            jwk = json.loads(conv.to_jwk(key))
            jwk["kid"] = kid
            out.append(jwk)
        return {"keys": out}

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def claims(org="acme", sub="alice", ttl: int | None = 300, **extra) -> dict:
    """A usual claim set: org, sub, iat now and exp ``ttl`` seconds ahead (None: no exp)."""
    now = int(time.time())
    c = {"org": org, "sub": sub, "iat": now}
    if ttl is not None:
        c["exp"] = now + ttl
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def mint(payload: dict, key, alg: str = "HS256", headers: dict | None = None) -> str:
    """Signs with PyJWT; ``key`` is a secret (str/bytes) or a private key PEM."""
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def hand_token(header, payload, key: bytes | None = None, sig: bytes | str | None = None) -> str:
    """Assembles a compact JWS by hand. ``header``/``payload`` are dicts (JSON-encoded) or raw
    str segments used verbatim. With ``key`` the signature is HMAC-SHA256 over the signing input
    (for alg-confusion tokens that PyJWT refuses to mint); else ``sig`` (raw bytes or a segment)."""
    h = header if isinstance(header, str) else b64url(json.dumps(header).encode())
    p = payload if isinstance(payload, str) else b64url(json.dumps(payload).encode())
    signing_input = f"{h}.{p}".encode()
    if key is not None:
        s = b64url(hmac.new(key, signing_input, hashlib.sha256).digest())
    elif isinstance(sig, bytes):
        s = b64url(sig)
    else:
        s = sig or ""
    return f"{h}.{p}.{s}"


# ----------------------------------------------------------------------------- raw handshakes


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes
    ws: RawWs | None = None

    def json(self) -> dict:
        return json.loads(self.body)


def handshake(port: int, path: str = "/ws/acme", headers: dict | None = None,
              src_ip: str | None = None, timeout: float = 5.0) -> Answer:
    """Sends one upgrade request. On 101 the answer carries an open RawWs (welcome unread);
    otherwise the whole HTTP body is read and the socket closed."""
    sock = socket.create_connection((HOST, port), timeout=timeout,
                                    source_address=(src_ip, 0) if src_ip else None)
    try:
        sock.sendall(upgrade_request(path, extra=headers))
        status, head, rest = read_http_head(sock, timeout)
    except BaseException:
        sock.close()
        raise
    if status == 101:
        ws = RawWs(sock, rest)
        ws.status, ws.headers = status, head
        return Answer(status, head, b"", ws)
    body = rest
    n = int(head.get("content-length", "0"))
    deadline = time.monotonic() + timeout
    while len(body) < n and time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    sock.close()
    return Answer(status, head, body[:n])


def check_refusal(ans: Answer, status: int, code: str | None = None):
    """The answer is ``status`` with a JSON body {"error": CODE, "message": ...}."""
    if ans.ws is not None:
        ans.ws.close()
    assert ans.status == status, f"expected {status}, got {ans.status} {ans.headers} {ans.body!r}"
    assert ans.headers.get("content-type", "").startswith("application/json"), ans.headers
    body = ans.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str), body
    if code is not None:
        assert body["error"] == code, body
    return body


def wait_channel(redis, channel: str, present: bool = True, timeout: float = 10.0):
    """Waits until ``channel`` has (or no longer has) a subscriber."""
    wait_until(lambda: (redis.numsub(channel) >= 1) == present, timeout,
               f"{channel} to be {'subscribed' if present else 'unsubscribed'}")


class SubscribeWatch:
    """Every SUBSCRIBE-family command Redis executes from now on, seen through MONITOR."""

    KINDS = (b"SUBSCRIBE", b"SSUBSCRIBE", b"PSUBSCRIBE")

    def __init__(self, redis):
        self.conn = RespConn(redis.port)
        assert self.conn.command("MONITOR") == b"OK"
        self.seen: list[list[str]] = []

    def until(self, channel: str, timeout: float = 10.0) -> list[list[str]]:
        """Reads the stream until a SUBSCRIBE naming ``channel``; returns the SUBSCRIBE commands
        before that one, each as [command, channel...]."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"MONITOR showed no SUBSCRIBE {channel} within {timeout}s; "
                                   f"saw {self.seen}")
            self.conn.sock.settimeout(remaining)
            line = self.conn.read_reply()  # 1700000000.123456 [0 127.0.0.1:5555] "SUBSCRIBE" "c"
            args = [a.decode("unicode_escape") for a in _MONITOR_ARG.findall(line)]
            if not args or args[0].upper().encode() not in self.KINDS:
                continue
            if channel in args[1:]:
                return self.seen
            self.seen.append(args)

    def close(self):
        self.conn.close()


_MONITOR_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def assert_not_subscribed(redis, port: int, orgs, sentinel_headers, sentinel_path="/ws/{org}",
                          src_ip: str | None = None, watch: SubscribeWatch | None = None):
    """Proves that the refused request(s) before this call subscribed no channel of ``orgs``,
    using an accepted sentinel connection (see the module docstring). ``watch``, opened before
    the refused request, sees every SUBSCRIBE; without it only the weaker check runs (no channel
    of ``orgs`` is subscribed now). ``sentinel_headers(org)`` gives headers that must be
    admitted."""
    org = f"sentinel{next(_sentinel_ids)}"
    ans = handshake(port, sentinel_path.format(org=org), sentinel_headers(org), src_ip=src_ip)
    assert ans.status == 101, f"sentinel refused: {ans.status} {ans.body!r}"
    orgs = [orgs] if isinstance(orgs, str) else list(orgs)
    ours = lambda c: any(c == f"org:{o}" or c.startswith(f"org:{o}:") for o in orgs)
    try:
        if watch is not None:
            before = watch.until(f"org:{org}")
            leaked = [cmd for cmd in before if any(ours(c) for c in cmd[1:])]
            assert not leaked, f"the refused request caused {leaked} (all SUBSCRIBEs: {before})"
        wait_channel(redis, f"org:{org}")
        leaked = {c for c in redis.pubsub_channels() if ours(c)}
        assert not leaked, f"refused request still subscribed {leaked}"
    finally:
        ans.ws.close()


def refused(sc, redis, path: str, headers: dict | None, status: int, code: str | None = None,
            sentinel_headers=lambda org: {}, src_ip: str | None = None) -> dict:
    """One refused handshake: status, JSON body (and its ``error`` code when ``code`` is given),
    and no SUBSCRIBE for the path's org, seen by MONITOR (see the module docstring)."""
    org = path.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    watch = SubscribeWatch(redis)
    try:
        body = check_refusal(handshake(sc.port, path, headers, src_ip=src_ip), status, code)
        assert_not_subscribed(redis, sc.port, org, sentinel_headers, watch=watch)
    finally:
        watch.close()
    return body


_payload_ids = itertools.count(1)


def assert_delivery(redis, ws: RawWs, channel: str = "org:acme", timeout: float = 5.0):
    """PUBLISHes a unique payload to ``channel`` and checks ``ws`` receives it byte for byte."""
    wait_channel(redis, channel)
    payload = json.dumps({"type": "probe", "n": next(_payload_ids), "channel": channel})
    redis.publish(channel, payload)
    deadline = time.monotonic() + timeout
    while True:
        f = ws.recv_message(max(deadline - time.monotonic(), 0.001))
        assert f is not None and f.opcode != 0x8, f"connection ended before {payload} arrived"
        if f.payload == payload.encode():
            return


def accepted(sc, redis, path: str = "/ws/acme", headers: dict | None = None,
             channel: str | None = None, src_ip: str | None = None) -> RawWs:
    """One admitted handshake: 101, a welcome for the path's org, and delivery on its channel.
    Returns the open RawWs with ``welcome`` set."""
    org = path.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    ans = handshake(sc.port, path, headers, src_ip=src_ip)
    assert ans.status == 101, f"expected 101, got {ans.status} {ans.body!r}"
    ws = ans.ws
    ws.welcome = ws.recv_json()
    assert ws.welcome["type"] == "connected" and ws.welcome["org"] == org, ws.welcome
    assert_delivery(redis, ws, channel or f"org:{org}")
    return ws


def next_non_probe(ws: RawWs, timeout: float = 5.0) -> bytes:
    """The next data message that is not a probe from ``assert_delivery`` (probes published for
    one connection also reach the others in the same room)."""
    deadline = time.monotonic() + timeout
    while True:
        f = ws.recv_message(max(deadline - time.monotonic(), 0.001))
        assert f is not None and f.opcode != 0x8, "connection ended while waiting for a message"
        if not f.payload.startswith(b'{"type": "probe"'):
            return f.payload


def close_all(*conns):
    for c in conns:
        try:
            c.close()
        except OSError:
            pass


# ----------------------------------------------------------------------------- logs


@dataclass
class TokenLog:
    """Remembers every token a test sent, to check none of it reached the sidecar's log.
    ``sidecars`` are the sidecars whose logs a test fixture checks at teardown."""
    tokens: list = field(default_factory=list)
    sidecars: list = field(default_factory=list)

    def add(self, token: str) -> str:
        self.tokens.append(token)
        return token

    def assert_absent(self, log: str, must_include=()):
        """No remembered token, and no segment of one of 16+ characters (a signature, a payload),
        is in ``log``. ``must_include`` names tokens or segments that must be among those checked,
        so that a test can prove the check covers what it sent."""
        # Whole tokens first, then signatures, payloads and headers, so that a failure names the
        # most telling piece. Short pieces (a bare "e30" header) could appear by chance; 16+
        # characters cannot.
        pieces = {}
        for t in self.tokens:
            parts = t.split(".")
            for what, part in [("token", t), *zip(("header", "payload", "signature"), parts)]:
                if len(part) >= 16:
                    pieces.setdefault(part, what)
        for want in must_include:
            assert want in pieces, f"{want[:24]}... is not among the tokens checked"
        rank = {"token": 0, "signature": 1, "payload": 2, "header": 3}
        for part, what in sorted(pieces.items(), key=lambda kv: rank[kv[1]]):
            assert part not in log, f"the sidecar log contains a token's {what}: {part[:24]}..."
