// Subscription grants and names (issue 15): what a client may subscribe to, hostile names first.
#include "subscriptions.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "config.h"

using namespace sidecar;
using nlohmann::json;

namespace {

SubscriptionsConfig allow(std::vector<std::string> patterns, std::string claim = "") {
  SubscriptionsConfig c;
  c.allow = std::move(patterns);
  c.claim = std::move(claim);
  return c;
}

} // namespace

TEST_CASE("channel names: one literal channel, nothing a pattern or a path could read into") {
  CHECK(is_valid_channel_name("org:acme:doc:42"));
  CHECK(is_valid_channel_name("a"));
  CHECK(is_valid_channel_name("org:acme:user:bob@example.com"));
  CHECK(is_valid_channel_name(std::string(200, 'x')));
  for (const std::string &bad : std::vector<std::string>{
           "", "org:acme:doc:*", "org:acme:doc:?", "org:acme:[ab]", "org::acme", ":org", "org:",
        "org:acme/../other", "org:acme\\x", "org acme", "org:acme\n", "org:acme\r\nPING",
        std::string("org:a\0b", 7), "org:ä", "org:%2e%2e", std::string(201, 'x')}) {
    CAPTURE(bad);
    CHECK_FALSE(is_valid_channel_name(bad));
  }
}

TEST_CASE("allow templates: known variables, whole-segment stars, channel characters") {
  CHECK(check_allow_template("org:{org}:doc:*").ok());
  CHECK(check_allow_template("org:{org}:team:{claim.team}").ok());
  CHECK(check_allow_template("org:{org}:user:{user}:inbox").ok());
  CHECK(check_allow_template("news:*").ok());
  CHECK(check_allow_template("org:{org}:doc:x*").error.find("whole segment") != std::string::npos);
  CHECK(check_allow_template("org:{tenant}").error.find("unknown variable") != std::string::npos);
  CHECK(check_allow_template("org:{claim.}").error.find("unknown variable") != std::string::npos);
  CHECK(check_allow_template("org:{org").error.find("unclosed") != std::string::npos);
  CHECK_FALSE(check_allow_template("org::{org}").ok());
  CHECK_FALSE(check_allow_template("org:{org}/doc").ok());
}

TEST_CASE("grants are the templates bound to the session's org, user and claims") {
  json claims = {{"sub", "alice"}, {"team", "red"}, {"teams", {"a", "b"}}, {"bad", "x:y"},
                 {"channels", {"news:sports", "org:other:doc:1", "bad name", "star:*"}}};
  SubscriptionsConfig c = allow({"org:{org}:doc:*", "org:{org}:team:{claim.team}",
                                 "org:{org}:user:{user}:inbox", "org:{org}:t:{claim.teams}",
                                 "org:{org}:b:{claim.bad}", "org:{org}:m:{claim.missing}"},
                                "channels");
  std::vector<std::string> g = subscription_grants(c, "acme", "alice", &claims);
  CHECK(g == std::vector<std::string>{"org:acme:doc:*", "org:acme:team:red",
                                      "org:acme:user:alice:inbox", "news:sports",
                                      "org:other:doc:1"});
  // Without a token only {org} templates bind; a claim list needs a token.
  CHECK(subscription_grants(c, "acme", "", nullptr) == std::vector<std::string>{"org:acme:doc:*"});
}

TEST_CASE("a grant matches segment by segment; a star is one non-empty segment") {
  std::vector<std::string> g = {"org:acme:doc:*", "org:acme:team:red", "news:sports"};
  CHECK(channel_granted(g, "org:acme:doc:42"));
  CHECK(channel_granted(g, "org:acme:doc:x.y-z_1"));
  CHECK(channel_granted(g, "org:acme:team:red"));
  CHECK(channel_granted(g, "news:sports"));
  CHECK_FALSE(channel_granted(g, "org:acme:doc:42:comments")); // one segment only
  CHECK_FALSE(channel_granted(g, "org:acme:doc"));
  CHECK_FALSE(channel_granted(g, "org:other:doc:42"));          // another org
  CHECK_FALSE(channel_granted(g, "org:acme:team:blue"));
  CHECK_FALSE(channel_granted(g, "org:acme:team:red:x"));
  CHECK_FALSE(channel_granted(g, "org:acme"));                  // the org room is not granted
  CHECK_FALSE(channel_granted(g, "org:acme:doc:*"));            // the pattern itself is no name
  CHECK_FALSE(channel_granted({}, "news:sports"));
}

TEST_CASE("subscribe messages: a valid channel, and recover only as {epoch, offset}") {
  auto parse = [](const json &j, bool sub = true) { return parse_subscription(j, sub); };
  auto ok = parse({{"type", "subscribe"}, {"channel", "org:acme:doc:1"}});
  REQUIRE(std::holds_alternative<SubscriptionRequest>(ok));
  CHECK(std::get<SubscriptionRequest>(ok).channel == "org:acme:doc:1");
  CHECK_FALSE(std::get<SubscriptionRequest>(ok).recover);
  auto rec = parse({{"channel", "c:1"}, {"recover", {{"epoch", "18f3a2b4c0a1b"}, {"offset", 17}}}});
  REQUIRE(std::holds_alternative<SubscriptionRequest>(rec));
  CHECK(std::get<SubscriptionRequest>(rec).recover->offset == 17);
  for (const json &bad : {json{{"type", "subscribe"}}, json{{"channel", 5}},
                          json{{"channel", "a:*"}}, json{{"channel", std::string(300, 'a')}}}) {
    CAPTURE(bad.dump());
    auto r = parse(bad);
    REQUIRE(std::holds_alternative<SubscriptionRefusal>(r));
    CHECK(std::get<SubscriptionRefusal>(r).code == "BAD_CHANNEL");
  }
  for (const json &bad :
       {json{{"channel", "c:1"}, {"recover", "e1:5"}},
        json{{"channel", "c:1"}, {"recover", {{"epoch", "E!"}, {"offset", 1}}}},
        json{{"channel", "c:1"}, {"recover", {{"epoch", "e1"}, {"offset", -1}}}},
        json{{"channel", "c:1"}, {"recover", {{"epoch", "e1"}, {"offset", 1.5}}}},
        json{{"channel", "c:1"}, {"recover", {{"offset", 1}}}}}) {
    CAPTURE(bad.dump());
    auto r = parse(bad);
    REQUIRE(std::holds_alternative<SubscriptionRefusal>(r));
    CHECK(std::get<SubscriptionRefusal>(r).code == "BAD_RECOVER");
  }
  auto unsub = parse({{"channel", "c:1"}, {"recover", {{"epoch", "e1"}, {"offset", 1}}}}, false);
  CHECK(std::holds_alternative<SubscriptionRefusal>(unsub)); // recover belongs to subscribe
}
