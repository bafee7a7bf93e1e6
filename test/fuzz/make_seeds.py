#!/usr/bin/python3
"""Writes the seed inputs of fuzz_http, fuzz_ws, fuzz_origin, fuzz_xff, fuzz_resp and
fuzz_inflate into test/fuzz/corpus/<name>/, in the input layout each target's first comment describes. Seeds are
chosen so that every limit and refusal branch is reached from the first run (scripts/fuzz.sh
fails a target whose corpus leaves a required branch unreached). fuzz_jwt's seeds are signed
tokens; the target writes them itself: FUZZ_JWT_WRITE_SEEDS=test/fuzz/corpus/jwt build-fuzz/...

Usage: test/fuzz/make_seeds.py   (rewrites the seeds it owns; other files are left alone)
"""

import struct
import zlib
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def write(target: str, name: str, data: bytes):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def limit_byte(limit: int, base: int, step: int) -> int:
    return (limit - base) // step


# ---------------------------------------------------------------- fuzz_http
# byte 0: bit 7 structured, low 6 bits read size - 1; byte 1: head limit = 64 + 16 * byte.
UPGRADE = (b"GET /ws/acme?token=x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nCookie: a=b; token=c\r\n"
           b"Sec-WebSocket-Protocol: bearer, t\r\n\r\n\x81\x80abcd")
HEALTH = b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n"
write("http", "upgrade", bytes([0x06, 255]) + UPGRADE)
write("http", "health", bytes([0x3f, 255]) + HEALTH)
# A head of 1,200 bytes against a limit of 256: 431 in raw mode, in 64-byte reads.
write("http", "raw_431", bytes([0x3f, limit_byte(256, 64, 16)]) + HEALTH[:-2] +
      b"X-Pad: " + b"p" * 1200 + b"\r\n\r\n")
# Never-ending header line, 1-byte reads: the limit must stop it.
write("http", "raw_431_unterminated", bytes([0x00, 0]) + b"GET / HTTP/1.1\r\nX: " + b"a" * 200)
write("http", "raw_400", bytes([0x10, 255]) + b"GET / HTTP/9.9 junk\r\n\r\n")
# Structured: pad 300 against 256 (431) and pad 10 against 4144 (done).
write("http", "structured_431", bytes([0x80 | 0x1f, limit_byte(256, 64, 16)]) + b"p" * 300)
write("http", "structured_done", bytes([0x80 | 0x07, 255]) + b"p" * 10)
# The structured head is 164 bytes plus the padding: 140 bytes of it make exactly the limit of
# 304 (done), 141 one byte more (431).
write("http", "structured_exact", bytes([0x80 | 0x3f, limit_byte(304, 64, 16)]) + b"q" * 140)
write("http", "structured_one_over", bytes([0x80 | 0x3f, limit_byte(304, 64, 16)]) + b"q" * 141)


# ---------------------------------------------------------------- fuzz_ws
# byte 0: bit 7 structured, bit 6 close at end (raw), low 5 bits read size - 1;
# byte 1: message limit = 16 + 4 * byte.
def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04",
          length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


write("ws", "text", bytes([0x07, 255]) + frame(1, b"hello"))
write("ws", "frag", bytes([0x03, 255]) + frame(1, b"hel", fin=False) + frame(0, b"lo"))
write("ws", "close", bytes([0x1f, 255]) + frame(8, b"\x03\xe8bye"))
write("ws", "ping", bytes([0x41, 255]) + frame(9, b"p") + frame(2, b"\x00\xff"))
# 300 bytes against a limit of 64: 1009 with the first payload bytes.
write("ws", "raw_1009", bytes([0x1f, limit_byte(64, 16, 4)]) + frame(2, b"x" * 300))
# A 64-bit length claiming 1 GiB and its first payload byte: wslay judges the length when the
# first payload byte arrives, so 1009 comes before any more is read.
write("ws", "raw_1009_huge_length", bytes([0x1f, 0]) + frame(2, b"z", length=1 << 30))
# Fragments that are each small but together exceed the limit of 40.
write("ws", "raw_1009_fragments", bytes([0x0f, limit_byte(40, 16, 4)]) +
      frame(1, b"a" * 30, fin=False) + frame(0, b"b" * 30))
# Structured (byte 2: bit 0 text, bits 1-2 fragments - 1): within and over the limit.
write("ws", "structured_ok", bytes([0x80 | 0x05, limit_byte(100, 16, 4), 0x01]) + b"t" * 100)
write("ws", "structured_1009", bytes([0x80 | 0x1f, limit_byte(100, 16, 4), 0x06]) + b"b" * 101)
write("ws", "structured_big", bytes([0x80 | 0x1f, 255, 0x03]) + b"u" * 2000)


# ---------------------------------------------------------------- fuzz_origin
# byte 0: bit 0 allow_missing, bit 1 has Origin; then "origin\npattern\npattern...".
def origin_seed(name: str, origin: str, patterns: list[str], flags: int = 0x2):
    write("origin", name, bytes([flags]) + "\n".join([origin, *patterns]).encode())


origin_seed("exact", "https://app.example.com", ["https://app.example.com"])
origin_seed("wildcard", "https://a.b.example.com", ["https://*.example.com", "http://localhost:*"])
origin_seed("wildcard_suffix_attack", "https://example.com.evil.io", ["https://*.example.com"])
origin_seed("default_port", "https://app.example.com:443", ["https://app.example.com"])
origin_seed("ipv6", "http://[::1]:8080", ["http://[::1]:*"])
origin_seed("null", "null", ["https://app.example.com"])
origin_seed("star", "https://anything.test", ["*"])
origin_seed("path_refused", "https://app.example.com/x", ["https://app.example.com"])
origin_seed("bad_patterns", "https://x.io", ["https://x.io/", "x.io", "https://*.", "*.x.io",
                                             "https://u@x.io", "https://x.io:0"])
origin_seed("missing", "", ["https://app.example.com"], flags=0x1)
origin_seed("upper", "HTTPS://APP.EXAMPLE.COM", ["https://App.Example.com"])


# ---------------------------------------------------------------- fuzz_xff
# byte 0: peer index (0 10.0.0.7, 1 192.168.1.1, 2 ::1, 3 fd00::1, 4 203.0.113.9 untrusted,
# 5 2001:db8::5 untrusted); then "extra pattern\nheader" or just the header.
def xff_seed(name: str, peer: int, header: str, extra: str | None = None):
    body = header.encode() if extra is None else f"{extra}\n{header}".encode()
    write("xff", name, bytes([peer]) + body)


xff_seed("client_behind_proxy", 0, "198.51.100.7")
xff_seed("chain", 0, "1.2.3.4, 198.51.100.7, 10.0.0.9")
xff_seed("untrusted_peer", 4, "1.2.3.4")
xff_seed("malformed", 0, "1.2.3.4, junk")
xff_seed("all_trusted", 2, "10.1.1.1, fd00::9")
xff_seed("ipv6_client", 3, "2001:db8::1 ,\t::1")
xff_seed("extra_pattern", 0, "198.51.100.7, 198.51.100.1", extra="198.51.100.0/24")
xff_seed("bad_pattern", 0, "1.1.1.1", extra="300.1.1.1/8")
xff_seed("empty_items", 1, ",,")


# ---------------------------------------------------------------- fuzz_resp
# byte 0: read size - 1; then bytes from Redis.
def bulk(s: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(s), s)


def arr(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


write("resp", "subscribe_and_message", bytes([0x05]) +
      arr(bulk(b"subscribe"), bulk(b"org:acme"), b":1\r\n") +
      arr(bulk(b"message"), bulk(b"org:acme"), bulk(b'{"type":"SYNC"}')) +
      arr(bulk(b"unsubscribe"), bulk(b"org:acme"), b":0\r\n"))
write("resp", "pmessage", bytes([0x3f]) +
      arr(bulk(b"pmessage"), bulk(b"org:*"), bulk(b"org:acme"), bulk(b"\xff\x00binary")))
write("resp", "error_and_status", bytes([0x00]) + b"-NOAUTH Authentication required.\r\n"
      b"+OK\r\n:42\r\n$-1\r\n*-1\r\n")
write("resp", "nested", bytes([0x02]) + arr(bulk(b"message"), arr(b":1\r\n", bulk(b"x")),
                                            arr()))
write("resp", "message_with_nil_payload", bytes([0x3f]) +
      arr(bulk(b"message"), bulk(b"c"), b"$-1\r\n"))
write("resp", "protocol_error", bytes([0x3f]) + b"?what\r\n")
write("resp", "huge_array", bytes([0x3f]) + b"*2147483647\r\n")
write("resp", "bad_bulk_length", bytes([0x3f]) + b"$-7\r\nx\r\n")
# Link mode (byte 0 bit 7; byte 1: bit 0 subscriber, bits 1-3 commands sent; then one byte per
# command: 0 AUTH, 1 SELECT, 2 PING, 3 SUBSCRIBE, 4 UNSUBSCRIBE, 5 XADD).
write("resp", "link_subscriber", bytes([0x80 | 0x07, 0x01 | (3 << 1), 0, 3, 2]) + b"+OK\r\n" +
      arr(bulk(b"subscribe"), bulk(b"org:acme"), b":1\r\n") +
      arr(bulk(b"message"), bulk(b"org:acme"), bulk(b"hello")) +
      arr(bulk(b"pong"), bulk(b"")))
write("resp", "link_error_reply", bytes([0x80 | 0x3f, 1 << 1, 5]) +
      b"-NOPERM this user has no permissions to access the 'inbound:acme' key\r\n")
write("resp", "link_unasked_reply", bytes([0x80 | 0x3f, 0x00]) + b"+OK\r\n")
write("resp", "link_malformed_push", bytes([0x80 | 0x3f, 0x01 | (1 << 1), 3]) +
      arr(bulk(b"message"), bulk(b"c"), b":1\r\n"))
write("resp", "link_huge_array", bytes([0x80 | 0x3f, 1 << 1, 2]) + b"*2147483647\r\n")


# ---------------------------------------------------------------- fuzz_inflate
# byte 0: bit 7 round trip, low 3 bits window (9 + n % 7; 6 is 15 bits), bits 3-6 level; byte 1:
# cap = 16 + 16 * byte; byte 2: frame size - 1 (low 6 bits). Then the payload.
def raw_deflate(data: bytes, level: int = 6, wbits: int = 15) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


EVENT = b'{"type":"order.updated","org":"acme","seq":12,"price":9.25,"tags":["a","b"]}'
write("inflate", "hello", bytes([0x06, 255, 0x03]) + bytes.fromhex("f248cdc9c90700"))
write("inflate", "stored", bytes([0x06, 255, 0x00]) + bytes.fromhex("000500faff48656c6c6f00"))
write("inflate", "bfinal", bytes([0x06, 255, 0x01]) + bytes.fromhex("f348cdc9c9070000"))
write("inflate", "two_blocks", bytes([0x06, 255, 0x02]) +
      bytes.fromhex("f248050000 00ffffcac9c90700".replace(" ", "")))
write("inflate", "events", bytes([0x06, 255, 0x0f]) + raw_deflate(EVENT * 20))
write("inflate", "bomb", bytes([0x06, 0, 0x3f]) + raw_deflate(bytes(1 << 16), 9))
write("inflate", "truncated", bytes([0x06, 255, 0x07]) + raw_deflate(EVENT * 20)[:-3])
write("inflate", "garbage", bytes([0x06, 255, 0x00]) + b"\xff\xff\xff\xff")
write("inflate", "window_9", bytes([0x00, 255, 0x05]) + raw_deflate(EVENT * 5, 6, 9))
write("inflate", "round_trip", bytes([0x80 | (1 << 3) | 0x06, 255, 0x07]) + EVENT * 4)
write("inflate", "round_trip_too_big", bytes([0x80 | (6 << 3) | 0x02, 0, 0x07]) + EVENT * 2)
