// A session's subscriptions beyond its route's rooms (issue 15); see subscriptions.h for what a
// client may ask and session_subscribe.cpp for how a session carries it out.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "subscriptions.h"

namespace sidecar {

// Made at the upgrade when subscriptions are configured, so that other sessions pay one pointer.
struct SessionSubscriptions {
  std::vector<std::string> grants; // channel patterns (subscription_grants)
  std::vector<std::string> joined; // channels joined by subscribe, in the order joined
  // Requests that came while the session waited on a read (its welcome's, or another
  // subscribe's); carried out in order once it is done. At most max_per_connection.
  std::deque<SubscriptionRequest> pending;
};

} // namespace sidecar
