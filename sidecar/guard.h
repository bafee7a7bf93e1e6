// Where exceptions stop. Every C callback that enters our code (libuv's read, write, close,
// timer, check and signal callbacks; hiredis's and wslay's as far as they reach us) runs its body
// through guarded(). An exception that would otherwise unwind into C, or hit a noexcept function
// and call std::terminate for every client, is logged as event=internal_error, counted in
// sidecar_internal_errors_total, and costs only what on_error gives up: usually the one session
// the callback was for. Nothing is retried; the process and the other clients carry on.
#pragma once

#include <cstdint>
#include <exception>
#include <string_view>

namespace sidecar {

// Logs and counts one caught exception; never throws. `conn` is 0 when no session is involved,
// `action` says what happens now ("closing this connection", "message dropped").
void report_internal_error(std::string_view where, uint64_t conn, std::string_view what,
                           std::string_view action) noexcept;
// How many exceptions guarded() caught since start.
uint64_t internal_errors_total() noexcept;

// Runs body(); if it throws, reports it and runs on_error(), which must not throw.
template <typename Body, typename OnError>
void guarded(std::string_view where, uint64_t conn, std::string_view action, Body &&body,
             OnError &&on_error) noexcept {
  try {
    body();
    return;
  } catch (const std::exception &e) {
    report_internal_error(where, conn, e.what(), action);
  } catch (...) {
    report_internal_error(where, conn, "exception of unknown type", action);
  }
  on_error();
}

// For callbacks where nothing can be given up: the report is all that happens.
template <typename Body>
void guarded(std::string_view where, uint64_t conn, std::string_view action, Body &&body) noexcept {
  guarded(where, conn, action, static_cast<Body &&>(body), [] {});
}

} // namespace sidecar
