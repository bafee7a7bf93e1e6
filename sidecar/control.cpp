// Control commands; see control.h.
#include "control.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <nlohmann/json.hpp>

#include "config.h"
#include "text.h"

namespace sidecar {
namespace {

using Json = nlohmann::json;

// Longest values a selector may carry. An org id has its own rule (is_valid_org); a user id is
// whatever the token's claim held, so it only has a size.
constexpr size_t kMaxUserBytes = 1024;
constexpr size_t kMaxIdBytes = 128;
// The close reason must fit a control frame's 125 bytes with its 2-byte code.
constexpr size_t kMaxReasonBytes = 123;
// The longest delay a reconnect may ask for, as shutdown.reconnect_* allow.
constexpr uint64_t kMaxDelayMs = 600000;
// A command is flat; anything nested deeper than its own members is refused while parsing,
// before it costs memory.
constexpr int kMaxDepth = 2;

ControlParse refuse(ControlRefusal r, std::string detail) {
  ControlParse p;
  p.refusal = r;
  p.detail = std::move(detail);
  return p;
}

// A JSON object, or nothing. Exceptions are not used: the text came from anyone who can publish.
std::optional<Json> parse_object(std::string_view text) {
  bool too_deep = false;
  Json j = Json::parse(
      text,
      [&too_deep](int depth, Json::parse_event_t, Json &) {
        too_deep = too_deep || depth > kMaxDepth;
        return !too_deep;
      },
      false);
  if (too_deep || !j.is_object())
    return std::nullopt;
  return j;
}

// True when `sig` is the hex HMAC-SHA256 of `cmd`. The comparison takes the same time wherever
// the first differing byte is, so timing tells a forger nothing about the right signature.
bool signature_matches(std::string_view secret, std::string_view cmd, std::string_view sig) {
  unsigned char want[EVP_MAX_MD_SIZE];
  unsigned int want_len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char *>(cmd.data()), cmd.size(), want,
           &want_len) == nullptr ||
      want_len != 32 || sig.size() != 64)
    return false;
  unsigned char got[32];
  for (size_t i = 0; i < 32; ++i) {
    int hi = hex_value(sig[2 * i]), lo = hex_value(sig[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    got[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return CRYPTO_memcmp(got, want, 32) == 0;
}

bool is_hex64(std::string_view s) {
  if (s.size() != 64)
    return false;
  for (char c : s) {
    if (hex_value(c) < 0)
      return false;
  }
  return true;
}

// Reads an optional string selector of 1..max bytes; false (with `why`) when present and wrong.
bool read_id(const Json &cmd, const char *key, size_t max, std::optional<std::string> &out,
             std::string &why) {
  auto it = cmd.find(key);
  if (it == cmd.end())
    return true;
  if (!it->is_string() || it->get_ref<const std::string &>().empty() ||
      it->get_ref<const std::string &>().size() > max) {
    why = std::string("\"") + key + "\" must be a string of 1.." + std::to_string(max) + " bytes";
    return false;
  }
  out = it->get<std::string>();
  return true;
}

bool read_delay(const Json &cmd, const char *key, std::optional<uint32_t> &out, std::string &why) {
  auto it = cmd.find(key);
  if (it == cmd.end())
    return true;
  if (!it->is_number_unsigned() || it->get<uint64_t>() > kMaxDelayMs) {
    why = std::string("\"") + key + "\" must be a whole number of milliseconds, 0.." +
          std::to_string(kMaxDelayMs);
    return false;
  }
  out = static_cast<uint32_t>(it->get<uint64_t>());
  return true;
}

ControlParse parse_command(const Json &cmd) {
  ControlCommand c;
  auto op = cmd.find("op");
  if (op == cmd.end() || !op->is_string())
    return refuse(ControlRefusal::unknown_op, "\"op\" must be a string");
  const std::string &name = op->get_ref<const std::string &>();
  if (name == "disconnect")
    c.op = ControlOp::disconnect;
  else if (name == "reconnect")
    c.op = ControlOp::reconnect;
  else if (name == "refresh")
    c.op = ControlOp::refresh;
  else
    return refuse(ControlRefusal::unknown_op,
                  "\"op\" must be disconnect, reconnect or refresh"); // not echoed: anyone's bytes

  for (auto it = cmd.begin(); it != cmd.end(); ++it) {
    const std::string &key = it.key();
    bool known = key == "op" || key == "org" || key == "user" || key == "conn" ||
                 key == "sidecar" || key == "all" ||
                 (c.op == ControlOp::disconnect && (key == "code" || key == "reason")) ||
                 (c.op == ControlOp::reconnect && (key == "after_ms" || key == "jitter_ms"));
    if (!known)
      return refuse(ControlRefusal::bad_field,
                    name + " does not take \"" + key.substr(0, 32) +
                        "\"; allowed: op, org, user, conn, sidecar, all" +
                        (c.op == ControlOp::disconnect  ? ", code, reason"
                         : c.op == ControlOp::reconnect ? ", after_ms, jitter_ms"
                                                        : ""));
  }

  std::string why;
  if (!read_id(cmd, "user", kMaxUserBytes, c.who.user, why) ||
      !read_id(cmd, "conn", kMaxIdBytes, c.who.conn, why) ||
      !read_id(cmd, "sidecar", kMaxIdBytes, c.who.sidecar, why) ||
      !read_id(cmd, "org", kMaxIdBytes, c.who.org, why))
    return refuse(ControlRefusal::bad_field, why);
  if (c.who.org && !is_valid_org(*c.who.org))
    return refuse(ControlRefusal::bad_field, "\"org\" must be 1..128 of [A-Za-z0-9._:-]");
  if (auto all = cmd.find("all"); all != cmd.end()) {
    if (!all->is_boolean())
      return refuse(ControlRefusal::bad_field, "\"all\" must be true or false");
    c.who.all = all->get<bool>();
  }
  if (!c.who.all && !c.who.org && !c.who.user && !c.who.conn && !c.who.sidecar)
    return refuse(ControlRefusal::no_selector,
                  "name at least one of org, user, conn, sidecar, or say \"all\":true");

  if (auto code = cmd.find("code"); code != cmd.end()) {
    if (!code->is_number_unsigned() || code->get<uint64_t>() > 65535 ||
        !is_control_close_code(static_cast<uint16_t>(code->get<uint64_t>())))
      return refuse(ControlRefusal::bad_code,
                    "\"code\" must be 1000, 1001, 1008, 1011, 1012, 1013 or 3000..4999");
    c.code = static_cast<uint16_t>(code->get<uint64_t>());
  }
  if (auto reason = cmd.find("reason"); reason != cmd.end()) {
    if (!reason->is_string() || reason->get_ref<const std::string &>().size() > kMaxReasonBytes)
      return refuse(ControlRefusal::bad_field, "\"reason\" must be a string of at most 123 bytes");
    c.reason = reason->get<std::string>();
  }
  if (!read_delay(cmd, "after_ms", c.after_ms, why) ||
      !read_delay(cmd, "jitter_ms", c.jitter_ms, why))
    return refuse(ControlRefusal::bad_field, why);

  ControlParse p;
  p.cmd = std::move(c);
  return p;
}

} // namespace

const char *control_op_name(ControlOp op) {
  switch (op) {
  case ControlOp::disconnect:
    return "disconnect";
  case ControlOp::reconnect:
    return "reconnect";
  case ControlOp::refresh:
    return "refresh";
  }
  return "?";
}

const char *control_refusal_name(ControlRefusal r) {
  switch (r) {
  case ControlRefusal::oversized:
    return "oversized";
  case ControlRefusal::not_json:
    return "not_json";
  case ControlRefusal::unsigned_cmd:
    return "unsigned";
  case ControlRefusal::bad_signature:
    return "bad_signature";
  case ControlRefusal::unknown_op:
    return "unknown_op";
  case ControlRefusal::no_selector:
    return "no_selector";
  case ControlRefusal::bad_code:
    return "bad_code";
  case ControlRefusal::bad_field:
    return "bad_field";
  }
  return "?";
}

bool is_control_close_code(uint16_t code) {
  return code == 1000 || code == 1001 || code == 1008 || code == 1011 || code == 1012 ||
         code == 1013 || (code >= 3000 && code <= 4999);
}

ControlParse parse_control(std::string_view payload, std::string_view secret) {
  if (payload.size() > kMaxControlBytes)
    return refuse(ControlRefusal::oversized, std::to_string(payload.size()) + " bytes, over " +
                                                 std::to_string(kMaxControlBytes));
  std::optional<Json> outer = parse_object(payload);
  if (!outer)
    return refuse(ControlRefusal::not_json, "not a JSON object of at most 2 levels");
  auto cmd = outer->find("cmd");
  bool wrapped = cmd != outer->end();
  if (!wrapped) {
    if (!secret.empty())
      return refuse(ControlRefusal::unsigned_cmd,
                    "control.secret_env is set: send {\"cmd\":\"<command>\",\"sig\":\"<hex>\"}");
    return parse_command(*outer);
  }
  if (!cmd->is_string() || outer->size() > 2 || (outer->size() == 2 && !outer->contains("sig")))
    return refuse(ControlRefusal::not_json,
                  "the signed form is {\"cmd\":\"<command as a string>\",\"sig\":\"<hex>\"}");
  const std::string &text = cmd->get_ref<const std::string &>();
  auto sig = outer->find("sig");
  if (!secret.empty()) {
    if (sig == outer->end())
      return refuse(ControlRefusal::unsigned_cmd, "\"sig\" is missing");
    if (!sig->is_string() || !is_hex64(sig->get_ref<const std::string &>()))
      return refuse(ControlRefusal::bad_signature, "\"sig\" must be 64 hex digits");
    if (!signature_matches(secret, text, sig->get_ref<const std::string &>()))
      return refuse(ControlRefusal::bad_signature,
                    "\"sig\" is not the HMAC-SHA256 of \"cmd\" under the configured secret");
  }
  std::optional<Json> inner = parse_object(text);
  if (!inner)
    return refuse(ControlRefusal::not_json, "\"cmd\" is not a JSON object of at most 2 levels");
  return parse_command(*inner);
}

bool control_selects(const ControlSelector &who, std::string_view org, std::string_view user,
                     std::string_view conn, std::string_view instance) {
  if (who.org && *who.org != org)
    return false;
  if (who.user && *who.user != user)
    return false;
  if (who.conn && *who.conn != conn)
    return false;
  if (who.sidecar && *who.sidecar != instance)
    return false;
  return true;
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char *>(data.data()), data.size(), mac, &len) == nullptr)
    return {};
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[mac[i] >> 4];
    out += kHex[mac[i] & 15];
  }
  return out;
}

} // namespace sidecar
