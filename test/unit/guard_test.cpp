#include "guard.h"

#include <doctest/doctest.h>

#include <stdexcept>

using namespace sidecar;

TEST_CASE("guarded runs the body and nothing else when it does not throw") {
  uint64_t before = internal_errors_total();
  bool ran = false, failed = false;
  guarded(
      "test", 1, "none", [&] { ran = true; }, [&] { failed = true; });
  CHECK(ran);
  CHECK_FALSE(failed);
  CHECK(internal_errors_total() == before);
}

TEST_CASE("guarded stops a std::exception and anything else, counts it and runs on_error") {
  uint64_t before = internal_errors_total();
  int failures = 0;
  guarded(
      "test", 2, "closing", [] { throw std::runtime_error("boom"); }, [&] { ++failures; });
  guarded(
      "test", 3, "closing", [] { throw 42; }, [&] { ++failures; });
  guarded("test", 0, "nothing", [] { throw std::logic_error("no on_error"); });
  CHECK(failures == 2);
  CHECK(internal_errors_total() == before + 3);
}
