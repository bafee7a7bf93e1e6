// Subscribe and unsubscribe for one session (issue 15). The checks are subscriptions.h's; this
// file joins and leaves rooms and answers. A channel with history is read as at a connect
// (start_resume with only its room): a sidecar.v1 client learns its position, and a client that
// sends `recover` gets what it missed or a resync, exactly as in a welcome.
#include "session_subscribe.h"

#include <algorithm>

#include "client_messages.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "room.h"
#include "session.h"

namespace sidecar {

void Session::subscription(SubscriptionRequest req) noexcept {
  if (subs_ == nullptr) {
    env_.metrics.count_subscription("SUBSCRIPTIONS_DISABLED");
    send_json(channel_error_message("SUBSCRIPTIONS_DISABLED",
                                    "this sidecar does not allow subscribing to channels",
                                    req.channel));
    return;
  }
  if (!resuming()) {
    apply_subscription(req);
    return;
  }
  if (subs_->pending.size() >= env_.cfg.subscriptions.max_per_connection) {
    env_.metrics.count_subscription("TOO_MANY_CHANNELS");
    send_json(channel_error_message("TOO_MANY_CHANNELS",
                                    "too many subscribe requests waiting; retry after the answers",
                                    req.channel));
    return;
  }
  try {
    subs_->pending.push_back(std::move(req));
  } catch (const std::exception &) {
    close(CloseCode::internal_error, "internal error");
  }
}

void Session::apply_subscription(SubscriptionRequest &req) noexcept {
  const SubscriptionsConfig &cfg = env_.cfg.subscriptions;
  std::vector<std::string> &joined = subs_->joined;
  auto it = std::find(joined.begin(), joined.end(), req.channel);
  auto refuse = [&](std::string_view code, std::string_view message) {
    env_.metrics.count_subscription(code);
    send_json(channel_error_message(code, message, req.channel));
  };
  if (!req.subscribe) {
    if (it == joined.end())
      return refuse("NOT_SUBSCRIBED", "this connection did not subscribe to that channel");
    rooms_.leave(env_.rooms, env_.rooms.find(req.channel), v1_, deflate_bits_ != 0);
    joined.erase(it);
    env_.metrics.count_subscription("unsubscribed");
    send_json(unsubscribed_message(req.channel, ""));
    return;
  }
  bool member = false;
  for (uint32_t i = 0; i < rooms_.size(); ++i)
    member = member || rooms_.room(i)->channel == req.channel;
  if (member)
    return refuse("ALREADY_SUBSCRIBED", "this connection receives that channel already");
  if (!channel_granted(subs_->grants, req.channel))
    return refuse("FORBIDDEN_CHANNEL", "this connection may not subscribe to that channel");
  if (joined.size() >= cfg.max_per_connection)
    return refuse("TOO_MANY_CHANNELS", "subscriptions.max_per_connection reached");
  try {
    joined.push_back(req.channel);
  } catch (const std::exception &) {
    close(CloseCode::internal_error, "internal error");
    return;
  }
  if (!join_rooms({&req.channel})) {
    joined.pop_back();
    return; // closing with 1011
  }
  env_.metrics.count_subscription("subscribed");
  log_debug("subscribed", {{"conn", id_}, {"channel", req.channel}});
  Room *room = env_.rooms.find(req.channel);
  if (room != nullptr && room->history && env_.history != nullptr && (v1_ || req.recover)) {
    std::vector<RecoverRequest> recover;
    if (req.recover)
      recover.push_back({req.channel, *req.recover});
    start_resume(subscribed_message(req.channel), std::move(recover), room);
    return;
  }
  send_json(subscribed_message(req.channel));
}

void Session::run_pending_subscriptions() noexcept {
  if (subs_ == nullptr)
    return;
  drop_revoked();
  while (subs_ != nullptr && !subs_->pending.empty() && !resuming() && is_open()) {
    SubscriptionRequest req = std::move(subs_->pending.front());
    subs_->pending.pop_front();
    apply_subscription(req);
  }
}

void Session::regrant(std::vector<std::string> grants) noexcept {
  if (subs_ == nullptr)
    return;
  subs_->grants = std::move(grants);
  if (!resuming())
    drop_revoked(); // else once the read it waits on is settled (run_pending_subscriptions)
}

void Session::drop_revoked() noexcept {
  std::vector<std::string> &joined = subs_->joined;
  for (size_t i = 0; i < joined.size();) {
    if (channel_granted(subs_->grants, joined[i])) {
      ++i;
      continue;
    }
    rooms_.leave(env_.rooms, env_.rooms.find(joined[i]), v1_, deflate_bits_ != 0);
    env_.metrics.count_subscription("revoked");
    send_json(unsubscribed_message(joined[i], "revoked"));
    joined.erase(joined.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

} // namespace sidecar
