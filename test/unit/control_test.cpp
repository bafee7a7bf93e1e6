// Tests for control commands (control.h): hostile and malformed input first, then the signed
// form, selectors and the fields each op takes.
#include "control.h"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

using namespace sidecar;

namespace {

ControlRefusal refusal_of(std::string_view payload, std::string_view secret = {}) {
  ControlParse p = parse_control(payload, secret);
  REQUIRE_MESSAGE(!p.cmd, "accepted: " << payload);
  CHECK(!p.detail.empty());
  return p.refusal;
}

ControlCommand accepted(std::string_view payload, std::string_view secret = {}) {
  ControlParse p = parse_control(payload, secret);
  REQUIRE_MESSAGE(p.cmd, "refused (" << control_refusal_name(p.refusal) << "): " << p.detail);
  return *p.cmd;
}

// The signed form as a publisher builds it: the command text, verbatim, under "cmd".
std::string signed_form(const std::string &cmd, const std::string &secret) {
  return nlohmann::json{{"cmd", cmd}, {"sig", hmac_sha256_hex(secret, cmd)}}.dump();
}

} // namespace

TEST_CASE("bytes that are not a JSON object are refused as not_json") {
  for (std::string_view bad :
       {"", "x", "null", "[]", "\"disconnect\"", "42", "{",
        "{\"op\":", "{\"op\":\"disconnect\",\"all\":true}garbage",
        "\xff\xfe{\"op\":\"disconnect\"}", "{\"op\":\"disconnect\",\"user\":\"\xc3\x28\"}"}) {
    CAPTURE(bad);
    CHECK(refusal_of(bad) == ControlRefusal::not_json);
  }
}

TEST_CASE("a command nested deeper than its own members is refused while parsing") {
  std::string deep = "{\"op\":\"disconnect\",\"all\":true,\"x\":" + std::string(1000, '[') +
                     std::string(1000, ']') + "}";
  CHECK(refusal_of(deep) == ControlRefusal::not_json);
  CHECK(refusal_of("{\"op\":\"disconnect\",\"org\":{\"a\":{\"b\":1}}}") ==
        ControlRefusal::not_json);
}

TEST_CASE("a command over 4 KiB is refused unread") {
  std::string big = "{\"op\":\"disconnect\",\"all\":true,\"reason\":\"" +
                    std::string(kMaxControlBytes, 'a') + "\"}";
  CHECK(refusal_of(big) == ControlRefusal::oversized);
}

TEST_CASE("an unknown, missing or non-string op is refused") {
  CHECK(refusal_of(R"({"org":"acme"})") == ControlRefusal::unknown_op);
  CHECK(refusal_of(R"({"op":"shutdown","org":"acme"})") == ControlRefusal::unknown_op);
  CHECK(refusal_of(R"({"op":"Disconnect","org":"acme"})") == ControlRefusal::unknown_op);
  CHECK(refusal_of(R"({"op":1,"org":"acme"})") == ControlRefusal::unknown_op);
}

TEST_CASE("a command without a selector selects nobody: it is refused") {
  CHECK(refusal_of(R"({"op":"disconnect"})") == ControlRefusal::no_selector);
  CHECK(refusal_of(R"({"op":"reconnect","all":false})") == ControlRefusal::no_selector);
  CHECK(refusal_of(R"({"op":"refresh","code":1000})") == ControlRefusal::bad_field);
}

TEST_CASE("a misspelt or foreign member is refused rather than ignored") {
  // "usr" dropped silently would turn "alice of acme" into "all of acme".
  CHECK(refusal_of(R"({"op":"disconnect","org":"acme","usr":"alice"})") ==
        ControlRefusal::bad_field);
  CHECK(refusal_of(R"({"op":"reconnect","org":"acme","code":4000})") == ControlRefusal::bad_field);
  CHECK(refusal_of(R"({"op":"disconnect","org":"acme","after_ms":10})") ==
        ControlRefusal::bad_field);
}

TEST_CASE("selectors of the wrong type or size are refused") {
  for (std::string_view bad :
       {R"({"op":"disconnect","org":""})", R"({"op":"disconnect","org":"a/b"})",
        R"({"op":"disconnect","org":1})", R"({"op":"disconnect","user":""})",
        R"({"op":"disconnect","user":["alice"]})", R"({"op":"disconnect","conn":null})",
        R"({"op":"disconnect","all":"yes"})", R"({"op":"disconnect","sidecar":""})"}) {
    CAPTURE(bad);
    CHECK(refusal_of(bad) == ControlRefusal::bad_field);
  }
  std::string long_user = R"({"op":"disconnect","user":")" + std::string(1025, 'u') + "\"}";
  CHECK(refusal_of(long_user) == ControlRefusal::bad_field);
}

TEST_CASE("close codes a server may not send are refused as bad_code") {
  for (int code : {0, 999, 1002, 1003, 1004, 1005, 1006, 1007, 1009, 1010, 1014, 1015, 2999, 5000,
                   65535, 65536, -1}) {
    CAPTURE(code);
    std::string cmd = R"({"op":"disconnect","org":"acme","code":)" + std::to_string(code) + "}";
    CHECK(refusal_of(cmd) == ControlRefusal::bad_code);
  }
  CHECK(refusal_of(R"({"op":"disconnect","org":"acme","code":"4003"})") ==
        ControlRefusal::bad_code);
  CHECK(refusal_of(R"({"op":"disconnect","org":"acme","code":4003.5})") ==
        ControlRefusal::bad_code);
  for (int code : {1000, 1001, 1008, 1011, 1012, 1013, 3000, 4000, 4003, 4999}) {
    CAPTURE(code);
    CHECK(is_control_close_code(static_cast<uint16_t>(code)));
    std::string cmd = R"({"op":"disconnect","org":"acme","code":)" + std::to_string(code) + "}";
    CHECK(accepted(cmd).code == code);
  }
}

TEST_CASE("a close reason must fit a close frame") {
  std::string ok = R"({"op":"disconnect","org":"acme","reason":")" + std::string(123, 'r') + "\"}";
  CHECK(accepted(ok).reason.size() == 123);
  std::string over =
      R"({"op":"disconnect","org":"acme","reason":")" + std::string(124, 'r') + "\"}";
  CHECK(refusal_of(over) == ControlRefusal::bad_field);
}

TEST_CASE("disconnect by org and user carries its code and reason") {
  ControlCommand c =
      accepted(R"({"op":"disconnect","org":"acme","user":"alice","code":4003,"reason":"revoked"})");
  CHECK(c.op == ControlOp::disconnect);
  CHECK(c.who.org == "acme");
  CHECK(c.who.user == "alice");
  CHECK(!c.who.conn);
  CHECK(!c.who.all);
  CHECK(c.code == 4003);
  CHECK(c.reason == "revoked");
  ControlCommand d = accepted(R"({"op":"disconnect","conn":"0a1b2c3d-7"})");
  CHECK(d.code == 1008);
  CHECK(d.reason == "disconnected");
}

TEST_CASE("reconnect takes its own delay and jitter, within ten minutes") {
  ControlCommand c = accepted(R"({"op":"reconnect","all":true,"after_ms":0,"jitter_ms":2000})");
  CHECK(c.op == ControlOp::reconnect);
  CHECK(c.who.all);
  CHECK(c.after_ms == 0u);
  CHECK(c.jitter_ms == 2000u);
  CHECK(!accepted(R"({"op":"reconnect","sidecar":"0a1b2c3d"})").after_ms);
  CHECK(refusal_of(R"({"op":"reconnect","all":true,"jitter_ms":600001})") ==
        ControlRefusal::bad_field);
  CHECK(refusal_of(R"({"op":"reconnect","all":true,"after_ms":-1})") == ControlRefusal::bad_field);
}

TEST_CASE("with a secret, only a command signed over the exact bytes of cmd is accepted") {
  const std::string secret = "s3cret";
  const std::string cmd = R"({"op":"refresh", "org":"acme"})"; // its spacing is part of it
  CHECK(accepted(signed_form(cmd, secret), secret).op == ControlOp::refresh);

  SUBCASE("the plain form is unsigned") {
    CHECK(refusal_of(cmd, secret) == ControlRefusal::unsigned_cmd);
    CHECK(refusal_of(nlohmann::json{{"cmd", cmd}}.dump(), secret) == ControlRefusal::unsigned_cmd);
  }
  SUBCASE("a signature by another secret, of other bytes, or not hex, is bad") {
    CHECK(refusal_of(signed_form(cmd, "other"), secret) == ControlRefusal::bad_signature);
    std::string respaced = R"({"op":"refresh","org":"acme"})";
    std::string moved = nlohmann::json{{"cmd", respaced}, {"sig", hmac_sha256_hex(secret, cmd)}}
                            .dump(); // the same command, re-serialised: not what was signed
    CHECK(refusal_of(moved, secret) == ControlRefusal::bad_signature);
    std::string sig = hmac_sha256_hex(secret, cmd);
    std::string upper = sig;
    for (char &ch : upper)
      ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    CHECK(accepted(nlohmann::json{{"cmd", cmd}, {"sig", upper}}.dump(), secret).op ==
          ControlOp::refresh);
    for (std::string bad : {sig.substr(0, 63), sig + "0", std::string(64, 'g'), std::string()}) {
      CAPTURE(bad);
      CHECK(refusal_of(nlohmann::json{{"cmd", cmd}, {"sig", bad}}.dump(), secret) ==
            ControlRefusal::bad_signature);
    }
    CHECK(refusal_of(nlohmann::json{{"cmd", cmd}, {"sig", 5}}.dump(), secret) ==
          ControlRefusal::bad_signature);
  }
  SUBCASE("the signed form has nothing else in it, and cmd is a string") {
    nlohmann::json extra{{"cmd", cmd}, {"sig", hmac_sha256_hex(secret, cmd)}, {"op", "x"}};
    CHECK(refusal_of(extra.dump(), secret) == ControlRefusal::not_json);
    nlohmann::json object{{"cmd", nlohmann::json::parse(cmd)}, {"sig", "00"}};
    CHECK(refusal_of(object.dump(), secret) == ControlRefusal::not_json);
  }
  SUBCASE("a correctly signed command is still validated") {
    CHECK(refusal_of(signed_form(R"({"op":"refresh"})", secret), secret) ==
          ControlRefusal::no_selector);
    CHECK(refusal_of(signed_form("not json", secret), secret) == ControlRefusal::not_json);
  }
}

TEST_CASE("without a secret both forms are accepted and a sig is not checked") {
  const std::string cmd = R"({"op":"disconnect","user":"alice"})";
  CHECK(accepted(cmd).who.user == "alice");
  CHECK(accepted(signed_form(cmd, "whatever")).who.user == "alice");
  CHECK(accepted(nlohmann::json{{"cmd", cmd}}.dump()).who.user == "alice");
}

TEST_CASE("the HMAC is RFC 4231's test case 2") {
  CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST_CASE("every selector given must hold; all alone selects everyone") {
  ControlSelector who;
  who.all = true;
  CHECK(control_selects(who, "acme", "alice", "ab-1", "ab"));
  who = {};
  who.org = "acme";
  who.user = "alice";
  CHECK(control_selects(who, "acme", "alice", "ab-1", "ab"));
  CHECK(!control_selects(who, "acme", "bob", "ab-1", "ab"));
  CHECK(!control_selects(who, "globex", "alice", "ab-1", "ab"));
  CHECK(!control_selects(who, "acme", "", "ab-1", "ab"));
  who = {};
  who.user = "alice"; // alice in any org
  CHECK(control_selects(who, "globex", "alice", "ab-2", "ab"));
  who = {};
  who.conn = "ab-1";
  CHECK(control_selects(who, "acme", "", "ab-1", "ab"));
  CHECK(!control_selects(who, "acme", "", "ab-10", "ab"));
  who = {};
  who.sidecar = "ab";
  CHECK(control_selects(who, "acme", "", "ab-1", "ab"));
  CHECK(!control_selects(who, "acme", "", "cd-1", "cd"));
}

TEST_CASE("refusal and op names are fixed metric labels") {
  for (size_t i = 0; i < kControlRefusals; ++i)
    CHECK(std::string(control_refusal_name(static_cast<ControlRefusal>(i))) != "?");
  for (size_t i = 0; i < kControlOps; ++i)
    CHECK(std::string(control_op_name(static_cast<ControlOp>(i))) != "?");
}

TEST_CASE("mutated commands never throw, and whatever is accepted keeps the invariants") {
  // A cheap stand-in for a fuzzer: byte flips, cuts and splices of valid commands, signed and
  // plain, against both modes. Deterministic, so a failure names its input.
  const std::string secret = "k";
  std::vector<std::string> seeds = {
      R"({"op":"disconnect","org":"acme","user":"alice","code":4003,"reason":"revoked"})",
      R"({"op":"reconnect","all":true,"after_ms":10,"jitter_ms":20})",
      R"({"op":"refresh","conn":"ab-1","sidecar":"ab"})"};
  for (size_t i = 0, n = seeds.size(); i < n; ++i)
    seeds.push_back(signed_form(seeds[i], secret));
  uint64_t x = 0x9e3779b97f4a7c15ull;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  const char alphabet[] = "{}[]\":,\\0123456789abcdefnulltrue \x00\xff\xc3";
  size_t accepted_n = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string s = seeds[next() % seeds.size()];
    for (uint64_t k = next() % 4; k-- > 0 && !s.empty();) {
      size_t at = next() % s.size();
      switch (next() % 3) {
      case 0:
        s[at] = alphabet[next() % (sizeof alphabet - 1)];
        break;
      case 1:
        s.erase(at, next() % 8);
        break;
      default:
        s.insert(at, seeds[next() % seeds.size()].substr(0, next() % 16));
      }
    }
    for (std::string_view key : {std::string_view(), std::string_view(secret)}) {
      ControlParse p;
      REQUIRE_NOTHROW(p = parse_control(s, key));
      if (!p.cmd)
        continue;
      ++accepted_n;
      CAPTURE(s);
      const ControlCommand &c = *p.cmd;
      CHECK((c.who.all || c.who.org || c.who.user || c.who.conn || c.who.sidecar));
      CHECK(is_control_close_code(c.code));
      CHECK(c.reason.size() <= 123);
      if (!key.empty())
        CHECK(s.find("\"sig\"") != std::string::npos);
    }
  }
  CHECK(accepted_n > 0);
}
