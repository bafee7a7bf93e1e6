// The generic YAML reader without sidecar's schema: sizes, suggestions, the one-document scan,
// and walking a map of made-up keys.
#include "yaml_reader.h"

#include <doctest/doctest.h>

using namespace sidecar;

namespace {

struct Sink {
  std::vector<ConfigError> errors;
  std::map<std::string, int> lines;
  EnvLookup env;
  YamlReader reader{errors, lines, "t.yaml", env};
};

} // namespace

TEST_CASE("byte counts are plain integers or whole binary units") {
  uint64_t v = 0;
  CHECK((parse_bytes("65536", v) && v == 65536));
  CHECK((parse_bytes("64KiB", v) && v == 65536));
  CHECK((parse_bytes("1 MiB", v) && v == kMiB));
  CHECK((parse_bytes("2GiB", v) && v == 2 * kGiB));
  for (const char *bad : {"", "KiB", "1MB", "1kib", "1.5MiB", "-1", "1 KiB ", "17179869184GiB"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_bytes(bad, v));
  }
  CHECK(format_bytes(0) == "0");
  CHECK(format_bytes(1000) == "1000");
  CHECK(format_bytes(64 * kKiB) == "64 KiB");
  CHECK(format_bytes(16 * kMiB) == "16 MiB");
  CHECK(format_bytes(kGiB) == "1 GiB");
}

TEST_CASE("edit distance counts single-character edits") {
  CHECK(edit_distance("listen", "listen") == 0);
  CHECK(edit_distance("lsiten", "listen") == 2);
  CHECK(edit_distance("", "abc") == 3);
  CHECK(edit_distance("heartbeat_ms", "heartbeat_s") == 1);
}

TEST_CASE("the text scan finds a second document and the first line of content") {
  CHECK(second_document_line("a: 1\n") == 0);
  CHECK(second_document_line("---\na: 1\n") == 0);
  CHECK(second_document_line("a: 1\n---\nb: 2\n") == 2);
  CHECK(second_document_line("a: |\n  ---\n") == 0);
  CHECK(first_content_line("# c\n\n---\n  x: 1\n") == 4);
  CHECK(first_content_line("# only a comment\n") == 0);
}

TEST_CASE("walking a map reads known keys, records their lines and suggests for unknown ones") {
  Sink s;
  uint32_t depth = 0;
  std::string name;
  bool read = s.reader.read_document("deep:\n  depth: 7\nnmae: x\n", [&](const At &root) {
    s.reader.walk_map(root, "",
                      {{"deep.depth", [&](const At &a) { s.reader.read_uint(a, 1, 9, depth); }},
                       {"name", [&](const At &a) { s.reader.read_string(a, name); }}});
  });
  CHECK(read);
  CHECK(depth == 7);
  CHECK(s.lines.at("deep.depth") == 2);
  REQUIRE(s.errors.size() == 1);
  CHECK(s.errors[0].to_string() == "t.yaml:3: nmae: unknown key; did you mean \"name\"?");
}

TEST_CASE("a document that cannot be read is one error and no root") {
  Sink s;
  bool called = false;
  CHECK_FALSE(s.reader.read_document("a: 1\n---\nb: 2\n", [&](const At &) { called = true; }));
  CHECK_FALSE(s.reader.read_document("a: [1\n", [&](const At &) { called = true; }));
  CHECK_FALSE(called);
  CHECK(s.errors.size() == 2);
  CHECK(s.errors[0].to_string() == "t.yaml:2: only one YAML document is allowed");
}
