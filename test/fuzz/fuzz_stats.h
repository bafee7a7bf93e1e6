// Branch counters for the fuzz targets: how often an input reached the outcomes a target exists
// for (a 431 for an oversized head, a 1009 for an oversized message, an accepted token...).
//
// With FUZZ_STATS=1 in the environment, the counts are printed to stderr when the process exits:
//   fuzz_stats: fuzz_http raw_431=12 structured_431=40 ...
//   fuzz_stats: fuzz_http UNREACHED structured_431
// A counter marked required that stayed at zero is reported UNREACHED. scripts/fuzz.sh replays
// each corpus with -runs=0 and FUZZ_STATS=1 after fuzzing, and fails a target whose corpus no
// longer reaches its limits, so "the fuzzer never got there" cannot pass silently.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

namespace fuzz {

class Stats {
public:
  struct Counter {
    const char *name;
    bool required;
  };

  Stats(const char *target, std::initializer_list<Counter> counters)
      : target_(target), names_(counters), counts_(counters.size(), 0) {}
  Stats(const Stats &) = delete;
  Stats &operator=(const Stats &) = delete;

  void hit(size_t i) { ++counts_[i]; }

  // Runs at exit(), after libFuzzer's last input; prints only when asked, so fuzzing stays quiet.
  ~Stats() {
    const char *env = std::getenv("FUZZ_STATS");
    if (env == nullptr || *env == '\0' || *env == '0')
      return;
    std::string line = std::string("fuzz_stats: ") + target_;
    std::string unreached;
    for (size_t i = 0; i < names_.size(); ++i) {
      line += " " + std::string(names_[i].name) + "=" + std::to_string(counts_[i]);
      if (names_[i].required && counts_[i] == 0)
        unreached += " " + std::string(names_[i].name);
    }
    std::fprintf(stderr, "%s\n", line.c_str());
    if (!unreached.empty())
      std::fprintf(stderr, "fuzz_stats: %s UNREACHED%s\n", target_, unreached.c_str());
  }

private:
  const char *target_;
  std::vector<Counter> names_;
  std::vector<unsigned long> counts_;
};

} // namespace fuzz
