"""JWT authentication at the handshake, checked with tokens minted by PyJWT and keys made by the
openssl CLI: every algorithm and key source, the time and identity claims, the attacks (alg none,
algorithm confusion, malformed and oversized tokens), the four token sources and their order, the
org and user claims, and what happens when a token expires during a connection.

Every refusal asserts its HTTP status, the exact error code of its JSON body, and that it caused not
one SUBSCRIBE (counted by Redis); every acceptance asserts that a PUBLISH to the org reaches the
client. Every token a test mints is remembered and, after the test, checked absent (whole, and each
segment) from the log of every sidecar it made."""

from __future__ import annotations

import json
import os
import signal
import time

import jwt
import pytest

import security_util
from harness import SLOW, wait_until
from security_util import (Keys, TokenLog, accepted, assert_delivery, b64url, check_refusal,
                           claims, close_all, handshake, next_non_probe, openssl, wait_channel)

SECRET = "integration-test-secret-with-enough-bytes-0123456789"

# The error code each refusal status means at the token check; refusals with another code (BAD_ORG,
# BAD_USER, SHUTTING_DOWN) name it.
CODE_FOR_STATUS = {401: "UNAUTHORIZED", 403: "FORBIDDEN_ORG"}

# The current test's TokenLog: every token minted here is added to it, sentinels' included.
_TOKENS: TokenLog | None = None


def _remember(token: str) -> str:
    if _TOKENS is not None:
        _TOKENS.add(token)
    return token


def mint(payload: dict, key, alg: str = "HS256", headers: dict | None = None) -> str:
    return _remember(security_util.mint(payload, key, alg, headers))


def hand_token(header, payload, key: bytes | None = None, sig=None) -> str:
    return _remember(security_util.hand_token(header, payload, key=key, sig=sig))


def refused(sc, redis, path, headers, status, code=None, **kw) -> dict:
    """security_util.refused with the body's error code checked too: ``code``, else the one
    CODE_FOR_STATUS gives for ``status``."""
    return security_util.refused(sc, redis, path, headers, status,
                                 code or CODE_FOR_STATUS[status], **kw)


@pytest.fixture(scope="module")
def keys():
    k = Keys()
    yield k
    k.cleanup()


@pytest.fixture(autouse=True)
def tokens(sidecar_factory):
    """The test's TokenLog. It depends on sidecar_factory so that it is torn down first, while
    every sidecar's log still exists: then no token minted during the test may be in any of them."""
    global _TOKENS
    log = _TOKENS = TokenLog()
    yield log
    _TOKENS = None
    for sc in log.sidecars:
        log.assert_absent(sc.log())


def jwt_sidecar(sidecar_factory, jwt_cfg: dict | None = None, env: dict | None = None,
                extra: dict | None = None, **auth):
    """A sidecar with auth.mode jwt; ``jwt_cfg`` is merged into auth.jwt (default: SECRET, HS256),
    ``auth`` into auth, ``extra`` into the whole config. Its log is checked for tokens after the
    test."""
    j = {"secret": SECRET, "algorithms": ["HS256"]}
    j.update(jwt_cfg or {})
    sc = sidecar_factory(extra_yaml={"auth": {"mode": "jwt", "jwt": j, **auth}, **(extra or {})},
                         env=env)
    if _TOKENS is not None:
        _TOKENS.sidecars.append(sc)
    return sc


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def hs_sentinel(org: str) -> dict:
    return bearer(mint(claims(org=org), SECRET))


# ----------------------------------------------------------------------------- algorithms and keys


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms_accept_and_deliver(sidecar_factory, redis, tokens, alg):
    sc = jwt_sidecar(sidecar_factory, {"algorithms": [alg]})
    ws = accepted(sc, redis, "/ws/acme", bearer(tokens.add(mint(claims(), SECRET, alg))))
    assert ws.welcome["user"] == "alice"
    # A token signed with another secret is refused, and neither it nor its signature is logged.
    bad = tokens.add(mint(claims(org="other"), SECRET + "x", alg))
    refused(sc, redis, "/ws/other", bearer(bad), 401,
            sentinel_headers=lambda o: bearer(mint(claims(org=o), SECRET, alg)))
    close_all(ws)
    tokens.assert_absent(sc.log(), must_include=[bad, bad.rsplit(".", 1)[1]])


@pytest.mark.parametrize("alg,key", [("RS256", "rsa"), ("RS384", "rsa"), ("RS512", "rsa"),
                                     ("ES256", "ec256"), ("ES384", "ec384")])
def test_public_key_algorithms_accept_and_deliver(sidecar_factory, redis, keys, tokens, alg, key):
    pair = keys[key]
    sc = jwt_sidecar(sidecar_factory, {"algorithms": [alg], "secret": "",
                                       "public_key_file": pair.public_path})

    def good(org):
        return bearer(tokens.add(mint(claims(org=org), pair.private_pem, alg)))

    ws = accepted(sc, redis, "/ws/acme", good("acme"))
    assert ws.welcome["user"] == "alice"
    # The same claims signed by another key of the same type are refused.
    other = keys[{"rsa": "rsa2", "ec256": "ec256b", "ec384": "ec384b"}[key]]
    refused(sc, redis, "/ws/other",
            bearer(tokens.add(mint(claims(org="other"), other.private_pem, alg))), 401,
            sentinel_headers=good)
    close_all(ws)
    tokens.assert_absent(sc.log())


def test_tampered_payload_is_refused(sidecar_factory, redis, keys, tokens):
    pair = keys["rsa"]
    sc = jwt_sidecar(sidecar_factory, {"algorithms": ["RS256"], "secret": "",
                                       "public_key_file": pair.public_path})
    good = mint(claims(org="acme"), pair.private_pem, "RS256")
    h, _, s = good.split(".")
    forged = tokens.add(f"{h}.{b64url(json.dumps(claims(org='evil')).encode())}.{s}")
    refused(sc, redis, "/ws/evil", bearer(forged), 401,
            sentinel_headers=lambda o: bearer(mint(claims(org=o), pair.private_pem, "RS256")))


def test_secret_from_secret_env_variable(sidecar_factory, redis, tokens):
    env_secret = "secret-from-a-named-environment-variable-42"
    sc = jwt_sidecar(sidecar_factory, {"secret": "", "secret_env": "MY_APP_JWT_KEY"},
                     env={"MY_APP_JWT_KEY": env_secret})
    ok = lambda o: bearer(tokens.add(mint(claims(org=o), env_secret)))
    refused(sc, redis, "/ws/other", bearer(tokens.add(mint(claims(org="other"), SECRET))), 401,
            sentinel_headers=ok)
    close_all(accepted(sc, redis, "/ws/acme", ok("acme")))
    tokens.assert_absent(sc.log())


def test_sidecar_jwt_secret_env_overrides_config_secret(sidecar_factory, redis, tokens):
    env_secret = "secret-from-SIDECAR_JWT_SECRET-overrides-the-file"
    sc = jwt_sidecar(sidecar_factory, env={"SIDECAR_JWT_SECRET": env_secret})
    ok = lambda o: bearer(tokens.add(mint(claims(org=o), env_secret)))
    # The secret written in the file no longer verifies anything.
    refused(sc, redis, "/ws/other", bearer(tokens.add(mint(claims(org="other"), SECRET))), 401,
            sentinel_headers=ok)
    close_all(accepted(sc, redis, "/ws/acme", ok("acme")))
    tokens.assert_absent(sc.log())


def test_jwks_file_selects_key_by_kid(sidecar_factory, redis, keys, tokens, tmp_path):
    jwks = keys.jwks({"rsa-1": "rsa", "rsa-2": "rsa2", "ec-1": "ec256"})
    path = str(tmp_path / "jwks.json")
    with open(path, "w") as f:
        json.dump(jwks, f)
    sc = jwt_sidecar(sidecar_factory, {"algorithms": ["RS256", "ES256"], "secret": "",
                                       "jwks_file": path})

    def tok(org, key, kid, alg="RS256"):
        return bearer(tokens.add(mint(claims(org=org), keys[key].private_pem, alg,
                                      headers={"kid": kid})))

    ok = lambda o: tok(o, "rsa", "rsa-1")
    # Each kid selects its own key.
    a = accepted(sc, redis, "/ws/acme", tok("acme", "rsa", "rsa-1"))
    b = accepted(sc, redis, "/ws/beta", tok("beta", "rsa2", "rsa-2"))
    c = accepted(sc, redis, "/ws/gamma", tok("gamma", "ec256", "ec-1", "ES256"))
    # Signed by key 1 but naming key 2: the named key does not verify it.
    refused(sc, redis, "/ws/x1", tok("x1", "rsa", "rsa-2"), 401, sentinel_headers=ok)
    # An unknown kid, and no kid at all in a set of several keys.
    refused(sc, redis, "/ws/x2", tok("x2", "rsa", "nope"), 401, sentinel_headers=ok)
    refused(sc, redis, "/ws/x3", bearer(tokens.add(mint(claims(org="x3"), keys["rsa"].private_pem,
                                                        "RS256"))), 401, sentinel_headers=ok)
    close_all(a, b, c)
    tokens.assert_absent(sc.log())


def test_jwks_rotation_applies_on_sighup(sidecar_factory, redis, keys, tokens, tmp_path):
    path = str(tmp_path / "jwks.json")
    with open(path, "w") as f:
        json.dump(keys.jwks({"old": "rsa"}), f)
    sc = jwt_sidecar(sidecar_factory, {"algorithms": ["RS256"], "secret": "", "jwks_file": path})

    def tok(org, key, kid):
        return bearer(tokens.add(mint(claims(org=org), keys[key].private_pem, "RS256",
                                      headers={"kid": kid})))

    refused(sc, redis, "/ws/r1", tok("r1", "rsa2", "new"), 401,
            sentinel_headers=lambda o: tok(o, "rsa", "old"))
    with open(path + ".tmp", "w") as f:
        json.dump(keys.jwks({"new": "rsa2"}), f)
    os.replace(path + ".tmp", path)
    sc.send_signal(signal.SIGHUP)
    sc.wait_log(r"event=reloaded")
    close_all(accepted(sc, redis, "/ws/acme", tok("acme", "rsa2", "new")))
    refused(sc, redis, "/ws/r2", tok("r2", "rsa", "old"), 401,
            sentinel_headers=lambda o: tok(o, "rsa2", "new"))
    tokens.assert_absent(sc.log())


def _key_file_text(keys, source: str, name: str) -> str:
    """The contents of a public_key_file (a PEM) or jwks_file (kid = key name) for key ``name``."""
    if source == "public_key_file":
        return keys[name].public_pem.decode()
    return json.dumps(keys.jwks({name: name}))


def _write_atomically(path: str, text: str):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


@pytest.mark.parametrize("source", ["public_key_file", "jwks_file"])
@pytest.mark.parametrize("damage", ["truncated", "missing", "empty", "unusable"])
def test_sighup_with_an_unusable_key_file_keeps_the_old_keys(sidecar_factory, redis, keys,
                                                             tokens, source, damage, tmp_path):
    """A key rotation that goes wrong (a half-copied file, a deleted one, an empty one, or one that
    parses but holds no usable key: a JWKS with no keys, a 1024-bit RSA PEM) is rejected on SIGHUP: the log says
    reload_rejected, the old key keeps admitting its tokens and nothing else is admitted. A good
    file and another SIGHUP then switch to the new key."""
    path = str(tmp_path / "key")
    _write_atomically(path, _key_file_text(keys, source, "rsa"))
    sc = jwt_sidecar(sidecar_factory, {"algorithms": ["RS256"], "secret": "", source: path})

    def tok(org, key):
        kid = {"kid": key} if source == "jwks_file" else None
        return bearer(mint(claims(org=org), keys[key].private_pem, "RS256", headers=kid))

    close_all(accepted(sc, redis, "/ws/acme", tok("acme", "rsa")))
    good = _key_file_text(keys, source, "rsa")
    if damage == "truncated":
        _write_atomically(path, good[:len(good) // 2])
    elif damage == "missing":
        os.remove(path)
    elif damage == "empty":
        _write_atomically(path, "")
    elif source == "jwks_file":
        _write_atomically(path, json.dumps({"keys": []}))
    else:
        weak = os.path.join(os.path.dirname(path), "weak.key")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", weak)
        _write_atomically(path, openssl("pkey", "-in", weak, "-pubout").decode())
    rejected = sc.log().count("event=reload_rejected")
    reloaded = sc.log().count("event=reloaded")
    sc.send_signal(signal.SIGHUP)
    wait_until(lambda: sc.log().count("event=reload_rejected") > rejected, 10 * SLOW,
               "the reload to be rejected")
    assert sc.running()
    assert sc.log().count("event=reloaded") == reloaded, "the broken key file was applied"
    # The old key still admits its tokens, and only those.
    close_all(accepted(sc, redis, "/ws/acme", tok("acme", "rsa")))
    refused(sc, redis, "/ws/r1", tok("r1", "rsa2"), 401,
            sentinel_headers=lambda o: tok(o, "rsa"))
    refused(sc, redis, "/ws/r2", bearer(mint(claims(org="r2"), SECRET)), 401,
            sentinel_headers=lambda o: tok(o, "rsa"))
    # A good new file and SIGHUP switch keys.
    _write_atomically(path, _key_file_text(keys, source, "rsa2"))
    sc.send_signal(signal.SIGHUP)
    wait_until(lambda: sc.log().count("event=reloaded") > reloaded, 10 * SLOW,
               "the reload with the new key file")
    close_all(accepted(sc, redis, "/ws/beta", tok("beta", "rsa2")))
    refused(sc, redis, "/ws/r3", tok("r3", "rsa"), 401,
            sentinel_headers=lambda o: tok(o, "rsa2"))


def test_alg_not_in_allowlist_is_refused(sidecar_factory, redis, keys, tokens):
    sc = jwt_sidecar(sidecar_factory, {"algorithms": ["HS256"]})
    for i, alg in enumerate(["HS384", "HS512"]):
        refused(sc, redis, f"/ws/n{i}", bearer(tokens.add(mint(claims(org=f"n{i}"), SECRET, alg))),
                401, sentinel_headers=hs_sentinel)
    # RS256 signed with a real key is still not HS256.
    refused(sc, redis, "/ws/n9",
            bearer(tokens.add(mint(claims(org="n9"), keys["rsa"].private_pem, "RS256"))), 401,
            sentinel_headers=hs_sentinel)
    tokens.assert_absent(sc.log())


def test_alg_none_is_refused(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory)
    for i, (alg, sig) in enumerate([("none", ""), ("None", ""), ("NONE", ""),
                                    ("none", b64url(b"anything"))]):
        t = tokens.add(hand_token({"alg": alg, "typ": "JWT"}, claims(org=f"z{i}"), sig=sig))
        refused(sc, redis, f"/ws/z{i}", bearer(t), 401, sentinel_headers=hs_sentinel)
    # PyJWT's own unsigned token, too.
    t = tokens.add(_remember(jwt.encode(claims(org="z9"), None, algorithm="none")))
    refused(sc, redis, "/ws/z9", bearer(t), 401, sentinel_headers=hs_sentinel)


@pytest.mark.parametrize("allow_hs", [False, True])
def test_hs256_signed_with_the_rsa_public_key_is_refused(sidecar_factory, redis, keys, tokens,
                                                         allow_hs):
    """Algorithm confusion: the attacker knows the public key and uses its PEM as an HMAC secret.
    Refused whether or not HS256 is also allowed (with its own secret)."""
    pair = keys["rsa"]
    algs = ["RS256", "HS256"] if allow_hs else ["RS256"]
    sc = jwt_sidecar(sidecar_factory, {"algorithms": algs, "secret": SECRET if allow_hs else "",
                                       "public_key_file": pair.public_path})
    ok = lambda o: bearer(mint(claims(org=o), pair.private_pem, "RS256"))
    for i, key in enumerate([pair.public_pem, pair.public_pem.strip()]):
        t = tokens.add(hand_token({"alg": "HS256", "typ": "JWT"}, claims(org=f"c{i}"), key=key))
        refused(sc, redis, f"/ws/c{i}", bearer(t), 401, sentinel_headers=ok)
    close_all(accepted(sc, redis, "/ws/acme", ok("acme")))


def test_malformed_tokens_are_refused(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory)
    good = mint(claims(org="m"), SECRET)
    h, p, s = good.split(".")
    hdr = {"alg": "HS256", "typ": "JWT"}
    sign = SECRET.encode()
    bad = {
        "two segments": f"{h}.{p}",
        "four segments": f"{h}.{p}.{s}.{s}",
        "empty signature": f"{h}.{p}.",
        "header not base64url": hand_token("eyJh!!bGciOiJ@", p, key=sign),
        "payload not base64url": hand_token(hdr, "e%%30*", key=sign),
        "payload padded base64": hand_token(hdr, p + "==", key=sign),
        "header not JSON": hand_token(b64url(b"{alg: HS256"), p, key=sign),
        "payload not JSON": hand_token(hdr, b64url(b"not json at all"), key=sign),
        "payload a JSON array": hand_token(hdr, b64url(b'["org","m"]'), key=sign),
        "header a JSON string": hand_token(b64url(b'"HS256"'), p, key=sign),
        "signature not base64url": f"{h}.{p}.{s[:-4]}$$$$",
        "truncated signature": f"{h}.{p}.{s[:-6]}",
        "garbage": "not-a-token-at-all-0123456789",
        "dots only": "..",
    }
    for i, (what, t) in enumerate(bad.items()):
        org = f"m{i}"
        refused(sc, redis, f"/ws/{org}", bearer(tokens.add(t)), 401,
                sentinel_headers=hs_sentinel)
    tokens.assert_absent(sc.log())


def sized_token(size: int, org: str = "acme") -> str:
    """An HS256 token of exactly ``size`` characters: a padding claim grows the payload, and a
    second one of 0..3 characters fills the lengths base64 cannot hit with one."""
    base = len(mint(claims(org=org, pad="", pad2=""), SECRET))
    start = max(0, (size - base) * 3 // 4 - 8)
    for a in range(start, start + 64):
        for b in range(4):
            t = mint(claims(org=org, pad="x" * a, pad2="y" * b), SECRET)
            if len(t) == size:
                return t
    raise AssertionError(f"cannot make a token of {size} characters")


def test_oversized_token_is_refused_and_limit_is_inclusive(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, {"max_token_bytes": 1024})
    refused(sc, redis, "/ws/big", bearer(tokens.add(sized_token(1025, "big"))), 401,
            sentinel_headers=hs_sentinel)
    refused(sc, redis, "/ws/huge?token=" + tokens.add(sized_token(6000, "huge")), None, 401,
            sentinel_headers=hs_sentinel)
    close_all(accepted(sc, redis, "/ws/acme", bearer(tokens.add(sized_token(1024)))))
    tokens.assert_absent(sc.log())


# ----------------------------------------------------------------------------- time claims


def test_exp_nbf_iat_respect_leeway(sidecar_factory, redis, tokens):
    # on_expiry keep, so that a token accepted within the leeway is not closed at once for exp.
    sc = jwt_sidecar(sidecar_factory, {"leeway_s": 20}, on_expiry="keep")
    now = int(time.time())
    cases_ok = {
        "exp 5 s ago, inside leeway": claims(org="t1", ttl=None, exp=now - 5),
        "nbf 5 s ahead, inside leeway": claims(org="t2", nbf=now + 5),
        "iat 5 s ahead, inside leeway": claims(org="t3", iat=now + 5),
        "nbf in the past": claims(org="t4", nbf=now - 100),
        "no exp at all": claims(org="t5", ttl=None),
    }
    cases_bad = {
        "exp 120 s ago": claims(org="f1", ttl=None, exp=now - 120),
        "nbf 120 s ahead": claims(org="f2", nbf=now + 120),
        "iat 120 s ahead": claims(org="f3", iat=now + 120),
        "exp not a number": claims(org="f4", ttl=None, exp="tomorrow"),
    }
    for what, c in cases_bad.items():
        body = refused(sc, redis, f"/ws/{c['org']}", bearer(tokens.add(mint(c, SECRET))), 401,
                       sentinel_headers=hs_sentinel)
        assert body["error"] == "UNAUTHORIZED", (what, body)
    conns = [accepted(sc, redis, f"/ws/{c['org']}", bearer(tokens.add(mint(c, SECRET))))
             for c in cases_ok.values()]
    close_all(*conns)
    tokens.assert_absent(sc.log())


def test_zero_leeway_refuses_a_just_expired_token(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, {"leeway_s": 0})
    now = int(time.time())
    refused(sc, redis, "/ws/late", bearer(tokens.add(mint(claims(org="late", ttl=None,
                                                                   exp=now - 2), SECRET))), 401,
            sentinel_headers=hs_sentinel)
    refused(sc, redis, "/ws/early", bearer(tokens.add(mint(claims(org="early", nbf=now + 5),
                                                           SECRET))), 401,
            sentinel_headers=hs_sentinel)


def test_issuer_and_audience(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, {"issuer": "https://auth.example.com",
                                       "audience": "sidecar"})
    iss, aud = "https://auth.example.com", "sidecar"

    def t(org, **kw):
        return bearer(tokens.add(mint(claims(org=org, **kw), SECRET)))

    ok = lambda o: t(o, iss=iss, aud=aud)
    for org, kw in {"i1": {"aud": aud}, "i2": {"iss": "https://evil.example.com", "aud": aud},
                    "i3": {"iss": iss}, "i4": {"iss": iss, "aud": "other"},
                    "i5": {"iss": iss, "aud": ["other", "another"]},
                    "i6": {"iss": iss.upper(), "aud": aud}}.items():
        refused(sc, redis, f"/ws/{org}", t(org, **kw), 401, sentinel_headers=ok)
    a = accepted(sc, redis, "/ws/acme", t("acme", iss=iss, aud=aud))
    b = accepted(sc, redis, "/ws/beta", t("beta", iss=iss, aud=["other", aud]))
    close_all(a, b)


# ----------------------------------------------------------------------------- token sources


def test_no_token_is_401(sidecar_factory, redis):
    sc = jwt_sidecar(sidecar_factory)
    refused(sc, redis, "/ws/acme", None, 401, sentinel_headers=hs_sentinel)
    refused(sc, redis, "/ws/acme?token=", None, 401, sentinel_headers=hs_sentinel)
    refused(sc, redis, "/ws/acme", {"Authorization": "Basic dXNlcjpwYXNz"}, 401,
            sentinel_headers=hs_sentinel)
    refused(sc, redis, "/ws/acme", {"Sec-WebSocket-Protocol": "bearer"}, 401,
            sentinel_headers=hs_sentinel)


def test_token_from_each_source(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory)
    t = lambda o: tokens.add(mint(claims(org=o), SECRET))
    q = accepted(sc, redis, f"/ws/q1?token={t('q1')}")
    h = accepted(sc, redis, "/ws/h1", bearer(t("h1")))
    c = accepted(sc, redis, "/ws/k1", {"Cookie": f"theme=dark; token={t('k1')}; lang=en"})
    s = accepted(sc, redis, "/ws/s1", {"Sec-WebSocket-Protocol": f"bearer, {t('s1')}"})
    # The 101 echoes the subprotocol "bearer" exactly, never the token.
    assert s.headers.get("sec-websocket-protocol") == "bearer", s.headers
    for other in (q, h, c):
        assert "sec-websocket-protocol" not in other.headers, other.headers
    close_all(q, h, c, s)
    tokens.assert_absent(sc.log())


def test_custom_query_param_and_cookie_name(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, query_param="access_token", cookie_name="sc_auth")
    t = lambda o: tokens.add(mint(claims(org=o), SECRET))
    a = accepted(sc, redis, f"/ws/q2?x=1&access_token={t('q2')}")
    b = accepted(sc, redis, "/ws/k2", {"Cookie": f"sc_auth={t('k2')}"})
    # The default names now carry nothing.
    refused(sc, redis, f"/ws/q3?token={t('q3')}", None, 401, sentinel_headers=hs_sentinel)
    refused(sc, redis, "/ws/k3", {"Cookie": f"token={t('k3')}"}, 401,
            sentinel_headers=hs_sentinel)
    close_all(a, b)


def test_configured_source_order_decides_which_token_counts(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, token_sources=["header", "query"])
    good = lambda o: tokens.add(mint(claims(org=o), SECRET))
    bad = lambda o: tokens.add(mint(claims(org=o), "wrong-secret-wrong-secret-wrong"))
    # The header comes first: its good token wins over a bad one in the query...
    a = accepted(sc, redis, f"/ws/o1?token={bad('o1')}", bearer(good("o1")))
    # ...and its bad token loses even though the query holds a good one.
    refused(sc, redis, f"/ws/o2?token={good('o2')}", bearer(bad("o2")), 401,
            sentinel_headers=hs_sentinel)
    # Without a header the query is used.
    b = accepted(sc, redis, f"/ws/o3?token={good('o3')}")
    # Sources not listed are ignored.
    refused(sc, redis, "/ws/o4", {"Cookie": f"token={good('o4')}"}, 401,
            sentinel_headers=hs_sentinel)
    refused(sc, redis, "/ws/o5", {"Sec-WebSocket-Protocol": f"bearer, {good('o5')}"}, 401,
            sentinel_headers=hs_sentinel)
    close_all(a, b)
    tokens.assert_absent(sc.log())


# ----------------------------------------------------------------------------- org and user claims


def test_org_claim_mismatch_is_403(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory)
    body = refused(sc, redis, "/ws/acme", bearer(tokens.add(mint(claims(org="other"), SECRET))),
                   403, "FORBIDDEN_ORG", sentinel_headers=hs_sentinel)
    assert body["message"] == "the token does not grant this org", body
    # A token without the org claim grants no org either.
    refused(sc, redis, "/ws/acme", bearer(tokens.add(mint(claims(org=None), SECRET))), 403,
            sentinel_headers=hs_sentinel)
    # Case matters in org ids.
    refused(sc, redis, "/ws/ACME", bearer(tokens.add(mint(claims(org="acme"), SECRET))), 403,
            sentinel_headers=hs_sentinel)


def test_org_claim_as_list_grants_each_listed_org(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory)
    t = tokens.add(mint(claims(org=["acme", "beta"]), SECRET))
    refused(sc, redis, "/ws/gamma", bearer(t), 403, sentinel_headers=hs_sentinel)
    a = accepted(sc, redis, "/ws/acme", bearer(t))
    b = accepted(sc, redis, "/ws/beta", bearer(t))
    close_all(a, b)


def test_configured_org_claims_first_present_wins(sidecar_factory, redis, tokens):
    """auth.org_claim [tenant, org]: "the first present claim wins" (config/sidecar.yaml), so a
    token whose tenant is beta does not also grant the org claim's acme."""
    sc = jwt_sidecar(sidecar_factory, org_claim=["tenant", "org"])
    # The refusal comes first, while no session holds org:acme, so that the sentinel can prove
    # that it subscribed nothing.
    both = tokens.add(mint(claims(org="acme", tenant="beta"), SECRET))
    refused(sc, redis, "/ws/acme", bearer(both), 403,
            sentinel_headers=lambda o: bearer(mint(claims(org=None, tenant=o), SECRET)))
    # The same token is good for its first present claim's org, and the fallback claim works for
    # tokens without the first.
    a = accepted(sc, redis, "/ws/beta", bearer(both))
    b = accepted(sc, redis, "/ws/acme", bearer(tokens.add(mint(claims(org="acme"), SECRET))))
    close_all(a, b)


def test_user_claim_names_the_session_user_and_its_channel(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, user_claim="uid")
    t = lambda uid: bearer(tokens.add(mint(claims(sub="ignored", uid=uid), SECRET)))
    a1 = accepted(sc, redis, "/ws/acme", t("alice"))
    a2 = accepted(sc, redis, "/ws/acme", t("alice"))
    b = accepted(sc, redis, "/ws/acme", t("bob"))
    for ws, user in ((a1, "alice"), (a2, "alice"), (b, "bob")):
        assert ws.welcome["user"] == user, ws.welcome
    wait_channel(redis, "org:acme:user:alice")
    wait_channel(redis, "org:acme:user:bob")
    assert "org:acme:user:ignored" not in redis.pubsub_channels()
    # Redis delivers to the sidecar in PUBLISH order, so each session's sequence is exact.
    redis.publish("org:acme:user:alice", "for-alice")
    redis.publish("org:acme:user:bob", "for-bob")
    redis.publish("org:acme", "for-everyone")
    for ws, mine in ((a1, b"for-alice"), (a2, b"for-alice"), (b, b"for-bob")):
        got = [next_non_probe(ws), next_non_probe(ws)]
        assert got == [mine, b"for-everyone"], got
    close_all(a1, a2, b)


def test_sub_is_the_default_user_claim(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory)
    a = accepted(sc, redis, "/ws/acme", bearer(tokens.add(mint(claims(sub="alice"), SECRET))))
    b = accepted(sc, redis, "/ws/acme", bearer(tokens.add(mint(claims(sub="bob"), SECRET))))
    assert (a.welcome["user"], b.welcome["user"]) == ("alice", "bob")
    wait_channel(redis, "org:acme:user:alice")
    redis.publish("org:acme:user:alice", "for-alice-only")
    redis.publish("org:acme", "for-everyone")
    assert [next_non_probe(a), next_non_probe(a)] == [b"for-alice-only", b"for-everyone"]
    # Bob's next message is the room one: alice's never reached him.
    assert next_non_probe(b) == b"for-everyone"
    close_all(a, b)


def test_anonymous_mode_has_null_user(sidecar, redis):
    ws = accepted(sidecar, redis, "/ws/acme")
    assert ws.welcome["user"] is None
    close_all(ws)


# ----------------------------------------------------------------------------- expiry during a session


def test_token_expiring_frame_then_close_4001(sidecar_factory, redis, tokens):
    # close_timeout_ms 800 is the shortest timeout, so the sweep that checks expiry runs every
    # 200 ms: the warning and the close are due within one sweep of their moment.
    sweep_s = 0.2
    sc = jwt_sidecar(sidecar_factory, {"leeway_s": 0}, expiry_warning_s=2,
                     extra={"websocket": {"close_timeout_ms": 800}})
    exp = int(time.time()) + 4
    ans = handshake(sc.port, "/ws/acme", bearer(tokens.add(mint(claims(ttl=None, exp=exp),
                                                                SECRET))))
    assert ans.status == 101, ans
    ws = ans.ws
    assert ws.recv_json()["type"] == "connected"
    # Delivery works until the end; the probe and the warning may arrive in either order on a
    # slow machine, so everything up to the close is collected and then judged.
    wait_channel(redis, "org:acme")
    redis.publish("org:acme", "still-delivered")
    seen, warned_at = [], None
    while True:
        f = ws.recv_message(timeout=10)
        assert f is not None, f"TCP ended without a close frame after {seen}"
        if f.opcode == 0x8:
            code, closed_at = f.close_code(), time.time()
            break
        seen.append(f.payload)
        if f.payload.startswith(b'{"type":"token_expiring"'):
            warned_at = time.time()
    assert b"still-delivered" in seen, seen
    warnings = [json.loads(p) for p in seen if p.startswith(b'{"type":"token_expiring"')]
    assert warnings == [{"type": "token_expiring", "expires_at": exp}], seen
    # Due at exp - expiry_warning_s and at exp (the sidecar compares whole seconds, which can only
    # make it later); allowed one sweep plus scheduling slack for a loaded machine after that.
    slack = sweep_s + 0.8 * SLOW
    assert exp - 2 - 0.05 <= warned_at <= exp - 2 + slack, \
        f"warning {warned_at - exp:+.2f} s from exp; due at -2 s (+{slack:.1f} s)"
    assert code == 4001, code
    assert exp - 0.05 <= closed_at <= exp + slack, \
        f"closed {closed_at - exp:+.2f} s from exp; due at exp (+{slack:.1f} s)"
    close_all(ws)
    wait_channel(redis, "org:acme", present=False)
    tokens.assert_absent(sc.log())


def test_on_expiry_keep_leaves_the_session_open(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory, {"leeway_s": 0}, extra={"websocket": {"heartbeat_ms": 300}},
                     expiry_warning_s=1, on_expiry="keep")
    exp = int(time.time()) + 3
    ans = handshake(sc.port, "/ws/acme", bearer(tokens.add(mint(claims(ttl=None, exp=exp),
                                                                SECRET))))
    assert ans.status == 101, ans
    ws = ans.ws
    assert ws.recv_json()["type"] == "connected"
    # Wait past exp on the server's own heartbeat pings (every 300 ms here), answering each:
    # a closed session would show up as a close frame or the end of the stream.
    deadline = time.monotonic() + 15
    warnings = []
    while time.time() < exp + 2:
        assert time.monotonic() < deadline, "the clock did not pass exp in time"
        f = ws.recv_frame(timeout=5)
        assert f is not None and f.opcode != 0x8, f"session ended after exp: {f}"
        if f.opcode == 0x9:
            ws.send_frame(0xA, f.payload)
        elif f.opcode == 0x1:
            warnings.append(json.loads(f.payload))
    assert warnings == [{"type": "token_expiring", "expires_at": exp}], warnings
    ws.send_frame(0x1, b'{"type":"ping"}')
    assert next_non_probe(ws).startswith(b'{"type":"pong"')
    assert_delivery(redis, ws)
    close_all(ws)


def test_refusal_bodies_are_json_with_status_codes(sidecar_factory, redis):
    sc = jwt_sidecar(sidecar_factory)
    for path, headers, status, code in [
            ("/ws/acme", None, 401, "UNAUTHORIZED"),
            ("/ws/acme", bearer("a.b.c"), 401, "UNAUTHORIZED"),
            ("/ws/acme", bearer(mint(claims(org="zz"), SECRET)), 403, "FORBIDDEN_ORG"),
            ("/ws/bad%20org", bearer(mint(claims(org="bad org"), SECRET)), 400, "BAD_ORG"),
            ("/ws/acme", bearer(mint(claims(sub="bad user"), SECRET)), 403, "BAD_USER")]:
        body = check_refusal(handshake(sc.port, path, headers), status, code)
        assert body["message"], body



def test_bad_org_is_400_before_the_token_is_looked_at(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory)
    for org in ("bad!org", "x" * 129, "sp%20ace"):
        # Even with a token that names this very org, the org id itself is refused first.
        refused(sc, redis, f"/ws/{org}", bearer(tokens.add(mint(claims(org=org), SECRET))), 400,
                "BAD_ORG", sentinel_headers=hs_sentinel)
    # No token at all: still BAD_ORG, not UNAUTHORIZED.
    refused(sc, redis, "/ws/bad!org", None, 400, "BAD_ORG", sentinel_headers=hs_sentinel)


def test_user_claim_that_is_not_a_usable_id_is_403_bad_user(sidecar_factory, redis, tokens):
    sc = jwt_sidecar(sidecar_factory)
    for sub in ("bad user", "a/b", "caf\u00e9", "x" * 129, "al\nice"):
        refused(sc, redis, "/ws/acme", bearer(tokens.add(mint(claims(sub=sub), SECRET))), 403,
                "BAD_USER", sentinel_headers=hs_sentinel)
    # The longest usable id and every allowed character are admitted.
    a = accepted(sc, redis, "/ws/acme", bearer(tokens.add(mint(claims(sub="u" * 128), SECRET))))
    b = accepted(sc, redis, "/ws/acme", bearer(tokens.add(mint(claims(sub="Az09._:-"), SECRET))))
    assert (a.welcome["user"], b.welcome["user"]) == ("u" * 128, "Az09._:-")
    close_all(a, b)
