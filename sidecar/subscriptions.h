// Which further channels a client may subscribe to (issue 15): its grants, computed once from
// the config, its org, its user and its token's claims, and the check of one requested name
// against them. Pure: no I/O, no uv.h; the session carries out subscribe and unsubscribe.
//
// A grant is a channel pattern: the template of `subscriptions.allow` with {org}, {user} and
// {claim.NAME} replaced by the session's values, or a channel named in the token's
// `subscriptions.claim` list. A pattern matches a channel segment by segment (':' separates
// them, and the two must have as many): a `*` segment matches any one non-empty segment, every
// other segment only itself. So `org:{org}:doc:*` lets a member of acme follow
// `org:acme:doc:42` but not `org:acme:doc:42:x`, `org:acme:doc:` or anything of another org. A
// template whose variable the session lacks (no user, a claim the token does not carry, or one
// that is not a usable id) grants nothing.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "history.h"
#include "result.h"

namespace sidecar {

struct SubscriptionsConfig;

// A channel name a client may ask for: 1..200 characters of A-Z a-z 0-9 . _ - : @, with no
// empty segment (no leading, trailing or doubled ':'). Redis pattern characters (* ? [ ]),
// spaces, control bytes, '/' and '\' are refused, so a name is always one literal channel.
bool is_valid_channel_name(std::string_view name);

// An allow template the config may hold: a valid channel name once each variable ({org},
// {user}, {claim.NAME}) and each `*` segment is replaced by a plain segment. The error says
// what is wrong, for the config loader.
Result<bool> check_allow_template(std::string_view tmpl);

// The session's grants. `claims` is the verified token's payload, or null without a token.
std::vector<std::string> subscription_grants(const SubscriptionsConfig &cfg, std::string_view org,
                                             std::string_view user, const nlohmann::json *claims);

// Whether `channel` is a valid name (is_valid_channel_name) that matches one of `grants`.
bool channel_granted(const std::vector<std::string> &grants, std::string_view channel);

// {"type":"subscribe","channel":C[,"recover":{"epoch":E,"offset":N}]} or
// {"type":"unsubscribe","channel":C}, read from a client message whose type said which.
struct SubscriptionRequest {
  bool subscribe = true;
  std::string channel;
  std::optional<StreamPosition> recover; // the last position the client saw on C
};
// The error is {code, message} for the client: BAD_CHANNEL or BAD_RECOVER. Never echoes input.
struct SubscriptionRefusal {
  std::string code;
  std::string message;
};
std::variant<SubscriptionRequest, SubscriptionRefusal> parse_subscription(const nlohmann::json &msg,
                                                                         bool subscribe);

} // namespace sidecar
