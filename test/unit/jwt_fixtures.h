// The JWT fixtures that unit tests share: test/unit/fixtures/jwt/tokens.json (tokens minted by
// openssl and PyJWT, with the secret, issuer, audience and moment they were minted for), and
// mint(), which signs the few claim sets the fixtures lack with OpenSSL's HMAC under the same
// secret, so that no token a test checks is made by the code under test.
#pragma once

#include "encoding.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fstream>
#include <sstream>
#include <string>

namespace sidecar::test {

inline const nlohmann::json &jwt_fixtures() {
  static const nlohmann::json doc = [] {
    std::string here = __FILE__;
    std::ifstream in(here.substr(0, here.rfind('/')) + "/fixtures/jwt/tokens.json");
    std::stringstream text;
    text << in.rdbuf();
    return nlohmann::json::parse(text.str(), nullptr, false);
  }();
  return doc;
}

inline std::string fixture_token(const std::string &name) {
  const auto &tokens = jwt_fixtures().at("tokens");
  REQUIRE_MESSAGE(tokens.contains(name), "missing fixture token " << name);
  return tokens.at(name).get<std::string>();
}

inline std::string fixture_secret() { return jwt_fixtures().at("secret").get<std::string>(); }

// The unix time the fixture tokens were minted for: hs256_ok is valid then, hs256_expired not.
inline int64_t fixture_now() { return jwt_fixtures().at("now").get<int64_t>(); }

// An HS256 token over these claims, signed by OpenSSL with the fixture secret.
inline std::string mint(const nlohmann::json &claims) {
  std::string signing_input =
      base64url_encode(R"({"alg":"HS256","typ":"JWT"})") + "." + base64url_encode(claims.dump());
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  std::string key = fixture_secret();
  REQUIRE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
               reinterpret_cast<const unsigned char *>(signing_input.data()), signing_input.size(),
               mac, &mac_len) != nullptr);
  return signing_input + "." +
         base64url_encode(std::string_view(reinterpret_cast<const char *>(mac), mac_len));
}

} // namespace sidecar::test
