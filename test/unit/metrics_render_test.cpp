// render_prometheus: the per-node series of a cluster (issue 13).
#include "metrics.h"

#include <doctest/doctest.h>

#include <string>

using namespace sidecar;

TEST_CASE("a single Redis renders no per-node series") {
  Metrics m;
  MetricsSnapshot s;
  std::string out = render_prometheus(m, s);
  CHECK(out.find("sidecar_redis_node_up") == std::string::npos);
  CHECK(out.find("sidecar_redis_cluster_topology_refreshes_total") == std::string::npos);
  CHECK(out.find("sidecar_redis_reconnects_total 0\n") != std::string::npos);
}

TEST_CASE("a cluster renders one series per node and role, and its own counters") {
  Metrics m;
  MetricsSnapshot s;
  s.redis_nodes = {{"10.0.0.1:7000", "subscriber", true, 0, 2},
                   {"10.0.0.1:7000", "master", true, 3, 40},
                   {"10.0.0.2:7000", "master", false, 7, 0}};
  s.cluster = {12, 5, 1};
  std::string out = render_prometheus(m, s);
  CHECK(out.find("sidecar_redis_node_up{node=\"10.0.0.1:7000\",role=\"subscriber\"} 1\n") !=
        std::string::npos);
  CHECK(out.find("sidecar_redis_node_up{node=\"10.0.0.2:7000\",role=\"master\"} 0\n") !=
        std::string::npos);
  CHECK(out.find("sidecar_redis_node_reconnects_total{node=\"10.0.0.2:7000\",role=\"master\"} "
                 "7\n") != std::string::npos);
  CHECK(out.find("sidecar_redis_node_subscriptions{node=\"10.0.0.1:7000\",role=\"master\"} "
                 "40\n") != std::string::npos);
  CHECK(out.find("sidecar_redis_cluster_topology_refreshes_total 12\n") != std::string::npos);
  CHECK(out.find("sidecar_inbound_redirects_total 5\n") != std::string::npos);
  CHECK(out.find("sidecar_inbound_lost_total 1\n") != std::string::npos);
  // One HELP and TYPE per family, not per node.
  size_t helps = 0;
  for (size_t at = 0; (at = out.find("# TYPE sidecar_redis_node_up ", at)) != std::string::npos;
       ++at)
    ++helps;
  CHECK(helps == 1);
}

TEST_CASE("a node name that Redis reported with quotes or a newline cannot break the format") {
  Metrics m;
  MetricsSnapshot s;
  s.redis_nodes = {{"evil\"} 1\nsidecar_fake 9\\:7000", "master", true, 0, 0}};
  std::string out = render_prometheus(m, s);
  CHECK(out.find("node=\"evil\\\"} 1\\nsidecar_fake 9\\\\:7000\"") != std::string::npos);
  CHECK(out.find("\nsidecar_fake 9") == std::string::npos);
}
