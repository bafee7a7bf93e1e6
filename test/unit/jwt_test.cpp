// JwtVerifier and claim_strings against tokens minted by openssl and PyJWT
// (test/unit/fixtures/make_jwt_fixtures.sh), never by our own code.
#include "jwt.h"

#include "encoding.h"

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

using namespace sidecar;

namespace {

std::string fixture(const std::string &name) {
  std::string here = __FILE__;
  return here.substr(0, here.rfind('/')) + "/fixtures/jwt/" + name;
}

const nlohmann::json &fixtures() {
  static const nlohmann::json doc = [] {
    std::ifstream in(fixture("tokens.json"));
    std::stringstream text;
    text << in.rdbuf();
    return nlohmann::json::parse(text.str(), nullptr, false);
  }();
  return doc;
}

std::string token(const std::string &name) {
  const auto &tokens = fixtures().at("tokens");
  REQUIRE_MESSAGE(tokens.contains(name), "missing fixture token " << name);
  return tokens.at(name).get<std::string>();
}

int64_t now() { return fixtures().at("now").get<int64_t>(); }

// The HMAC secret, issuer and audience that the fixtures were minted with.
JwtConfig hmac_config() {
  JwtConfig cfg;
  cfg.algorithms = {"HS256", "HS384", "HS512"};
  cfg.secret = fixtures().at("secret").get<std::string>();
  cfg.issuer = fixtures().at("issuer").get<std::string>();
  cfg.audience = fixtures().at("audience").get<std::string>();
  return cfg;
}

JwtConfig key_file_config(const std::string &file, std::vector<std::string> algorithms) {
  JwtConfig cfg;
  cfg.algorithms = std::move(algorithms);
  cfg.public_key_file = fixture(file);
  return cfg;
}

JwtConfig jwks_config(const std::string &file, std::vector<std::string> algorithms) {
  JwtConfig cfg;
  cfg.algorithms = std::move(algorithms);
  cfg.jwks_file = fixture(file);
  return cfg;
}

std::unique_ptr<JwtVerifier> make(const JwtConfig &cfg) {
  std::string error;
  auto v = JwtVerifier::create(cfg, error);
  REQUIRE_MESSAGE(v != nullptr, error);
  CHECK(error.empty());
  return v;
}

void check_accepted(const JwtVerifier &v, const std::string &name, const char *sub = "user-1") {
  CAPTURE(name);
  auto r = v.verify(token(name), now());
  CHECK_MESSAGE(r.ok, r.error);
  CHECK(r.error.empty());
  CHECK(r.claims.value("sub", "") == sub);
  CHECK(r.claims.value("org", "") == "acme");
}

void check_refused(const JwtVerifier &v, std::string_view tok, const std::string &reason) {
  auto r = v.verify(tok, now());
  CHECK_FALSE(r.ok);
  CHECK(r.error == reason);
  CHECK(r.claims.is_null());
}

void check_refused_fixture(const JwtVerifier &v, const std::string &name,
                           const std::string &reason) {
  CAPTURE(name);
  check_refused(v, token(name), reason);
}

std::string create_error(const JwtConfig &cfg) {
  std::string error;
  auto v = JwtVerifier::create(cfg, error);
  CHECK(v == nullptr);
  CHECK_FALSE(error.empty());
  return error;
}

std::string b64json(const std::string &json) { return base64url_encode(json); }

} // namespace

TEST_CASE("HS256, HS384 and HS512 tokens from PyJWT are accepted with their claims") {
  auto v = make(hmac_config());
  for (auto name : {"hs256_ok", "hs384_ok", "hs512_ok"})
    check_accepted(*v, name);
  auto r = v->verify(token("hs256_ok"), now());
  REQUIRE(r.ok);
  CHECK(r.claims.at("exp").get<int64_t>() == 4102444800);
  CHECK(r.claims.at("iss") == "https://issuer.test");
}

TEST_CASE("RS256, RS384 and RS512 verify against SPKI PEM, PKCS#1 PEM and a certificate") {
  for (auto file : {"rsa_public.pem", "rsa_public_pkcs1.pem", "rsa_cert.pem"}) {
    CAPTURE(file);
    auto v = make(key_file_config(file, {"RS256", "RS384", "RS512"}));
    for (auto name : {"rs256_ok", "rs384_ok", "rs512_ok"})
      check_accepted(*v, name);
  }
}

TEST_CASE("RS256 signed by another key is a bad signature") {
  auto v = make(key_file_config("rsa2_public.pem", {"RS256"}));
  check_refused_fixture(*v, "rs256_ok", "bad signature");
}

TEST_CASE("ES256 and ES384 verify against their P-256 and P-384 keys") {
  check_accepted(*make(key_file_config("ec256_public.pem", {"ES256"})), "es256_ok");
  check_accepted(*make(key_file_config("ec384_public.pem", {"ES384"})), "es384_ok");
}

TEST_CASE("an ES384 token is refused by a P-256 key and an ES256 token by a P-384 key") {
  check_refused_fixture(*make(key_file_config("ec256_public.pem", {"ES256", "ES384"})), "es384_ok",
                        "key does not match alg");
  check_refused_fixture(*make(key_file_config("ec384_public.pem", {"ES256", "ES384"})), "es256_ok",
                        "key does not match alg");
}

TEST_CASE("an ES256 signature in DER form or of the wrong length is refused") {
  auto v = make(key_file_config("ec256_public.pem", {"ES256"}));
  check_refused_fixture(*v, "es256_der", "bad signature");
  std::string good = token("es256_ok");
  size_t dot = good.rfind('.');
  std::string sig = base64url_decode(good.substr(dot + 1)).value();
  REQUIRE(sig.size() == 64);
  std::string head = good.substr(0, dot + 1);
  check_refused(*v, head + base64url_encode(sig.substr(0, 63)), "bad signature");
  check_refused(*v, head + base64url_encode(sig + '\0'), "bad signature");
  // Swapping r and s keeps the length but not the meaning.
  check_refused(*v, head + base64url_encode(sig.substr(32) + sig.substr(0, 32)), "bad signature");
}

TEST_CASE("alg none is refused in every spelling, and cannot be configured") {
  auto v = make(hmac_config());
  check_refused_fixture(*v, "none", "alg none");
  check_refused_fixture(*v, "none_upper", "alg none");
  check_refused_fixture(*v, "none_mixed_signed", "alg none");
  JwtConfig cfg = hmac_config();
  cfg.algorithms = {"none"};
  create_error(cfg);
}

TEST_CASE("an algorithm that is not in the configured list is refused") {
  JwtConfig cfg = hmac_config();
  cfg.algorithms = {"HS384"};
  auto v = make(cfg);
  check_refused_fixture(*v, "hs256_ok", "alg not allowed");
  check_refused_fixture(*v, "rs256_ok", "alg not allowed");
  check_accepted(*v, "hs384_ok");
}

TEST_CASE("an HS256 token keyed with the RSA public key PEM is refused (alg confusion)") {
  // Only a public key is configured, yet HS256 is allowed: the PEM must not become a secret.
  auto v = make(key_file_config("rsa_public.pem", {"HS256", "RS256"}));
  check_refused_fixture(*v, "hs256_confusion", "no key for alg");
  check_accepted(*v, "rs256_ok");
  // The same attack naming an RSA key of a JWKS by kid.
  auto set = make(jwks_config("jwks.json", {"HS256", "RS256"}));
  check_refused_fixture(*set, "hs256_confusion_kid", "key does not match alg");
  // And a PEM pasted into the secret is refused when the verifier is built.
  JwtConfig cfg = hmac_config();
  std::ifstream in(fixture("rsa_public.pem"));
  std::stringstream pem;
  pem << in.rdbuf();
  cfg.secret = pem.str();
  CHECK(create_error(cfg).find("PEM") != std::string::npos);
}

TEST_CASE("a tampered payload or a wrong secret is a bad signature") {
  check_refused_fixture(*make(key_file_config("rsa_public.pem", {"RS256"})), "rs256_tampered",
                        "bad signature");
  check_refused_fixture(*make(hmac_config()), "hs256_wrong_secret", "bad signature");
}

TEST_CASE("exp, nbf and iat are checked against now with leeway") {
  auto v = make(hmac_config()); // leeway 30 s
  check_refused_fixture(*v, "hs256_expired", "expired");
  check_accepted(*v, "hs256_exp_in_leeway"); // expired 10 s ago
  check_refused_fixture(*v, "hs256_nbf_future", "not yet valid");
  check_accepted(*v, "hs256_nbf_in_leeway"); // valid 10 s from now
  check_refused_fixture(*v, "hs256_iat_future", "issued in the future");
  check_accepted(*v, "hs256_exp_float");

  JwtConfig strict = hmac_config();
  strict.leeway_s = 0;
  auto s = make(strict);
  check_refused_fixture(*s, "hs256_exp_in_leeway", "expired");
  check_refused_fixture(*s, "hs256_exp_now", "expired");
  check_refused_fixture(*s, "hs256_nbf_in_leeway", "not yet valid");
  // One second before its exp the same token is still valid.
  CHECK(s->verify(token("hs256_exp_now"), now() - 1).ok);
}

TEST_CASE("exp and nbf that are not numbers are refused") {
  auto v = make(hmac_config());
  check_refused_fixture(*v, "hs256_exp_string", "exp is not a number");
  check_refused_fixture(*v, "hs256_nbf_string", "nbf is not a number");
}

TEST_CASE("iss and aud are checked only when configured; aud may be a list") {
  auto v = make(hmac_config());
  check_refused_fixture(*v, "hs256_wrong_iss", "bad issuer");
  check_refused_fixture(*v, "hs256_no_iss", "bad issuer");
  check_refused_fixture(*v, "hs256_wrong_aud", "bad audience");
  check_refused_fixture(*v, "hs256_aud_list_wrong", "bad audience");
  check_refused_fixture(*v, "hs256_minimal", "bad issuer");
  check_accepted(*v, "hs256_aud_list");

  JwtConfig open = hmac_config();
  open.issuer.clear();
  open.audience.clear();
  auto o = make(open);
  check_accepted(*o, "hs256_wrong_iss");
  check_accepted(*o, "hs256_wrong_aud");
  auto r = o->verify(token("hs256_minimal"), now());
  CHECK(r.ok);
  CHECK(r.claims == nlohmann::json{{"sub", "user-1"}});
}

TEST_CASE("structurally broken tokens are refused with a reason") {
  auto v = make(hmac_config());
  std::string good = token("hs256_ok");
  size_t dot1 = good.find('.');
  size_t dot2 = good.rfind('.');
  std::string payload = good.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string sig = good.substr(dot2 + 1);
  struct Case {
    std::string token;
    std::string reason;
  };
  const Case cases[] = {
      {"", "malformed token"},
      {"abc", "malformed token"},
      {good.substr(0, dot2), "malformed token"},
      {good + ".x", "malformed token"},
      {good + "." + sig, "malformed token"},
      {"!!!." + payload + "." + sig, "malformed header"},
      {"." + payload + "." + sig, "malformed header"},
      {b64json("{\"alg\":\"HS256\"") + "." + payload + "." + sig, "malformed header"},
      {b64json("[\"HS256\"]") + "." + payload + "." + sig, "malformed header"},
      {b64json("{}") + "." + payload + "." + sig, "malformed header"},
      {b64json("{\"alg\":256}") + "." + payload + "." + sig, "malformed header"},
      {b64json("{\"alg\":\"HS256\",\"kid\":7}") + "." + payload + "." + sig, "malformed header"},
      {good.substr(0, dot2 + 1), "missing signature"},
      {good.substr(0, dot2 + 1) + "a*b", "malformed signature"},
      {good.substr(0, dot1 + 1) + "%%%." + sig, "malformed payload"},
      {good.substr(0, dot1 + 1) + "." + sig, "malformed payload"},
  };
  for (const auto &c : cases) {
    CAPTURE(c.token);
    check_refused(*v, c.token, c.reason);
  }
  check_refused_fixture(*v, "hs256_header_array", "malformed header");
  check_refused_fixture(*v, "hs256_header_alg_number", "malformed header");
  // These are correctly signed, so only the JSON check can catch them.
  check_refused_fixture(*v, "hs256_payload_not_json", "malformed payload");
  check_refused_fixture(*v, "hs256_payload_array", "malformed payload");
}

TEST_CASE("a crit header is refused because no extension is understood") {
  check_refused_fixture(*make(hmac_config()), "hs256_crit", "unsupported crit header");
}

TEST_CASE("tokens longer than max_token_bytes are refused before parsing") {
  JwtConfig cfg = hmac_config();
  std::string good = token("hs256_ok");
  cfg.max_token_bytes = static_cast<uint32_t>(good.size());
  check_accepted(*make(cfg), "hs256_ok");
  cfg.max_token_bytes -= 1;
  check_refused(*make(cfg), good, "token too long");
}

TEST_CASE("a JWKS picks the key named by kid") {
  auto v = make(jwks_config("jwks.json", {"RS256", "ES256"}));
  check_accepted(*v, "rs256_kid1");
  check_accepted(*v, "rs256_kid2", "user-2");
  check_accepted(*v, "es256_kid");
  check_refused_fixture(*v, "rs256_kid_swapped", "bad signature");
  check_refused_fixture(*v, "rs256_kid_unknown", "unknown kid");
  check_refused_fixture(*v, "rs256_kid_ec", "key does not match alg");
  check_refused_fixture(*v, "rs256_ok", "missing kid");
}

TEST_CASE("a one-key JWKS serves tokens without kid") {
  auto v = make(jwks_config("jwks_one.json", {"RS256"}));
  check_accepted(*v, "rs256_key2_nokid", "user-2");
  check_accepted(*v, "rs256_kid2", "user-2");
  check_refused_fixture(*v, "rs256_ok", "bad signature");
  check_refused_fixture(*v, "rs256_kid1", "unknown kid");
}

TEST_CASE("an oct key in a JWKS verifies HS256") {
  auto v = make(jwks_config("jwks_oct.json", {"HS256"}));
  check_accepted(*v, "hs256_kid_hs1");
  check_accepted(*v, "hs256_ok");
  check_refused_fixture(*v, "hs256_wrong_secret", "bad signature");
}

TEST_CASE("a JWKS skips encryption keys and key types it cannot use") {
  auto v = make(jwks_config("jwks_skip.json", {"RS256"}));
  check_accepted(*v, "rs256_kid2", "user-2");
  check_refused_fixture(*v, "rs256_kid1", "unknown kid");
}

TEST_CASE("unusable keys, files and algorithm lists fail create with a reason") {
  CHECK(create_error(key_file_config("no_such_file.pem", {"RS256"})).find("cannot open") !=
        std::string::npos);
  create_error(key_file_config("garbage.pem", {"RS256"}));
  CHECK(create_error(key_file_config("rsa1024_public.pem", {"RS256"})).find("2048") !=
        std::string::npos);
  create_error(jwks_config("jwks_bad_point.json", {"ES256"}));
  create_error(jwks_config("rsa_public.pem", {"RS256"}));
  create_error(jwks_config("no_such_file.json", {"RS256"}));
  create_error(JwtConfig{}); // no key at all
  JwtConfig cfg = hmac_config();
  cfg.algorithms = {"PS256"};
  CHECK(create_error(cfg).find("PS256") != std::string::npos);
  cfg.algorithms = {};
  create_error(cfg);
  cfg.algorithms = {"hs256"}; // names are case-sensitive (RFC 7518)
  create_error(cfg);
}

TEST_CASE("claim_strings reads a string or a list of strings and nothing else") {
  auto v = make(hmac_config());
  auto r = v->verify(token("hs256_org_list"), now());
  REQUIRE(r.ok);
  CHECK(claim_strings(r.claims, "org") == std::vector<std::string>{"acme", "globex"});
  CHECK(claim_strings(r.claims, "sub") == std::vector<std::string>{"user-1"});
  CHECK(claim_strings(r.claims, "exp").empty());
  CHECK(claim_strings(r.claims, "missing").empty());
  nlohmann::json claims = nlohmann::json::object();
  claims["mixed"] = nlohmann::json::array({"a", 1});
  claims["obj"] = nlohmann::json::object({{"a", "b"}});
  claims["empty"] = nlohmann::json::array();
  CHECK(claim_strings(claims, "mixed").empty());
  CHECK(claim_strings(claims, "obj").empty());
  CHECK(claim_strings(claims, "empty").empty());
  CHECK(claim_strings(nlohmann::json::array(), "org").empty());
}

TEST_CASE("an EC JWK whose coordinate lost its leading zero byte still verifies") {
  // PyJWT before 2.7 publishes x and y without leading zero bytes; identity providers built on it
  // do too. The coordinate is padded back to the field size, and the point is still checked.
  auto v = make(jwks_config("jwks_short_coord.json", {"ES256"}));
  REQUIRE(v);
  std::ifstream in(fixture("short_coord_token.txt"));
  std::string t;
  std::getline(in, t);
  JwtVerifyResult r = v->verify(t, 1700000000);
  CHECK_MESSAGE(r.ok, r.error);
  CHECK(r.claims.value("sub", "") == "zed");
}
