// ClusterTopology against replies captured from a real Redis 7.0 cluster (3 masters, 3 replicas,
// made with redis-cli --cluster create), fed through hiredis's parser as the bus feeds them.
#include "cluster_topology.h"

#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

#include <memory>
#include <string>

#include "cluster_slot.h"

using namespace sidecar;

namespace {

struct ReplyFree {
  void operator()(redisReply *r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

ReplyPtr parse_resp(const std::string &bytes) {
  redisReader *reader = redisReaderCreate();
  REQUIRE(redisReaderFeed(reader, bytes.data(), bytes.size()) == REDIS_OK);
  void *raw = nullptr;
  REQUIRE(redisReaderGetReply(reader, &raw) == REDIS_OK);
  redisReaderFree(reader);
  REQUIRE(raw != nullptr);
  return ReplyPtr(static_cast<redisReply *>(raw));
}

// CLUSTER SHARDS on 127.0.0.1:17001 two seconds after the cluster was created (17006 still
// loading).
const std::string kShards = "*3\r\n"
                            "*4\r\n"
                            "$5\r\n"
                            "slots\r\n"
                            "*2\r\n"
                            ":10923\r\n"
                            ":16383\r\n"
                            "$5\r\n"
                            "nodes\r\n"
                            "*2\r\n"
                            "*14\r\n"
                            "$2\r\n"
                            "id\r\n"
                            "$40\r\n"
                            "9ed0c323cc07430f453c21688b45af14c9e010fe\r\n"
                            "$4\r\n"
                            "port\r\n"
                            ":17003\r\n"
                            "$2\r\n"
                            "ip\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$8\r\n"
                            "endpoint\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$4\r\n"
                            "role\r\n"
                            "$6\r\n"
                            "master\r\n"
                            "$18\r\n"
                            "replication-offset\r\n"
                            ":14\r\n"
                            "$6\r\n"
                            "health\r\n"
                            "$6\r\n"
                            "online\r\n"
                            "*14\r\n"
                            "$2\r\n"
                            "id\r\n"
                            "$40\r\n"
                            "9d8728a0f0ffbb0ec8840da6bda69becc62778e7\r\n"
                            "$4\r\n"
                            "port\r\n"
                            ":17006\r\n"
                            "$2\r\n"
                            "ip\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$8\r\n"
                            "endpoint\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$4\r\n"
                            "role\r\n"
                            "$7\r\n"
                            "replica\r\n"
                            "$18\r\n"
                            "replication-offset\r\n"
                            ":0\r\n"
                            "$6\r\n"
                            "health\r\n"
                            "$7\r\n"
                            "loading\r\n"
                            "*4\r\n"
                            "$5\r\n"
                            "slots\r\n"
                            "*2\r\n"
                            ":0\r\n"
                            ":5460\r\n"
                            "$5\r\n"
                            "nodes\r\n"
                            "*2\r\n"
                            "*14\r\n"
                            "$2\r\n"
                            "id\r\n"
                            "$40\r\n"
                            "ca7b693c5c3c3336ab1ab15d6346057dea0478c2\r\n"
                            "$4\r\n"
                            "port\r\n"
                            ":17001\r\n"
                            "$2\r\n"
                            "ip\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$8\r\n"
                            "endpoint\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$4\r\n"
                            "role\r\n"
                            "$6\r\n"
                            "master\r\n"
                            "$18\r\n"
                            "replication-offset\r\n"
                            ":14\r\n"
                            "$6\r\n"
                            "health\r\n"
                            "$6\r\n"
                            "online\r\n"
                            "*14\r\n"
                            "$2\r\n"
                            "id\r\n"
                            "$40\r\n"
                            "024874b13192996cd3c0f8ee00636b2b9db6d416\r\n"
                            "$4\r\n"
                            "port\r\n"
                            ":17004\r\n"
                            "$2\r\n"
                            "ip\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$8\r\n"
                            "endpoint\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$4\r\n"
                            "role\r\n"
                            "$7\r\n"
                            "replica\r\n"
                            "$18\r\n"
                            "replication-offset\r\n"
                            ":14\r\n"
                            "$6\r\n"
                            "health\r\n"
                            "$6\r\n"
                            "online\r\n"
                            "*4\r\n"
                            "$5\r\n"
                            "slots\r\n"
                            "*2\r\n"
                            ":5461\r\n"
                            ":10922\r\n"
                            "$5\r\n"
                            "nodes\r\n"
                            "*2\r\n"
                            "*14\r\n"
                            "$2\r\n"
                            "id\r\n"
                            "$40\r\n"
                            "deca7a8ca822cc9fb341e890b15505f20108f73d\r\n"
                            "$4\r\n"
                            "port\r\n"
                            ":17002\r\n"
                            "$2\r\n"
                            "ip\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$8\r\n"
                            "endpoint\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$4\r\n"
                            "role\r\n"
                            "$6\r\n"
                            "master\r\n"
                            "$18\r\n"
                            "replication-offset\r\n"
                            ":14\r\n"
                            "$6\r\n"
                            "health\r\n"
                            "$6\r\n"
                            "online\r\n"
                            "*14\r\n"
                            "$2\r\n"
                            "id\r\n"
                            "$40\r\n"
                            "346df32fa670f61516bd7f9385401ab21d1a0da5\r\n"
                            "$4\r\n"
                            "port\r\n"
                            ":17005\r\n"
                            "$2\r\n"
                            "ip\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$8\r\n"
                            "endpoint\r\n"
                            "$9\r\n"
                            "127.0.0.1\r\n"
                            "$4\r\n"
                            "role\r\n"
                            "$7\r\n"
                            "replica\r\n"
                            "$18\r\n"
                            "replication-offset\r\n"
                            ":14\r\n"
                            "$6\r\n"
                            "health\r\n"
                            "$6\r\n"
                            "online\r\n";

// CLUSTER SLOTS on the same cluster at the same moment (CLUSTER SLOTS leaves out 17006).
const std::string kSlots = "*3\r\n"
                           "*4\r\n"
                           ":0\r\n"
                           ":5460\r\n"
                           "*4\r\n"
                           "$9\r\n"
                           "127.0.0.1\r\n"
                           ":17001\r\n"
                           "$40\r\n"
                           "ca7b693c5c3c3336ab1ab15d6346057dea0478c2\r\n"
                           "*0\r\n"
                           "*4\r\n"
                           "$9\r\n"
                           "127.0.0.1\r\n"
                           ":17004\r\n"
                           "$40\r\n"
                           "024874b13192996cd3c0f8ee00636b2b9db6d416\r\n"
                           "*0\r\n"
                           "*4\r\n"
                           ":5461\r\n"
                           ":10922\r\n"
                           "*4\r\n"
                           "$9\r\n"
                           "127.0.0.1\r\n"
                           ":17002\r\n"
                           "$40\r\n"
                           "deca7a8ca822cc9fb341e890b15505f20108f73d\r\n"
                           "*0\r\n"
                           "*4\r\n"
                           "$9\r\n"
                           "127.0.0.1\r\n"
                           ":17005\r\n"
                           "$40\r\n"
                           "346df32fa670f61516bd7f9385401ab21d1a0da5\r\n"
                           "*0\r\n"
                           "*3\r\n"
                           ":10923\r\n"
                           ":16383\r\n"
                           "*4\r\n"
                           "$9\r\n"
                           "127.0.0.1\r\n"
                           ":17003\r\n"
                           "$40\r\n"
                           "9ed0c323cc07430f453c21688b45af14c9e010fe\r\n"
                           "*0\r\n";

void check_three_masters(const ClusterTopology &t) {
  CHECK(t.shards.size() == 3);
  CHECK(t.covered_slots() == 16384);
  REQUIRE(t.shard_of(0) != nullptr);
  CHECK(t.shard_of(0)->master.addr() == "127.0.0.1:17001");
  CHECK(t.shard_of(5460)->master.addr() == "127.0.0.1:17001");
  CHECK(t.shard_of(5461)->master.addr() == "127.0.0.1:17002");
  CHECK(t.shard_of(10922)->master.addr() == "127.0.0.1:17002");
  CHECK(t.shard_of(10923)->master.addr() == "127.0.0.1:17003");
  CHECK(t.shard_of(16383)->master.addr() == "127.0.0.1:17003");
  CHECK(t.shard_of(cluster_slot("org:acme"))->master.addr() == "127.0.0.1:17001");
  CHECK(t.shard_of(0)->master.id == "ca7b693c5c3c3336ab1ab15d6346057dea0478c2");
}

} // namespace

TEST_CASE("CLUSTER SHARDS of a 3-master, 3-replica cluster maps every slot to its master") {
  auto reply = parse_resp(kShards);
  Result<ClusterTopology> t = parse_cluster_shards(*reply);
  REQUIRE(t.ok());
  check_three_masters(*t);
  const ClusterShard *s = t->shard_of(0);
  REQUIRE(s->replicas.size() == 1);
  CHECK(s->replicas[0].addr() == "127.0.0.1:17004");
  CHECK(s->replicas[0].online);
  CHECK(s->master.online);
  // 17006 was still loading its first sync: listed, not online.
  REQUIRE(t->shard_of(16383)->replicas.size() == 1);
  CHECK(t->shard_of(16383)->replicas[0].addr() == "127.0.0.1:17006");
  CHECK_FALSE(t->shard_of(16383)->replicas[0].online);
}

TEST_CASE("CLUSTER SLOTS of the same cluster gives the same table") {
  auto reply = parse_resp(kSlots);
  Result<ClusterTopology> t = parse_cluster_slots(*reply);
  REQUIRE(t.ok());
  check_three_masters(*t);
  REQUIRE(t->shard_of(0)->replicas.size() == 1);
  CHECK(t->shard_of(0)->replicas[0].addr() == "127.0.0.1:17004");
  CHECK(t->shard_of(16383)->replicas.empty()); // 17006 had not synced yet
}

TEST_CASE("a master that failed stays listed; its promoted replica serves the slots") {
  // The shape CLUSTER SHARDS has after kill -9 of a master and the failover: two nodes with
  // role master, the old one with health "fail".
  std::string bytes = "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n"
                      "$5\r\nnodes\r\n*2\r\n"
                      "*10\r\n$2\r\nid\r\n$1\r\na\r\n$4\r\nport\r\n:7001\r\n"
                      "$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
                      "$6\r\nhealth\r\n$4\r\nfail\r\n"
                      "*10\r\n$2\r\nid\r\n$1\r\nb\r\n$4\r\nport\r\n:7004\r\n"
                      "$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
                      "$6\r\nhealth\r\n$6\r\nonline\r\n";
  auto reply = parse_resp(bytes);
  Result<ClusterTopology> t = parse_cluster_shards(*reply);
  REQUIRE(t.ok());
  REQUIRE(t->shard_of(100) != nullptr);
  CHECK(t->shard_of(100)->master.addr() == "127.0.0.1:7004");
  REQUIRE(t->shard_of(100)->replicas.size() == 1);
  CHECK(t->shard_of(100)->replicas[0].addr() == "127.0.0.1:7001");
}

TEST_CASE("an endpoint of ? falls back to the ip, and IPv6 addresses get brackets") {
  std::string bytes = "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:99\r\n"
                      "$5\r\nnodes\r\n*1\r\n"
                      "*8\r\n$4\r\nport\r\n:7001\r\n$2\r\nip\r\n$3\r\n::1\r\n"
                      "$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$6\r\nmaster\r\n";
  auto reply = parse_resp(bytes);
  Result<ClusterTopology> t = parse_cluster_shards(*reply);
  REQUIRE(t.ok());
  CHECK(t->shard_of(0)->master.addr() == "[::1]:7001");
  CHECK(t->covered_slots() == 100);
  CHECK(t->shard_of(100) == nullptr);
}

TEST_CASE("replies of the wrong shape are refused with a reason, never trusted") {
  CHECK_FALSE(parse_cluster_shards(*parse_resp("-ERR unknown command 'CLUSTER SHARDS'\r\n")).ok());
  CHECK(parse_cluster_shards(*parse_resp("-ERR unknown subcommand\r\n")).error ==
        "ERR unknown subcommand");
  CHECK_FALSE(parse_cluster_shards(*parse_resp(":1\r\n")).ok());
  CHECK_FALSE(parse_cluster_shards(*parse_resp("*1\r\n*1\r\n$5\r\nslots\r\n")).ok());
  // A slot beyond 16383.
  CHECK_FALSE(parse_cluster_slots(*parse_resp("*1\r\n*3\r\n:0\r\n:16384\r\n"
                                              "*2\r\n$1\r\nh\r\n:1\r\n"))
                  .ok());
  // A port of 0.
  CHECK_FALSE(parse_cluster_slots(*parse_resp("*1\r\n*3\r\n:0\r\n:5\r\n"
                                              "*2\r\n$1\r\nh\r\n:0\r\n"))
                  .ok());
  // An empty topology (a cluster with no slots assigned) parses, and owns nothing.
  Result<ClusterTopology> empty = parse_cluster_slots(*parse_resp("*0\r\n"));
  REQUIRE(empty.ok());
  CHECK(empty->covered_slots() == 0);
  CHECK(empty->shard_of(0) == nullptr);
}

TEST_CASE("MOVED and ASK redirections name the slot and the node") {
  auto moved = parse_cluster_redirect("MOVED 3999 127.0.0.1:6381");
  REQUIRE(moved);
  CHECK_FALSE(moved->ask);
  CHECK(moved->slot == 3999);
  CHECK(moved->addr() == "127.0.0.1:6381");
  auto ask = parse_cluster_redirect("ASK 12182 [::1]:7002");
  REQUIRE(ask);
  CHECK(ask->ask);
  CHECK(ask->host == "::1");
  CHECK(ask->addr() == "[::1]:7002");
  auto bare = parse_cluster_redirect("MOVED 1 :7000");
  REQUIRE(bare);
  CHECK(bare->host.empty());
  CHECK_FALSE(parse_cluster_redirect("MOVED 16384 h:1"));
  CHECK_FALSE(parse_cluster_redirect("MOVED x h:1"));
  CHECK_FALSE(parse_cluster_redirect("MOVED 1 h"));
  CHECK_FALSE(parse_cluster_redirect("MOVED 1 h:0"));
  CHECK_FALSE(parse_cluster_redirect("ERR MOVED 1 h:1"));
  CHECK_FALSE(parse_cluster_redirect("NOPERM"));
}

TEST_CASE("a one-node cluster that never met a peer reports no address: it is the node asked") {
  // CLUSTER SHARDS of a node given every slot with CLUSTER ADDSLOTSRANGE and no
  // cluster-announce-ip: "ip" and "endpoint" are empty.
  std::string bytes = "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n"
                      "$5\r\nnodes\r\n*1\r\n"
                      "*12\r\n$2\r\nid\r\n$1\r\na\r\n$4\r\nport\r\n:7001\r\n"
                      "$2\r\nip\r\n$0\r\n\r\n$8\r\nendpoint\r\n$0\r\n\r\n"
                      "$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
  auto reply = parse_resp(bytes);
  Result<ClusterTopology> t = parse_cluster_shards(*reply, "10.0.0.7");
  REQUIRE(t.ok());
  CHECK(t->shard_of(16383)->master.addr() == "10.0.0.7:7001");
  // Without knowing who answered, an empty address is unusable.
  CHECK_FALSE(parse_cluster_shards(*reply).ok());
  // CLUSTER SLOTS says the same with an empty host; "?" (unknown endpoint) stays unusable.
  auto slots = parse_resp("*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$0\r\n\r\n:7001\r\n$1\r\na\r\n");
  Result<ClusterTopology> s = parse_cluster_slots(*slots, "10.0.0.7");
  REQUIRE(s.ok());
  CHECK(s->shard_of(0)->master.addr() == "10.0.0.7:7001");
  auto unknown = parse_resp("*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$1\r\n?\r\n:7001\r\n$1\r\na\r\n");
  CHECK_FALSE(parse_cluster_slots(*unknown, "10.0.0.7").ok());
}
