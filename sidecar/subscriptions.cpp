// Subscription grants; see subscriptions.h.
#include "subscriptions.h"

#include <nlohmann/json.hpp>

#include "config.h"
#include "jwt.h"

namespace sidecar {
namespace {

constexpr size_t kMaxChannelName = 200;

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == ':' || c == '@';
}

// One segment a variable may fill: an id without ':' (so that it cannot reach into the next
// segment) and nothing is_valid_channel_name would refuse.
bool is_segment(std::string_view s) {
  if (s.empty() || s.size() > kMaxChannelName)
    return false;
  for (char c : s) {
    if (c == ':' || !is_name_char(c))
      return false;
  }
  return true;
}

std::vector<std::string_view> segments(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == ':') {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

// Replaces each {org}, {user} and {claim.NAME}; false when a variable has no usable value (or
// the template names one that does not exist). Org ids may hold ':' (is_valid_org), so {org} is
// the one variable that may span segments; the org comes from the route and the token.
bool expand(std::string_view tmpl, std::string_view org, std::string_view user,
            const nlohmann::json *claims, std::string &out) {
  out.clear();
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] != '{') {
      out += tmpl[i++];
      continue;
    }
    size_t close = tmpl.find('}', i);
    if (close == std::string_view::npos)
      return false;
    std::string_view var = tmpl.substr(i + 1, close - i - 1);
    i = close + 1;
    if (var == "org") {
      out += org;
    } else if (var == "user") {
      if (!is_segment(user))
        return false;
      out += user;
    } else if (var.starts_with("claim.") && var.size() > 6) {
      if (claims == nullptr)
        return false;
      std::vector<std::string> values = claim_strings(*claims, std::string(var.substr(6)));
      if (values.size() != 1 || !is_segment(values.front()))
        return false; // a list or an unusable value grants nothing (no guessing which)
      out += values.front();
    } else {
      return false;
    }
  }
  return true;
}

} // namespace

bool is_valid_channel_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxChannelName)
    return false;
  for (std::string_view seg : segments(name)) {
    if (seg.empty())
      return false;
    for (char c : seg) {
      if (!is_name_char(c))
        return false;
    }
  }
  return true;
}

Result<bool> check_allow_template(std::string_view tmpl) {
  std::string sample;
  for (size_t i = 0; i < tmpl.size();) {
    if (tmpl[i] == '{') {
      size_t close = tmpl.find('}', i);
      if (close == std::string_view::npos)
        return Result<bool>::fail("an unclosed '{'");
      std::string_view var = tmpl.substr(i + 1, close - i - 1);
      if (var != "org" && var != "user" && !(var.starts_with("claim.") && var.size() > 6))
        return Result<bool>::fail("unknown variable {" + std::string(var) +
                                  "} (use {org}, {user} or {claim.NAME})");
      sample += "x";
      i = close + 1;
      continue;
    }
    sample += tmpl[i++];
  }
  std::string plain;
  std::vector<std::string_view> segs = segments(sample);
  for (size_t i = 0; i < segs.size(); ++i) {
    std::string_view seg = segs[i];
    if (i > 0)
      plain += ':';
    if (seg == "*")
      plain += "x";
    else if (seg.find('*') != std::string_view::npos)
      return Result<bool>::fail("'*' must be a whole segment, as in org:{org}:doc:*");
    else
      plain += seg;
  }
  if (!is_valid_channel_name(plain))
    return Result<bool>::fail("not a channel name: 1-200 characters of A-Z a-z 0-9 . _ - : @, no "
                              "empty segment");
  return true;
}

std::vector<std::string> subscription_grants(const SubscriptionsConfig &cfg, std::string_view org,
                                             std::string_view user, const nlohmann::json *claims) {
  std::vector<std::string> grants;
  std::string expanded;
  for (const std::string &tmpl : cfg.allow) {
    if (expand(tmpl, org, user, claims, expanded))
      grants.push_back(expanded);
  }
  if (!cfg.claim.empty() && claims != nullptr) {
    for (std::string &name : claim_strings(*claims, cfg.claim)) {
      // Listed names are literal: a '*' in a token is not a pattern, and an unusable name is
      // skipped rather than refusing the connection.
      if (is_valid_channel_name(name))
        grants.push_back(std::move(name));
    }
  }
  return grants;
}

bool channel_granted(const std::vector<std::string> &grants, std::string_view channel) {
  if (!is_valid_channel_name(channel))
    return false; // a pattern character is never matched, not even by the pattern itself
  std::vector<std::string_view> want = segments(channel);
  for (const std::string &g : grants) {
    std::vector<std::string_view> pat = segments(g);
    if (pat.size() != want.size())
      continue;
    bool match = true;
    for (size_t i = 0; match && i < pat.size(); ++i)
      match = (pat[i] == "*" && !want[i].empty()) || pat[i] == want[i];
    if (match)
      return true;
  }
  return false;
}

std::variant<SubscriptionRequest, SubscriptionRefusal> parse_subscription(const nlohmann::json &msg,
                                                                         bool subscribe) {
  SubscriptionRequest req;
  req.subscribe = subscribe;
  auto channel = msg.find("channel");
  if (channel == msg.end() || !channel->is_string() ||
      !is_valid_channel_name(channel->get_ref<const std::string &>())) {
    return SubscriptionRefusal{"BAD_CHANNEL", "\"channel\" must be a channel name: 1-200 "
                                              "characters of A-Z a-z 0-9 . _ - : @"};
  }
  req.channel = channel->get<std::string>();
  auto recover = msg.find("recover");
  if (recover != msg.end() && !recover->is_null()) {
    const char *shape = "\"recover\" must be {\"epoch\":\"…\",\"offset\":N}, the last position seen";
    if (!subscribe || !recover->is_object())
      return SubscriptionRefusal{"BAD_RECOVER", shape};
    auto epoch = recover->find("epoch");
    auto offset = recover->find("offset");
    if (epoch == recover->end() || !epoch->is_string() || offset == recover->end() ||
        !offset->is_number_integer() ||
        (!offset->is_number_unsigned() && offset->get<int64_t>() < 0))
      return SubscriptionRefusal{"BAD_RECOVER", shape};
    const std::string &e = epoch->get_ref<const std::string &>();
    if (!is_valid_epoch(e))
      return SubscriptionRefusal{"BAD_RECOVER", shape};
    req.recover = StreamPosition{e, offset->get<uint64_t>()};
  }
  return req;
}

} // namespace sidecar
