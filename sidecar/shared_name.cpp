// SharedName and NameTable; see shared_name.h.
#include "shared_name.h"

#include <memory>

namespace sidecar {

SharedName &SharedName::operator=(const SharedName &o) noexcept {
  if (node_ != o.node_) {
    release();
    node_ = o.node_;
    retain();
  }
  return *this;
}

SharedName &SharedName::operator=(SharedName &&o) noexcept {
  if (this != &o) {
    release();
    node_ = o.node_;
    o.node_ = nullptr;
  }
  return *this;
}

const std::string &SharedName::str() const noexcept {
  static const std::string empty;
  return node_ != nullptr ? node_->text : empty;
}

void SharedName::release() noexcept {
  if (node_ != nullptr && --node_->refs == 0)
    node_->table->erase(node_);
  node_ = nullptr;
}

NameTable::~NameTable() {
  for (auto &[text, node] : nodes_)
    delete node;
}

SharedName NameTable::intern(std::string_view text) {
  if (text.empty())
    return {};
  if (auto it = nodes_.find(text); it != nodes_.end())
    return SharedName(it->second);
  auto node = std::make_unique<SharedName::Node>(SharedName::Node{this, 0, std::string(text)});
  nodes_.emplace(std::string_view(node->text), node.get());
  return SharedName(node.release());
}

void NameTable::erase(SharedName::Node *n) noexcept {
  nodes_.erase(std::string_view(n->text));
  delete n;
}

} // namespace sidecar
