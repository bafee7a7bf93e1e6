// What a SIGHUP may change. A reload is a pure decision over the running config and a newly
// loaded, valid one: most settings apply from the next message or upgrade on, because sessions
// and admission read the config on every use; a few were consumed when something was made (a
// listening socket, a Redis link, the broadcast subscription) and keep their running value until
// a restart. The Server applies the plan and logs what it kept.
#pragma once

#include <string>
#include <vector>

#include "config.h"

namespace sidecar {

struct ReloadPlan {
  // The config to put in force: the new one, with each key in needs_restart at its running value.
  Config config;
  // Dotted keys that changed in the file but cannot change live, in the order of the file's
  // sections ("listen", "admin.listen", "redis.url", ..., "channels.broadcast", "history").
  std::vector<std::string> needs_restart;
  // needs_restart as the log's not_applied_live field: "listen,redis.url", or "none".
  std::string not_applied_live() const;
};

ReloadPlan plan_reload(const Config &running, Config next);

} // namespace sidecar
