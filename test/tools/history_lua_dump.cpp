// Test helper: prints history_library() for the history entries given as arguments, so that the
// integration tests load into a real Redis exactly the library the sidecar generates. Until
// Config has a history list (and main.cpp a flag to print it), this is how the library is seen.
//
//   history_lua_dump TEMPLATE SIZE TTL_S MAX_RECOVER [TEMPLATE SIZE TTL_S MAX_RECOVER ...]
//
// Exit 1 with every problem on stderr when the list does not pass check_history.
#include <cstdio>
#include <string>
#include <vector>

#include "config.h"
#include "history.h"

int main(int argc, char **argv) {
  using namespace sidecar;
  if (argc < 5 || (argc - 1) % 4 != 0) {
    std::fprintf(stderr, "usage: %s TEMPLATE SIZE TTL_S MAX_RECOVER [...]\n", argv[0]);
    return 2;
  }
  std::vector<HistoryConfig> list;
  for (int i = 1; i + 3 < argc; i += 4) {
    uint64_t n[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) {
      if (!parse_u64(argv[i + 1 + k], n[k]) || n[k] > UINT32_MAX) {
        std::fprintf(stderr, "not a number: %s\n", argv[i + 1 + k]);
        return 2;
      }
    }
    list.push_back({argv[i], static_cast<uint32_t>(n[0]), static_cast<uint32_t>(n[1]),
                    static_cast<uint32_t>(n[2])});
  }
  std::vector<HistoryProblem> problems = check_history(list);
  for (const HistoryProblem &p : problems)
    std::fprintf(stderr, "history[%zu].%s: %s\n", p.index, p.key.c_str(), p.reason.c_str());
  if (!problems.empty())
    return 1;
  std::string lib = history_library(list);
  std::fwrite(lib.data(), 1, lib.size(), stdout);
  return 0;
}
