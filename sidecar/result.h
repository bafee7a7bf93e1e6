// Result<T>: a value, or the reason there is none. GCC 12 has no std::expected; this is the one
// shape for "value or error message" in parsers and checks that have a single reason to give.
// Config loading, which reports every problem at once, keeps its own ConfigResult.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace sidecar {

template <typename T> struct Result {
  std::optional<T> value;
  std::string error; // empty when value is set

  Result(T v) : value(std::move(v)) {} // NOLINT: a value converts, so `return parsed;` reads well
  static Result fail(std::string why) {
    Result r;
    r.error = std::move(why);
    return r;
  }

  bool ok() const { return value.has_value(); }
  explicit operator bool() const { return ok(); }
  T &operator*() { return *value; }
  const T &operator*() const { return *value; }
  T *operator->() { return &*value; }
  const T *operator->() const { return &*value; }

private:
  Result() = default;
};

} // namespace sidecar
