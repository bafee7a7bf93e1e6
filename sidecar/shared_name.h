// SharedName: a string that many sessions hold alike (their org, their browser's User-Agent),
// stored once per distinct value in a NameTable and 8 bytes in each holder. 10,000 sessions of
// one org keep one "acme" instead of 10,000 strings of 32 bytes each; 10,000 Chrome tabs keep
// one 120-byte User-Agent instead of 10,000 heap copies.
//
// Only for values that repeat: a name that is not shared costs its table entry (about 100 bytes)
// on top of the string, so per-connection values (a user id, an address) stay plain strings.
//
// Single-threaded, like the loop that uses it. The table must outlive every name it gave out.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace sidecar {

class NameTable;

class SharedName {
public:
  SharedName() noexcept = default; // the empty string, no table entry
  SharedName(const SharedName &o) noexcept : node_(o.node_) { retain(); }
  SharedName(SharedName &&o) noexcept : node_(o.node_) { o.node_ = nullptr; }
  SharedName &operator=(const SharedName &o) noexcept;
  SharedName &operator=(SharedName &&o) noexcept;
  ~SharedName() { release(); }

  const std::string &str() const noexcept;
  bool empty() const noexcept { return node_ == nullptr; }

private:
  friend class NameTable;
  struct Node {
    NameTable *table;
    uint32_t refs;
    std::string text;
  };
  explicit SharedName(Node *n) noexcept : node_(n) { retain(); }
  void retain() noexcept {
    if (node_ != nullptr)
      ++node_->refs;
  }
  void release() noexcept;

  Node *node_ = nullptr;
};

class NameTable {
public:
  NameTable() = default;
  NameTable(const NameTable &) = delete;
  NameTable &operator=(const NameTable &) = delete;
  ~NameTable(); // frees what is left; no name of it may be used after

  // The table's copy of `text`, made on first use; the empty string is never stored. Throws
  // std::bad_alloc.
  SharedName intern(std::string_view text);
  size_t size() const noexcept { return nodes_.size(); }

private:
  friend class SharedName;
  void erase(SharedName::Node *n) noexcept;

  // Keyed by a view of the node's own text.
  std::unordered_map<std::string_view, SharedName::Node *> nodes_;
};

} // namespace sidecar
