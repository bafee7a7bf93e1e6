#include "client_messages.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace sidecar;

// Clients and the integration tests read these bytes as they are: the key order is the wire
// format, not only the values.
TEST_CASE("the welcome lists its fields in the documented order, with null for no user") {
  CHECK(welcome_message("0a1b2c3d-7", "acme", "alice", 25000) ==
        R"({"type":"connected","connection_id":"0a1b2c3d-7","org":"acme","user":"alice",)"
        R"("heartbeat_ms":25000})");
  CHECK(welcome_message("0a1b2c3d-8", "acme", "", 25000) ==
        R"({"type":"connected","connection_id":"0a1b2c3d-8","org":"acme","user":null,)"
        R"("heartbeat_ms":25000})");
}

TEST_CASE("a user a token chose comes out as strict JSON, invalid UTF-8 replaced") {
  std::string user = std::string("a\"b\\c\n\x01") + "\xff\xfe" + "\xe2\x82";
  std::string text = welcome_message("x-1", "acme", user, 1);
  auto j = nlohmann::json::parse(text, nullptr, false);
  REQUIRE(!j.is_discarded());
  CHECK(j["user"].get<std::string>().substr(0, 7) == "a\"b\\c\n\x01");
  CHECK(j["user"].get<std::string>().find("\xef\xbf\xbd") != std::string::npos);
}

TEST_CASE("pong, error, token_expiring and server_shutdown keep their field order") {
  CHECK(pong_message(1700000000123) == R"({"type":"pong","timestamp":1700000000123})");
  CHECK(error_message("RATE_LIMITED", "too many messages; slow down", true) ==
        R"({"type":"error","code":"RATE_LIMITED","message":"too many messages; slow down",)"
        R"("recoverable":true})");
  CHECK(error_message("X", "say \"no\"", false) ==
        R"({"type":"error","code":"X","message":"say \"no\"","recoverable":false})");
  CHECK(token_expiring_message(4102444800) ==
        R"({"type":"token_expiring","expires_at":4102444800})");
  CHECK(server_shutdown_message(3000) == R"({"type":"server_shutdown","reconnect_after_ms":3000})");
}

TEST_CASE("a control command's reason follows the usual fields; a token without exp is null") {
  CHECK(token_expiring_message(4102444800, "refresh") ==
        R"({"type":"token_expiring","expires_at":4102444800,"reason":"refresh"})");
  CHECK(token_expiring_message(0, "refresh") ==
        R"({"type":"token_expiring","expires_at":null,"reason":"refresh"})");
  CHECK(server_shutdown_message(1234, "reconnect") ==
        R"({"type":"server_shutdown","reconnect_after_ms":1234,"reason":"reconnect"})");
}

TEST_CASE("refreshed carries expires_at in unix seconds as token_expiring does, null for none") {
  CHECK(refreshed_message(1700000123) == R"({"type":"refreshed","expires_at":1700000123})");
  CHECK(refreshed_message(0) == R"({"type":"refreshed","expires_at":null})");
}

TEST_CASE("the welcome with channels appends them after the other fields, in the given order") {
  std::string welcome = welcome_message("c-1", "acme", "", 25000);
  std::vector<WelcomeChannel> channels = {{"org:acme", true, "18f3a2b4c0001", 17, true},
                                          {"org:acme:user:u", false, "", 0, false}};
  CHECK(welcome_with_channels(welcome, channels) ==
        R"({"type":"connected","connection_id":"c-1","org":"acme","user":null,)"
        R"("heartbeat_ms":25000,"channels":{"org:acme":{"epoch":"18f3a2b4c0001","offset":17,)"
        R"("recovered":true},"org:acme:user:u":{"recovered":false}}})");
}
