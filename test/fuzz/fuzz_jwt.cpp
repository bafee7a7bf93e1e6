// Fuzzes the JWT verifier with what strangers send before authentication: arbitrary token text.
//
// Two verifiers are set up once, as a config would: "main" with an HS256 secret plus a JWKS file
// holding an RSA key (kid r1, RS256) and an EC P-256 key (kid e1, ES256), issuer and audience
// checked; "pem" with one RSA public key file and HS256 also allowed, which is the
// algorithm-confusion setup (an HS256 token whose HMAC key is the public PEM text must fail).
// The keys are test-only (jwt_keys.h).
//
// Input layout: byte 0 bit 0 picks the verifier; the rest is the token.
//
// Invariants, each an abort when broken:
// - verify never crashes and every refusal has a reason;
// - nothing is accepted that was not signed by the configured key: an accepted token is checked
//   again here, apart from jwt.cpp, with OpenSSL (HMAC-SHA256 with the secret, RSA PKCS#1 v1.5,
//   ECDSA P-256 on r||s), and its alg must be one the verifier holds a key for;
// - an accepted token's claims hold: exp/nbf within the leeway and, for "main", iss and aud.
//
// With FUZZ_JWT_WRITE_SEEDS=<dir> the target writes its seed tokens (signed with the test keys)
// to <dir> and exits; test/fuzz/corpus/jwt/ was made that way.
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_stats.h"
#include "jwt.h"
#include "jwt_keys.h"

namespace {

enum : size_t {
  kAcceptedHs256,
  kAcceptedRs256,
  kAcceptedEs256,
  kAcceptedPem,
  kBadSignature,
  kAlgNone,
  kConfusionRefused,
  kExpired,
  kOtherRefusal
};
fuzz::Stats stats("fuzz_jwt", {{"accepted_hs256", true},
                               {"accepted_rs256", true},
                               {"accepted_es256", true},
                               {"accepted_pem_rs256", true},
                               {"refused_bad_signature", true},
                               {"refused_alg_none", true},
                               {"refused_hs256_with_public_key", true},
                               {"refused_expired", true},
                               {"refused_other", false}});

constexpr int64_t kNow = 1700000000;
constexpr uint32_t kLeeway = 30;
constexpr char kSecret[] = "fuzz-secret-0123456789abcdef-0123456789";
constexpr char kIssuer[] = "fuzz-iss";
constexpr char kAudience[] = "fuzz-aud";

[[noreturn]] void broken(const char *what, std::string_view token) {
  std::fprintf(stderr, "fuzz_jwt: %s (token \"%.*s\")\n", what,
               static_cast<int>(std::min<size_t>(token.size(), 300)), token.data());
  std::abort();
}

using Pkey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

struct Setup {
  Pkey rsa{nullptr, &EVP_PKEY_free};
  Pkey ec{nullptr, &EVP_PKEY_free};
  std::string rsa_public_pem;
  std::unique_ptr<sidecar::JwtVerifier> main;
  std::unique_ptr<sidecar::JwtVerifier> pem;
};
Setup *setup = nullptr;

Pkey read_private(const char *pem) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  Pkey k(PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr), &EVP_PKEY_free);
  BIO_free(bio);
  if (!k)
    broken("cannot read a test key", "");
  return k;
}

std::string b64url(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : in) {
    acc = (acc << 8) | static_cast<unsigned char>(ch);
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0)
    out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return out;
}

// Strict base64url without padding; unused trailing bits are ignored, as most decoders do.
std::optional<std::string> unb64url(std::string_view in) {
  if (in.size() % 4 == 1)
    return std::nullopt;
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '-')
      v = 62;
    else if (c == '_')
      v = 63;
    else
      return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::string bn_param(EVP_PKEY *k, const char *name, int pad) {
  BIGNUM *bn = nullptr;
  if (EVP_PKEY_get_bn_param(k, name, &bn) != 1)
    broken("cannot read a key parameter", name);
  std::string out(static_cast<size_t>(pad > 0 ? pad : BN_num_bytes(bn)), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char *>(out.data()), static_cast<int>(out.size()));
  BN_free(bn);
  return out;
}

std::string public_pem(EVP_PKEY *k) {
  BIO *bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, k);
  char *p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  std::string out(p, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

std::string write_temp(const std::string &text) {
  char path[] = "/tmp/fuzz_jwt.XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0 || write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    broken("cannot write a temp file", path);
  close(fd);
  return path;
}

std::string hmac256(std::string_view key, std::string_view msg) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char *>(msg.data()), msg.size(), out, &len);
  return std::string(reinterpret_cast<char *>(out), len);
}

// ES256 signatures in a JWT are r||s, 32 bytes each; OpenSSL speaks DER.
std::string der_to_raw(const std::string &der) {
  const auto *p = reinterpret_cast<const unsigned char *>(der.data());
  ECDSA_SIG *sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
  std::string out(64, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(sig), reinterpret_cast<unsigned char *>(out.data()), 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(sig), reinterpret_cast<unsigned char *>(out.data()) + 32, 32);
  ECDSA_SIG_free(sig);
  return out;
}

std::optional<std::string> raw_to_der(std::string_view raw) {
  if (raw.size() != 64)
    return std::nullopt;
  ECDSA_SIG *sig = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(reinterpret_cast<const unsigned char *>(raw.data()), 32, nullptr);
  BIGNUM *s = BN_bin2bn(reinterpret_cast<const unsigned char *>(raw.data()) + 32, 32, nullptr);
  ECDSA_SIG_set0(sig, r, s);
  unsigned char *der = nullptr;
  int n = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  if (n <= 0)
    return std::nullopt;
  std::string out(reinterpret_cast<char *>(der), static_cast<size_t>(n));
  OPENSSL_free(der);
  return out;
}

std::string sign(EVP_PKEY *k, std::string_view msg) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  size_t n = 0;
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, k);
  EVP_DigestSign(ctx, nullptr, &n, reinterpret_cast<const unsigned char *>(msg.data()), msg.size());
  std::string out(n, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char *>(out.data()), &n,
                 reinterpret_cast<const unsigned char *>(msg.data()), msg.size());
  out.resize(n);
  EVP_MD_CTX_free(ctx);
  return out;
}

bool verify_with(EVP_PKEY *k, std::string_view msg, std::string_view sig) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, k) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char *>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char *>(msg.data()), msg.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

void init_setup() {
  setup = new Setup;
  setup->rsa = read_private(kRsaPrivatePem);
  setup->ec = read_private(kEcPrivatePem);
  setup->rsa_public_pem = public_pem(setup->rsa.get());

  nlohmann::json jwks = {
      {"keys",
       {{{"kty", "RSA"},
         {"kid", "r1"},
         {"alg", "RS256"},
         {"n", b64url(bn_param(setup->rsa.get(), OSSL_PKEY_PARAM_RSA_N, 0))},
         {"e", b64url(bn_param(setup->rsa.get(), OSSL_PKEY_PARAM_RSA_E, 0))}},
        {{"kty", "EC"},
         {"kid", "e1"},
         {"crv", "P-256"},
         {"x", b64url(bn_param(setup->ec.get(), OSSL_PKEY_PARAM_EC_PUB_X, 32))},
         {"y", b64url(bn_param(setup->ec.get(), OSSL_PKEY_PARAM_EC_PUB_Y, 32))}}}}};
  std::string jwks_path = write_temp(jwks.dump());
  std::string pem_path = write_temp(setup->rsa_public_pem);

  sidecar::JwtConfig main_cfg;
  main_cfg.algorithms = {"HS256", "RS256", "ES256"};
  main_cfg.secret = kSecret;
  main_cfg.jwks_file = jwks_path;
  main_cfg.issuer = kIssuer;
  main_cfg.audience = kAudience;
  main_cfg.leeway_s = kLeeway;
  std::string error;
  setup->main = sidecar::JwtVerifier::create(main_cfg, error);
  if (!setup->main)
    broken("cannot create the main verifier", error);

  sidecar::JwtConfig pem_cfg;
  pem_cfg.algorithms = {"RS256", "HS256"};
  pem_cfg.public_key_file = pem_path;
  pem_cfg.leeway_s = kLeeway;
  setup->pem = sidecar::JwtVerifier::create(pem_cfg, error);
  if (!setup->pem)
    broken("cannot create the pem verifier", error);
  unlink(jwks_path.c_str());
  unlink(pem_path.c_str());
}

// ------------------------------------------------------------------ seeds

std::string make_token(const nlohmann::json &header, const nlohmann::json &claims,
                       const std::string &how) {
  std::string input = b64url(header.dump()) + "." + b64url(claims.dump());
  std::string sig;
  if (how == "hs256")
    sig = hmac256(kSecret, input);
  else if (how == "hs256-public-pem")
    sig = hmac256(setup->rsa_public_pem, input);
  else if (how == "rs256")
    sig = sign(setup->rsa.get(), input);
  else if (how == "es256")
    sig = der_to_raw(sign(setup->ec.get(), input));
  else if (how == "es256-der")
    sig = sign(setup->ec.get(), input);
  return input + "." + b64url(sig);
}

void write_seeds(const std::string &dir) {
  const nlohmann::json good = {{"sub", "u1"},      {"org", "acme"},     {"iss", kIssuer},
                               {"aud", kAudience}, {"exp", 4102444800}, {"iat", kNow - 60}};
  nlohmann::json expired = good;
  expired["exp"] = kNow - 3600;
  const nlohmann::json plain = {{"sub", "u2"}, {"org", "acme"}, {"exp", 4102444800}};
  struct Seed {
    const char *name;
    char verifier; // '\0' main, '\1' pem
    std::string token;
  };
  std::string bad = make_token({{"alg", "HS256"}, {"typ", "JWT"}}, good, "hs256");
  bad[bad.size() - 2] = bad[bad.size() - 2] == 'A' ? 'B' : 'A';
  std::vector<Seed> seeds = {
      {"hs256_valid", 0, make_token({{"alg", "HS256"}, {"typ", "JWT"}}, good, "hs256")},
      {"rs256_valid", 0, make_token({{"alg", "RS256"}, {"kid", "r1"}}, good, "rs256")},
      {"es256_valid", 0, make_token({{"alg", "ES256"}, {"kid", "e1"}}, good, "es256")},
      {"pem_rs256_valid", 1, make_token({{"alg", "RS256"}}, plain, "rs256")},
      {"hs256_bad_signature", 0, bad},
      {"alg_none", 0, b64url(R"({"alg":"none"})") + "." + b64url(good.dump()) + "."},
      {"alg_none_case", 0, b64url(R"({"alg":"nOnE"})") + "." + b64url(good.dump()) + ".x"},
      {"hs256_with_public_pem", 1, make_token({{"alg", "HS256"}}, plain, "hs256-public-pem")},
      {"hs256_expired", 0, make_token({{"alg", "HS256"}}, expired, "hs256")},
      {"es256_der_signature", 0, make_token({{"alg", "ES256"}, {"kid", "e1"}}, good, "es256-der")},
      {"rs256_missing_kid", 0, make_token({{"alg", "RS256"}}, good, "rs256")},
      {"rs256_kid_of_ec_key", 0, make_token({{"alg", "RS256"}, {"kid", "e1"}}, good, "rs256")},
      {"hs256_crit", 0, make_token({{"alg", "HS256"}, {"crit", {"x"}}}, good, "hs256")},
      {"hs256_wrong_audience", 0,
       make_token({{"alg", "HS256"}}, nlohmann::json{{"aud", "other"}, {"iss", kIssuer}}, "hs256")},
  };
  for (const auto &s : seeds) {
    std::ofstream f(dir + "/" + s.name, std::ios::binary);
    f.put(s.verifier);
    f << s.token;
  }
  std::fprintf(stderr, "fuzz_jwt: wrote %zu seeds to %s\n", seeds.size(), dir.c_str());
}

// ------------------------------------------------------------------ the independent check

void check_accepted(std::string_view token, bool main, const nlohmann::json &claims) {
  size_t d1 = token.find('.');
  size_t d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
    broken("accepted a token that is not three parts", token);
  auto header_raw = unb64url(token.substr(0, d1));
  auto sig = unb64url(token.substr(d2 + 1));
  if (!header_raw || !sig)
    broken("accepted a token that is not base64url", token);
  auto header = nlohmann::json::parse(*header_raw, nullptr, false);
  if (!header.is_object() || !header.contains("alg") || !header["alg"].is_string())
    broken("accepted a token without a string alg", token);
  std::string alg = header["alg"];
  std::string_view input = token.substr(0, d2);
  bool good = false;
  if (alg == "HS256") {
    good = main && hmac256(kSecret, input) == *sig; // "pem" holds no HMAC key at all
    stats.hit(kAcceptedHs256);
  } else if (alg == "RS256") {
    good = verify_with(setup->rsa.get(), input, *sig);
    stats.hit(main ? kAcceptedRs256 : kAcceptedPem);
  } else if (alg == "ES256") {
    auto der = raw_to_der(*sig);
    good = main && der && verify_with(setup->ec.get(), input, *der);
    stats.hit(kAcceptedEs256);
  }
  if (!good)
    broken("accepted a token that the configured key did not sign", token);

  auto num = [&](const char *name) -> std::optional<double> {
    if (!claims.contains(name))
      return std::nullopt;
    if (!claims[name].is_number())
      broken("accepted a token with a non-numeric time claim", token);
    return claims[name].get<double>();
  };
  if (auto exp = num("exp"); exp && *exp <= double(kNow) - kLeeway)
    broken("accepted an expired token", token);
  if (auto nbf = num("nbf"); nbf && *nbf > double(kNow) + kLeeway)
    broken("accepted a token before nbf", token);
  if (main) {
    if (!claims.contains("iss") || claims["iss"] != kIssuer)
      broken("accepted a token from another issuer", token);
    auto auds = sidecar::claim_strings(claims, "aud");
    if (std::find(auds.begin(), auds.end(), kAudience) == auds.end())
      broken("accepted a token for another audience", token);
  }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  init_setup();
  if (const char *dir = std::getenv("FUZZ_JWT_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  const bool main = (data[0] & 1) == 0;
  std::string_view token(reinterpret_cast<const char *>(data + 1), size - 1);
  const sidecar::JwtVerifier &v = main ? *setup->main : *setup->pem;
  sidecar::JwtVerifyResult r = v.verify(token, kNow);
  if (r.ok) {
    check_accepted(token, main, r.claims);
    return 0;
  }
  if (r.error.empty())
    broken("a refusal without a reason", token);
  if (r.error == "bad signature")
    stats.hit(kBadSignature);
  else if (r.error == "alg none")
    stats.hit(kAlgNone);
  else if (r.error == "expired")
    stats.hit(kExpired);
  else if (!main && r.error == "no key for alg")
    stats.hit(kConfusionRefused);
  else
    stats.hit(kOtherRefusal);
  return 0;
}
