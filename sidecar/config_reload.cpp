// The reload decision; see config_reload.h.
#include "config_reload.h"

#include <utility>

namespace sidecar {

std::string ReloadPlan::not_applied_live() const {
  std::string out;
  for (const std::string &key : needs_restart)
    out += (out.empty() ? "" : ",") + key;
  return out.empty() ? "none" : out;
}

ReloadPlan plan_reload(const Config &running, Config next) {
  ReloadPlan plan;
  std::vector<std::string> &kept = plan.needs_restart;
  // A new address needs a new socket; the running listeners stay where they are.
  if (next.listen != running.listen)
    kept.push_back("listen");
  if (next.admin.listen != running.admin.listen)
    kept.push_back("admin.listen");
  // The Redis links read their settings once, when they are made, so a new deadline would only
  // seem to apply. Every redis.* key is kept, and the changed ones are named.
  const RedisConfig &was = running.redis, &now = next.redis;
  for (auto [changed, key] :
       {std::pair{now.url != was.url, "redis.url"},
        {now.connect_timeout_ms != was.connect_timeout_ms, "redis.connect_timeout_ms"},
        {now.reconnect_initial_ms != was.reconnect_initial_ms, "redis.reconnect_initial_ms"},
        {now.reconnect_max_ms != was.reconnect_max_ms, "redis.reconnect_max_ms"},
        {now.ping_interval_ms != was.ping_interval_ms, "redis.ping_interval_ms"},
        {now.reply_timeout_ms != was.reply_timeout_ms, "redis.reply_timeout_ms"}}) {
    if (changed)
      kept.push_back(key);
  }
  // Every session joined the broadcast channel at its upgrade; a new name would split them.
  if (next.channels.broadcast != running.channels.broadcast)
    kept.push_back("channels.broadcast");
  // The Redis library was generated from the list and loaded at connect, and rooms took their
  // history settings when they were made; a new list would leave the sidecar and the library
  // disagreeing about which channels have positions.
  if (next.history != running.history)
    kept.push_back("history");
  // The bus subscribed the control channel and the connection pattern at start, for its life.
  if (next.control.channel != running.control.channel)
    kept.push_back("control.channel");
  if (next.channels.connection != running.channels.connection)
    kept.push_back("channels.connection");
  // Sessions entered their presence rooms at their upgrade and leave the same ones; a new list
  // would have them leave rooms they never entered.
  if (next.presence != running.presence)
    kept.push_back("presence");

  // compression.* applies live: negotiation reads it at each handshake, the rooms at each
  // publication, and connections keep what they agreed.

  next.listen = running.listen;
  next.listen_addr = running.listen_addr;
  next.admin.listen = running.admin.listen;
  next.admin.listen_addr = running.admin.listen_addr;
  next.redis = running.redis;
  next.channels.broadcast = running.channels.broadcast;
  next.history = running.history;
  next.control.channel = running.control.channel;
  next.channels.connection = running.channels.connection;
  next.presence = running.presence;
  plan.config = std::move(next);
  return plan;
}

} // namespace sidecar
