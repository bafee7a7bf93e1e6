// Fuzzes control commands (issue 15): whatever is PUBLISHed on the control channel, by a backend
// with a bug or by anyone who can publish to Redis.
//
// Input: the whole input is the payload, parsed twice, with no secret and with kSecret.
// Invariants, each an abort when broken:
// - an accepted command is whole: an op, at least one selector (or "all"), a close code a server
//   may send, a reason of at most 123 bytes; a refusal carries a reason label and never the
//   secret's bytes in its detail;
// - a secret only narrows: what is accepted with it is accepted without it, as the same command;
// - signing works for every command: the input wrapped as {"cmd": <input>, "sig": HMAC} is
//   accepted with the secret exactly when the input alone is accepted without one, as the same
//   command; the same wrapper with one hex digit of the signature changed is refused as
//   bad_signature.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "control.h"
#include "fuzz_stats.h"

namespace {

constexpr std::string_view kSecret = "fuzz-control-secret-7f3a9c";

enum : size_t { kAccepted, kRefused, kSignedAccepted, kForgedRefused };
fuzz::Stats stats("fuzz_control", {{"accepted", true},
                                   {"refused", true},
                                   {"signed_accepted", true},
                                   {"forged_refused", true}});

[[noreturn]] void broken(const char *what, std::string_view input) {
  std::fprintf(stderr, "fuzz_control: %s (input \"%.*s\")\n", what,
               static_cast<int>(input.size() > 200 ? 200 : input.size()), input.data());
  std::abort();
}

bool same(const sidecar::ControlCommand &a, const sidecar::ControlCommand &b) {
  return a.op == b.op && a.who.org == b.who.org && a.who.user == b.who.user &&
         a.who.conn == b.who.conn && a.who.sidecar == b.who.sidecar && a.who.all == b.who.all &&
         a.code == b.code && a.reason == b.reason && a.after_ms == b.after_ms &&
         a.jitter_ms == b.jitter_ms;
}

void check_shape(const sidecar::ControlParse &p, std::string_view input) {
  if (!p.cmd) {
    if (std::string_view(sidecar::control_refusal_name(p.refusal)).empty())
      broken("a refusal without a reason label", input);
    if (p.detail.find(kSecret) != std::string::npos)
      broken("a refusal's detail shows the secret", input);
    return;
  }
  const sidecar::ControlCommand &c = *p.cmd;
  const sidecar::ControlSelector &w = c.who;
  if (!w.all && !w.org && !w.user && !w.conn && !w.sidecar)
    broken("an accepted command selects nobody by name and is not \"all\"", input);
  if (!sidecar::is_control_close_code(c.code))
    broken("an accepted command carries a close code a server may not send", input);
  if (c.reason.size() > 123)
    broken("an accepted close reason does not fit a close frame", input);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view input(reinterpret_cast<const char *>(data), size);
  sidecar::ControlParse open = sidecar::parse_control(input, "");
  sidecar::ControlParse guarded = sidecar::parse_control(input, kSecret);
  check_shape(open, input);
  check_shape(guarded, input);
  stats.hit(open.cmd ? kAccepted : kRefused);
  if (guarded.cmd && (!open.cmd || !same(*open.cmd, *guarded.cmd)))
    broken("accepted with the secret but not the same without it", input);

  // Sign the input as a publisher would. dump() refuses invalid UTF-8 unless told to replace it,
  // and a command of invalid UTF-8 is refused anyway, so such inputs stop here.
  if (input.size() > sidecar::kMaxControlBytes / 2)
    return 0;
  std::string wrapper;
  std::string sig = sidecar::hmac_sha256_hex(kSecret, input);
  try {
    wrapper = nlohmann::json{{"cmd", std::string(input)}, {"sig", sig}}.dump();
  } catch (const nlohmann::json::exception &) {
    return 0;
  }
  if (wrapper.size() > sidecar::kMaxControlBytes)
    return 0;
  sidecar::ControlParse signed_ = sidecar::parse_control(wrapper, kSecret);
  check_shape(signed_, wrapper);
  // The input may itself be a signed wrapper; signing that again is a command whose "cmd" is not
  // a plain command, which is refused. Only plain commands are compared.
  bool plain = open.cmd && input.find("\"cmd\"") == std::string_view::npos;
  if (plain) {
    if (!signed_.cmd || !same(*signed_.cmd, *open.cmd))
      broken("a correctly signed command was not accepted as itself", input);
    stats.hit(kSignedAccepted);
    sig[0] = sig[0] == '0' ? '1' : '0';
    std::string forged = nlohmann::json{{"cmd", std::string(input)}, {"sig", sig}}.dump();
    sidecar::ControlParse bad = sidecar::parse_control(forged, kSecret);
    if (bad.cmd || bad.refusal != sidecar::ControlRefusal::bad_signature)
      broken("a signature with one digit changed was not refused as bad_signature", input);
    stats.hit(kForgedRefused);
  } else if (signed_.cmd && !open.cmd) {
    broken("signing a refused command made it accepted", input);
  }
  return 0;
}
