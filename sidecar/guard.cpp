// Caught exceptions; see guard.h. One thread, so the count is a plain integer.
#include "guard.h"

#include "log.h"

namespace sidecar {
namespace {

uint64_t g_internal_errors = 0;

} // namespace

void report_internal_error(std::string_view where, uint64_t conn, std::string_view what,
                           std::string_view action) noexcept {
  ++g_internal_errors;
  // log_event never throws; building the fields can (out of memory), and then the count is
  // all that is left of this report.
  try {
    log_error("internal_error", {{"where", where},
                                 {"conn", conn},
                                 {"error", what},
                                 {"errors_total", g_internal_errors},
                                 {"action", action}});
  } catch (...) {
  }
}

uint64_t internal_errors_total() noexcept { return g_internal_errors; }

} // namespace sidecar
