"""The Origin allowlist at the handshake: exact origins, "*." subdomain patterns and wildcard
ports admit what they name (101, then delivery), and the usual abuses (look-alike suffixes and
prefixes, other schemes and ports, trailing dots, paths, userinfo, "null") get 403 with a JSON body
and no Redis SUBSCRIBE for the org they asked for."""

from __future__ import annotations

import itertools
import time

import jwt
import pytest

from security_util import accepted, close_all, refused

ALLOWED = ["https://app.example.com", "https://*.example.com", "http://localhost:*"]
GOOD_ORIGIN = {"Origin": "https://app.example.com"}

# (Origin header, admitted?)
TABLE = [
    ("https://app.example.com", True),
    ("https://app.example.com:443", True),    # explicit default port is the same origin
    ("HTTPS://APP.EXAMPLE.COM", True),        # scheme and host compare case-insensitively
    ("https://App.Example.Com", True),
    ("https://a.example.com", True),          # one label under the wildcard
    ("https://a.b.example.com", True),        # several labels under the wildcard
    ("http://localhost:3000", True),          # any port
    ("http://localhost:8080", True),
    ("https://example.com", False),           # the wildcard needs at least one label
    ("https://example.com.evil.io", False),   # allowed name as a prefix of another domain
    ("https://app.example.com.evil.io", False),
    ("https://evilexample.com", False),       # allowed name as a suffix without a dot
    ("https://a.evilexample.com", False),
    ("http://app.example.com", False),        # other scheme
    ("wss://app.example.com", False),
    ("https://app.example.com:8443", False),  # other port
    ("https://app.example.com.", False),      # trailing dot
    ("https://a.example.com.", False),
    ("https://app.example.com/", False),      # a path is not an origin
    ("https://evil.io@app.example.com", False),  # userinfo
    ("https://app.example.com@evil.io", False),
    ("https://localhost:3000", False),        # localhost only over http
    ("http://localhost.evil.io:3000", False),
    ("http://127.0.0.1:3000", False),
    ("null", False),                          # sandboxed iframes and file: pages
    ("", False),
    ("https://*.example.com", False),         # a pattern is not an origin
]

_orgs = itertools.count(1)


def origin_sidecar(sidecar_factory, allowed=ALLOWED, allow_missing=None):
    origins = {"allowed": allowed} if allow_missing is not None else allowed
    if allow_missing is not None:
        origins["allow_missing"] = allow_missing
    return sidecar_factory(extra_yaml={"origins": origins})


@pytest.fixture
def origin_sc(sidecar_factory):
    return origin_sidecar(sidecar_factory)


@pytest.mark.parametrize("origin,admitted", TABLE, ids=[o or "<empty>" for o, _ in TABLE])
def test_origin_table(origin_sc, redis, origin, admitted):
    org = f"org{next(_orgs)}"
    if admitted:
        close_all(accepted(origin_sc, redis, f"/ws/{org}", {"Origin": origin}))
    else:
        refused(origin_sc, redis, f"/ws/{org}", {"Origin": origin}, 403, "ORIGIN_NOT_ALLOWED",
                sentinel_headers=lambda o: GOOD_ORIGIN)


def test_missing_origin_allowed_by_default(origin_sc, redis):
    close_all(accepted(origin_sc, redis, "/ws/acme", None))


def test_missing_origin_refused_when_allow_missing_false(sidecar_factory, redis):
    sc = origin_sidecar(sidecar_factory, allow_missing=False)
    refused(sc, redis, "/ws/acme", None, 403, "ORIGIN_NOT_ALLOWED",
            sentinel_headers=lambda o: GOOD_ORIGIN)
    close_all(accepted(sc, redis, "/ws/acme", GOOD_ORIGIN))


def test_empty_allowlist_admits_any_origin(sidecar_factory, redis):
    sc = sidecar_factory(extra_yaml={"origins": []})
    conns = [accepted(sc, redis, f"/ws/any{i}", {"Origin": o})
             for i, o in enumerate(["https://evil.io", "null", "http://localhost:1"])]
    close_all(*conns)


def test_star_admits_any_origin_but_allow_missing_still_applies(sidecar_factory, redis):
    sc = origin_sidecar(sidecar_factory, allowed=["*"], allow_missing=False)
    close_all(accepted(sc, redis, "/ws/acme", {"Origin": "https://anything.example.org"}))
    refused(sc, redis, "/ws/beta", None, 403, "ORIGIN_NOT_ALLOWED",
            sentinel_headers=lambda o: {"Origin": "https://x.y"})


def test_exact_origin_does_not_admit_its_subdomains(sidecar_factory, redis):
    sc = origin_sidecar(sidecar_factory, allowed=["https://example.com"])
    close_all(accepted(sc, redis, "/ws/acme", {"Origin": "https://example.com"}))
    refused(sc, redis, "/ws/beta", {"Origin": "https://www.example.com"}, 403,
            "ORIGIN_NOT_ALLOWED", sentinel_headers=lambda o: {"Origin": "https://example.com"})


def test_origin_check_runs_before_the_token(sidecar_factory, redis):
    """A page from a foreign origin learns nothing about tokens: the same 403 ORIGIN_NOT_ALLOWED
    whether it sends no token, a bad one or a good one."""
    sc = sidecar_factory(extra_yaml={"origins": ALLOWED, "auth": {"mode": "jwt",
                                                                  "jwt": {"secret": "s" * 32}}})
    token = lambda o: jwt.encode({"org": o, "sub": "u", "exp": int(time.time()) + 60}, "s" * 32)
    ok = lambda o: {"Origin": "https://app.example.com", "Authorization": "Bearer " + token(o)}
    evil = "https://evil.io"
    for headers in ({"Origin": evil}, {"Origin": evil, "Authorization": "Bearer x.y.z"},
                    {"Origin": evil, "Authorization": "Bearer " + token("acme")}):
        refused(sc, redis, "/ws/acme", headers, 403, "ORIGIN_NOT_ALLOWED", sentinel_headers=ok)
    close_all(accepted(sc, redis, "/ws/acme", ok("acme")))
