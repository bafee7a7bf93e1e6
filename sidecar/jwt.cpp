// JWT verification on OpenSSL 3 EVP and nlohmann::json; see jwt.h. Keys are parsed once in
// create(); verify() touches no file and no global state beyond OpenSSL's error queue, which it
// clears so that one bad token cannot leave errors behind for an unrelated caller.
#include "jwt.h"

#include "encoding.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>
#include <optional>
#include <sstream>

namespace sidecar {

enum class KeyKind { hmac, rsa, ec };

// A key as the verifier uses it. Only kind hmac has a secret and only rsa/ec have a pkey, so
// PEM text can never reach HMAC as a key.
struct JwtKey {
  KeyKind kind = KeyKind::hmac;
  std::string kid;     // empty when the key has none
  std::string alg;     // a JWKS key's "alg"; empty: any alg of the key's kind
  std::string secret;  // hmac only
  size_t ec_coord = 0; // ec only: 32 for P-256, 48 for P-384
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> pkey{nullptr, &EVP_PKEY_free};
};

namespace {

// Frees an OpenSSL object with its own free function when the owner goes out of scope.
template <auto Free> struct Deleter {
  template <class T> void operator()(T *p) const { Free(p); }
};
template <class T, auto Free> using Owned = std::unique_ptr<T, Deleter<Free>>;
using Bld = Owned<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>;
using Bignum = Owned<BIGNUM, BN_free>;

struct AlgInfo {
  std::string_view name;
  KeyKind kind;
  const EVP_MD *(*md)();
  size_t ec_coord; // bytes per coordinate (and per r, s) for ES*, 0 otherwise
};

constexpr std::array<AlgInfo, 8> kAlgs = {{
    {"HS256", KeyKind::hmac, &EVP_sha256, 0},
    {"HS384", KeyKind::hmac, &EVP_sha384, 0},
    {"HS512", KeyKind::hmac, &EVP_sha512, 0},
    {"RS256", KeyKind::rsa, &EVP_sha256, 0},
    {"RS384", KeyKind::rsa, &EVP_sha384, 0},
    {"RS512", KeyKind::rsa, &EVP_sha512, 0},
    {"ES256", KeyKind::ec, &EVP_sha256, 32},
    {"ES384", KeyKind::ec, &EVP_sha384, 48},
}};

// RFC 7518 section 3.3: RSA keys of 2048 bits or more.
constexpr int kMinRsaBits = 2048;
// Key files are small; a larger file is a mistake (a log, a binary), not a key.
constexpr std::streamsize kMaxKeyFileBytes = 1 << 20;

const AlgInfo *find_alg(std::string_view name) {
  for (const auto &a : kAlgs) {
    if (a.name == name)
      return &a;
  }
  return nullptr;
}

bool is_alg_none(std::string_view alg) {
  auto same = [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; };
  return std::equal(alg.begin(), alg.end(), std::string_view("none").begin(),
                    std::string_view("none").end(), same);
}

const unsigned char *bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char *>(s.data());
}

bool read_file(const std::string &path, std::string &out, std::string &error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot open " + path;
    return false;
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  out = buf.str();
  if (static_cast<std::streamsize>(out.size()) > kMaxKeyFileBytes) {
    error = path + ": larger than 1 MiB";
    return false;
  }
  return true;
}

// Fills kind and ec_coord from an RSA or EC public key, refusing sizes and curves JWS does not
// define for the algorithms we support.
bool classify_pkey(JwtKey &key, std::string &error) {
  EVP_PKEY *pkey = key.pkey.get();
  switch (EVP_PKEY_get_base_id(pkey)) {
  case EVP_PKEY_RSA:
    if (EVP_PKEY_get_bits(pkey) < kMinRsaBits) {
      error = "RSA key shorter than 2048 bits";
      return false;
    }
    key.kind = KeyKind::rsa;
    return true;
  case EVP_PKEY_EC: {
    std::array<char, 64> group{};
    size_t len = 0;
    if (EVP_PKEY_get_group_name(pkey, group.data(), group.size(), &len) != 1) {
      error = "EC key without a named curve";
      return false;
    }
    std::string_view name(group.data(), len);
    key.ec_coord = name == "prime256v1" ? 32 : name == "secp384r1" ? 48 : 0;
    if (key.ec_coord == 0) {
      error = "EC curve " + std::string(name) + " is not P-256 or P-384";
      return false;
    }
    key.kind = KeyKind::ec;
    return true;
  }
  default:
    error = "key is neither RSA nor EC";
    return false;
  }
}

// A PEM public key (SubjectPublicKeyInfo or PKCS#1 RSA) or the key of a PEM certificate.
std::unique_ptr<JwtKey> load_pem(const std::string &path, std::string &error) {
  std::string text;
  if (!read_file(path, text, error))
    return nullptr;
  auto key = std::make_unique<JwtKey>();
  EVP_PKEY *pkey = nullptr;
  Owned<OSSL_DECODER_CTX, OSSL_DECODER_CTX_free> dctx(OSSL_DECODER_CTX_new_for_pkey(
      &pkey, "PEM", nullptr, nullptr, EVP_PKEY_PUBLIC_KEY, nullptr, nullptr));
  const unsigned char *data = bytes(text);
  size_t len = text.size();
  if (!dctx || OSSL_DECODER_from_data(dctx.get(), &data, &len) != 1) {
    EVP_PKEY_free(pkey);
    pkey = nullptr;
  }
  if (pkey == nullptr) {
    Owned<BIO, BIO_free> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    Owned<X509, X509_free> cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)
                                    : nullptr);
    if (cert)
      pkey = X509_get_pubkey(cert.get());
  }
  ERR_clear_error();
  if (pkey == nullptr) {
    error = path + ": not a PEM public key or certificate";
    return nullptr;
  }
  key->pkey.reset(pkey);
  if (!classify_pkey(*key, error)) {
    error = path + ": " + error;
    return nullptr;
  }
  return key;
}

// Builds key.pkey of `type` ("RSA" or "EC") from OSSL parameters, then classifies it.
bool set_key_from_params(JwtKey &key, const char *type, OSSL_PARAM_BLD *bld, std::string &error) {
  EVP_PKEY *pkey = nullptr;
  Owned<OSSL_PARAM, OSSL_PARAM_free> params(OSSL_PARAM_BLD_to_param(bld));
  Owned<EVP_PKEY_CTX, EVP_PKEY_CTX_free> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (params && ctx && EVP_PKEY_fromdata_init(ctx.get()) == 1 &&
      EVP_PKEY_fromdata(ctx.get(), &pkey, EVP_PKEY_PUBLIC_KEY, params.get()) == 1) {
    key.pkey.reset(pkey);
    // An EC point that is not on its curve must never become a key.
    Owned<EVP_PKEY_CTX, EVP_PKEY_CTX_free> check(
        EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
    if (!check || EVP_PKEY_public_check(check.get()) != 1)
      key.pkey.reset();
  }
  ERR_clear_error();
  if (!key.pkey) {
    error = std::string(type) + " key is not valid";
    return false;
  }
  return classify_pkey(key, error);
}

std::optional<std::string> b64_member(const nlohmann::json &jwk, const char *name) {
  auto it = jwk.find(name);
  if (it == jwk.end() || !it->is_string())
    return std::nullopt;
  auto decoded = base64url_decode(it->get_ref<const std::string &>());
  if (!decoded || decoded->empty())
    return std::nullopt;
  return decoded;
}

bool jwk_rsa(const nlohmann::json &jwk, JwtKey &key, std::string &error) {
  auto n = b64_member(jwk, "n");
  auto e = b64_member(jwk, "e");
  if (!n || !e) {
    error = "RSA key needs base64url n and e";
    return false;
  }
  Bignum bn_n(BN_bin2bn(bytes(*n), static_cast<int>(n->size()), nullptr));
  Bignum bn_e(BN_bin2bn(bytes(*e), static_cast<int>(e->size()), nullptr));
  Bld bld(OSSL_PARAM_BLD_new());
  if (!bn_n || !bn_e || !bld ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    error = "out of memory";
    return false;
  }
  return set_key_from_params(key, "RSA", bld.get(), error);
}

bool jwk_ec(const nlohmann::json &jwk, JwtKey &key, std::string &error) {
  auto crv = jwk.find("crv");
  const char *group = nullptr;
  size_t coord = 0;
  if (crv != jwk.end() && *crv == "P-256") {
    group = "prime256v1";
    coord = 32;
  } else if (crv != jwk.end() && *crv == "P-384") {
    group = "secp384r1";
    coord = 48;
  } else {
    error = "EC key crv must be P-256 or P-384";
    return false;
  }
  auto x = b64_member(jwk, "x");
  auto y = b64_member(jwk, "y");
  // RFC 7518 section 6.2.1.2 says each coordinate is exactly the field size, leading zeros kept,
  // but some producers (PyJWT before 2.7) drop leading zero bytes. A shorter coordinate is padded
  // back; a longer one is refused. The point is still checked to lie on the curve.
  if (!x || !y || x->empty() || y->empty() || x->size() > coord || y->size() > coord) {
    error = "EC key x and y must be base64url of at most the curve's field size";
    return false;
  }
  x->insert(0, coord - x->size(), '\0');
  y->insert(0, coord - y->size(), '\0');
  std::string point = "\x04" + *x + *y; // uncompressed point, SEC 1 section 2.3.3
  Bld bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    error = "out of memory";
    return false;
  }
  return set_key_from_params(key, "EC", bld.get(), error);
}

// Keys for other uses (encryption) or of types we do not verify with are skipped rather than
// refused: identity providers publish such keys next to their signing keys.
bool jwk_is_for_us(const nlohmann::json &jwk) {
  auto use = jwk.find("use");
  if (use != jwk.end() && *use != "sig")
    return false;
  auto ops = jwk.find("key_ops");
  if (ops != jwk.end() &&
      (!ops->is_array() || std::find(ops->begin(), ops->end(), "verify") == ops->end())) {
    return false;
  }
  auto alg = jwk.find("alg");
  if (alg != jwk.end() && (!alg->is_string() || find_alg(alg->get<std::string>()) == nullptr)) {
    return false;
  }
  auto kty = jwk.find("kty");
  return kty != jwk.end() && (*kty == "RSA" || *kty == "EC" || *kty == "oct");
}

// One JWK whose kty is supported (jwk_is_for_us said so) into key; false with a reason.
bool parse_jwk(const nlohmann::json &jwk, JwtKey &key, std::string &why) {
  if (auto kid = jwk.find("kid"); kid != jwk.end()) {
    if (!kid->is_string()) {
      why = "kid must be a string";
      return false;
    }
    key.kid = kid->get<std::string>();
  }
  if (auto alg = jwk.find("alg"); alg != jwk.end())
    key.alg = alg->get<std::string>();
  const auto &kty = jwk.find("kty")->get_ref<const std::string &>();
  if (kty == "RSA" && !jwk_rsa(jwk, key, why))
    return false;
  if (kty == "EC" && !jwk_ec(jwk, key, why))
    return false;
  if (kty == "oct") {
    auto k = b64_member(jwk, "k");
    if (!k) {
      why = "oct key needs a non-empty base64url k";
      return false;
    }
    key.secret = std::move(*k);
  }
  if (!key.alg.empty() && find_alg(key.alg)->kind != key.kind) {
    why = "alg " + key.alg + " does not fit kty " + kty;
    return false;
  }
  return true;
}

bool load_jwks(const std::string &path, std::vector<std::unique_ptr<JwtKey>> &out,
               std::string &error) {
  std::string text;
  if (!read_file(path, text, error))
    return false;
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array()) {
    error = path + ": not a JSON Web Key Set (an object with a \"keys\" array)";
    return false;
  }
  const auto &keys = doc["keys"];
  for (size_t i = 0; i < keys.size(); ++i) {
    const auto &jwk = keys[i];
    if (jwk.is_object() && !jwk_is_for_us(jwk))
      continue;
    auto key = std::make_unique<JwtKey>();
    std::string why = "not an object";
    bool ok = jwk.is_object() && parse_jwk(jwk, *key, why);
    if (ok && !key->kid.empty() &&
        std::any_of(out.begin(), out.end(), [&](auto &k) { return k->kid == key->kid; })) {
      ok = false;
      why = "duplicate kid " + key->kid;
    }
    if (!ok) {
      error = path + ": key " + std::to_string(i) + ": " + why;
      return false;
    }
    out.push_back(std::move(key));
  }
  if (out.empty()) {
    error = path + ": no usable signature key";
    return false;
  }
  return true;
}

bool verify_hmac(const AlgInfo &alg, const JwtKey &key, std::string_view input,
                 std::string_view sig) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int len = 0;
  if (HMAC(alg.md(), key.secret.data(), static_cast<int>(key.secret.size()), bytes(input),
           input.size(), mac.data(), &len) == nullptr) {
    return false;
  }
  // The length is public (it follows from alg); the bytes are compared in constant time.
  return sig.size() == len && CRYPTO_memcmp(mac.data(), sig.data(), len) == 0;
}

// JWS ES256/ES384 signatures are r||s with fixed-width big-endian halves (RFC 7518 section
// 3.4); EVP wants the DER SEQUENCE of two INTEGERs. Returns empty on a wrong length.
std::string jose_to_der(std::string_view sig, size_t coord) {
  if (sig.size() != 2 * coord)
    return {};
  Owned<ECDSA_SIG, ECDSA_SIG_free> ecdsa(ECDSA_SIG_new());
  Bignum r(BN_bin2bn(bytes(sig), static_cast<int>(coord), nullptr));
  Bignum s(BN_bin2bn(bytes(sig.substr(coord)), static_cast<int>(coord), nullptr));
  if (!ecdsa || !r || !s || ECDSA_SIG_set0(ecdsa.get(), r.get(), s.get()) != 1)
    return {};
  r.release(); // both now owned by ecdsa
  s.release();
  int len = i2d_ECDSA_SIG(ecdsa.get(), nullptr);
  if (len <= 0)
    return {};
  std::string der(static_cast<size_t>(len), '\0');
  auto *p = reinterpret_cast<unsigned char *>(der.data());
  return i2d_ECDSA_SIG(ecdsa.get(), &p) == len ? der : std::string();
}

bool verify_pkey(const AlgInfo &alg, const JwtKey &key, std::string_view input,
                 std::string_view sig) {
  std::string der;
  if (alg.kind == KeyKind::ec) {
    der = jose_to_der(sig, alg.ec_coord);
    if (der.empty())
      return false;
    sig = der;
  }
  Owned<EVP_MD_CTX, EVP_MD_CTX_free> ctx(EVP_MD_CTX_new());
  bool ok = ctx &&
            EVP_DigestVerifyInit(ctx.get(), nullptr, alg.md(), nullptr, key.pkey.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), bytes(sig), sig.size(), bytes(input), input.size()) == 1;
  ERR_clear_error();
  return ok;
}

// Reads a NumericDate claim into out (left empty when absent); false when it is not a number.
bool read_time(const nlohmann::json &claims, const char *name, std::optional<double> &out) {
  auto it = claims.find(name);
  if (it != claims.end() && !it->is_number())
    return false;
  if (it != claims.end())
    out = it->get<double>();
  return true;
}

JwtVerifyResult refuse(std::string why) {
  JwtVerifyResult r;
  r.error = std::move(why);
  return r;
}

} // namespace

JwtVerifier::JwtVerifier() = default;
JwtVerifier::~JwtVerifier() = default;

std::unique_ptr<JwtVerifier> JwtVerifier::create(const JwtConfig &cfg, std::string &error) {
  std::unique_ptr<JwtVerifier> v(new JwtVerifier());
  v->cfg_ = cfg;
  if (cfg.algorithms.empty()) {
    error = "jwt.algorithms is empty";
    return nullptr;
  }
  for (const auto &alg : cfg.algorithms) {
    if (find_alg(alg) == nullptr) {
      error = "jwt.algorithms: unsupported algorithm \"" + alg + "\"";
      return nullptr;
    }
  }
  if (!cfg.secret.empty()) {
    // A PEM pasted into the secret is the algorithm-confusion setup; refuse it outright.
    if (cfg.secret.find("-----BEGIN") != std::string::npos) {
      error = "jwt.secret looks like a PEM key; use jwt.public_key_file for RS*/ES*";
      return nullptr;
    }
    auto key = std::make_unique<JwtKey>();
    key->secret = cfg.secret;
    v->static_keys_.push_back(std::move(key));
  }
  if (!cfg.public_key_file.empty()) {
    auto key = load_pem(cfg.public_key_file, error);
    if (!key)
      return nullptr;
    v->static_keys_.push_back(std::move(key));
  }
  if (!cfg.jwks_file.empty() && !load_jwks(cfg.jwks_file, v->jwks_keys_, error))
    return nullptr;
  if (v->static_keys_.empty() && v->jwks_keys_.empty()) {
    error = "jwt: no key configured (secret, public_key_file or jwks_file)";
    return nullptr;
  }
  return v;
}

const JwtKey *JwtVerifier::select_key(const std::string &alg, const std::string *kid,
                                      std::string &error) const {
  const AlgInfo &info = *find_alg(alg);
  const JwtKey *key = nullptr;
  if (kid != nullptr && !jwks_keys_.empty()) {
    for (const auto &k : jwks_keys_) {
      if (k->kid == *kid)
        key = k.get();
    }
    if (key == nullptr) {
      error = "unknown kid";
      return nullptr;
    }
  } else {
    for (const auto &k : static_keys_) {
      if (k->kind == info.kind)
        key = k.get();
    }
    if (key == nullptr && kid == nullptr && jwks_keys_.size() == 1)
      key = jwks_keys_[0].get();
    if (key == nullptr) {
      // An HS* token with only public keys configured ends here: PEM is never an HMAC key.
      error = (kid == nullptr && jwks_keys_.size() > 1) ? "missing kid" : "no key for alg";
      return nullptr;
    }
  }
  if (key->kind != info.kind || (info.kind == KeyKind::ec && key->ec_coord != info.ec_coord) ||
      (!key->alg.empty() && key->alg != alg)) {
    error = "key does not match alg";
    return nullptr;
  }
  return key;
}

JwtVerifyResult JwtVerifier::verify(std::string_view token, int64_t now_unix_s) const {
  // Callers sit inside C callbacks; an allocation failure must become a refusal, not a throw.
  try {
    return verify_unchecked(token, now_unix_s);
  } catch (...) {
    return refuse("internal error");
  }
}

JwtVerifyResult JwtVerifier::verify_unchecked(std::string_view token, int64_t now_unix_s) const {
  if (token.size() > cfg_.max_token_bytes)
    return refuse("token too long");
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return refuse("malformed token");
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view sig_b64 = token.substr(dot2 + 1);

  auto header_raw = base64url_decode(header_b64);
  if (!header_raw)
    return refuse("malformed header");
  auto header = nlohmann::json::parse(*header_raw, nullptr, false);
  if (header.is_discarded() || !header.is_object())
    return refuse("malformed header");
  auto alg_it = header.find("alg");
  if (alg_it == header.end() || !alg_it->is_string())
    return refuse("malformed header");
  const std::string &alg = alg_it->get_ref<const std::string &>();
  if (is_alg_none(alg))
    return refuse("alg none");
  const AlgInfo *info = find_alg(alg);
  if (info == nullptr ||
      std::find(cfg_.algorithms.begin(), cfg_.algorithms.end(), alg) == cfg_.algorithms.end()) {
    return refuse("alg not allowed");
  }
  // RFC 7515 section 4.1.11: we understand no extension, so any "crit" must be refused.
  if (header.contains("crit"))
    return refuse("unsupported crit header");
  const std::string *kid = nullptr;
  if (auto kid_it = header.find("kid"); kid_it != header.end()) {
    if (!kid_it->is_string())
      return refuse("malformed header");
    kid = &kid_it->get_ref<const std::string &>();
  }

  if (sig_b64.empty())
    return refuse("missing signature");
  auto sig = base64url_decode(sig_b64);
  if (!sig)
    return refuse("malformed signature");
  auto payload_raw = base64url_decode(payload_b64);
  if (!payload_raw || payload_b64.empty())
    return refuse("malformed payload");

  std::string error;
  const JwtKey *key = select_key(alg, kid, error);
  if (key == nullptr)
    return refuse(error);
  std::string_view signing_input = token.substr(0, dot2);
  bool good = info->kind == KeyKind::hmac ? verify_hmac(*info, *key, signing_input, *sig)
                                          : verify_pkey(*info, *key, signing_input, *sig);
  if (!good)
    return refuse("bad signature");

  // The payload is parsed only once its signature holds, so an unauthenticated sender can feed
  // the JSON parser nothing but the header.
  auto claims = nlohmann::json::parse(*payload_raw, nullptr, false);
  if (claims.is_discarded() || !claims.is_object())
    return refuse("malformed payload");

  // Leeway absorbs clock skew between the token issuer and this host.
  const double now = static_cast<double>(now_unix_s);
  const double leeway = cfg_.leeway_s;
  std::optional<double> exp, nbf, iat;
  for (auto [name, slot] :
       {std::pair{"exp", &exp}, std::pair{"nbf", &nbf}, std::pair{"iat", &iat}}) {
    if (!read_time(claims, name, *slot))
      return refuse(std::string(name) + " is not a number");
  }
  if (exp && *exp <= now - leeway)
    return refuse("expired");
  if (nbf && *nbf > now + leeway)
    return refuse("not yet valid");
  if (iat && *iat > now + leeway)
    return refuse("issued in the future");

  if (!cfg_.issuer.empty()) {
    auto iss = claims.find("iss");
    if (iss == claims.end() || *iss != cfg_.issuer)
      return refuse("bad issuer");
  }
  if (!cfg_.audience.empty()) {
    auto auds = claim_strings(claims, "aud");
    if (std::find(auds.begin(), auds.end(), cfg_.audience) == auds.end()) {
      return refuse("bad audience");
    }
  }
  JwtVerifyResult result;
  result.ok = true;
  result.claims = std::move(claims);
  return result;
}

std::vector<std::string> claim_strings(const nlohmann::json &claims, const std::string &name) {
  if (!claims.is_object())
    return {};
  auto it = claims.find(name);
  if (it == claims.end())
    return {};
  if (it->is_string())
    return {it->get<std::string>()};
  if (!it->is_array())
    return {};
  std::vector<std::string> out;
  out.reserve(it->size());
  for (const auto &v : *it) {
    if (!v.is_string())
      return {};
    out.push_back(v.get<std::string>());
  }
  return out;
}

} // namespace sidecar
