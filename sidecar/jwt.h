// JWT verification (RFC 7519 / 7515 compact form): keys loaded once from JwtConfig, then pure
// signature and claim checks per token with no I/O, so a handshake can call it inline.
#pragma once

#include "config.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sidecar {

struct JwtVerifyResult {
  bool ok = false;
  // Short and safe to log ("expired", "bad signature", "alg not allowed"); it never echoes any
  // part of the token, because tokens are credentials.
  std::string error;
  nlohmann::json claims; // the payload object when ok
};

struct JwtKey; // one loaded key (HMAC secret, RSA or EC public key); defined in jwt.cpp

class JwtVerifier {
public:
  // Loads keys from cfg: secret (HS*), public_key_file (PEM RSA or EC public key, PKCS#1 RSA
  // public key, or a certificate) and jwks_file (RFC 7517 set; keys of kty RSA, EC P-256/P-384 and
  // oct, chosen by the token header's "kid"; a token without kid may use the only key of a one-key
  // set). Returns nullptr and sets error when a key, a file or cfg.algorithms is unusable.
  static std::unique_ptr<JwtVerifier> create(const JwtConfig &cfg, std::string &error);

  // Checks structure, algorithm, key, signature and the exp/nbf/iat/iss/aud claims against
  // now_unix_s. Never throws; every refusal has ok == false and a reason.
  JwtVerifyResult verify(std::string_view token, int64_t now_unix_s) const;

  ~JwtVerifier();
  JwtVerifier(const JwtVerifier &) = delete;
  JwtVerifier &operator=(const JwtVerifier &) = delete;

private:
  JwtVerifier();
  JwtVerifyResult verify_unchecked(std::string_view token, int64_t now_unix_s) const;
  const JwtKey *select_key(const std::string &alg, const std::string *kid,
                           std::string &error) const;

  JwtConfig cfg_;
  std::vector<std::unique_ptr<JwtKey>> static_keys_; // from secret and public_key_file
  std::vector<std::unique_ptr<JwtKey>> jwks_keys_;   // from jwks_file
};

// A claim as a list of strings: "acme" -> {"acme"}, ["a","b"] -> {"a","b"}; a missing claim, any
// other type, or a list holding anything but strings -> {}.
std::vector<std::string> claim_strings(const nlohmann::json &claims, const std::string &name);

} // namespace sidecar
