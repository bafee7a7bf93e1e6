#include "shared_name.h"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

using namespace sidecar;

TEST_CASE("one copy per distinct name, gone with its last holder") {
  NameTable t;
  std::vector<SharedName> holders;
  for (int i = 0; i < 1000; ++i)
    holders.push_back(t.intern(i % 2 == 0 ? "acme" : "Mozilla/5.0 (X11; Linux x86_64) long agent"));
  CHECK(t.size() == 2);
  CHECK(holders[0].str() == "acme");
  CHECK(holders[1].str() == "Mozilla/5.0 (X11; Linux x86_64) long agent");
  // The same node: the same string object, not an equal copy.
  CHECK(&holders[0].str() == &holders[998].str());

  // Every "acme" holder goes: its entry goes with the last, the other stays.
  std::vector<SharedName> kept;
  for (size_t i = 1; i < holders.size(); i += 2)
    kept.push_back(std::move(holders[i]));
  holders.clear();
  CHECK(t.size() == 1);
  CHECK(kept.back().str() == "Mozilla/5.0 (X11; Linux x86_64) long agent");
  kept.clear();
  CHECK(t.size() == 0);

  // A name interned again after it was gone is a fresh entry with the same text.
  SharedName again = t.intern("acme");
  CHECK(again.str() == "acme");
  CHECK(t.size() == 1);
}

TEST_CASE("the empty name is stored nowhere and reads as an empty string") {
  NameTable t;
  SharedName none;
  SharedName empty = t.intern("");
  CHECK(none.empty());
  CHECK(empty.empty());
  CHECK(none.str().empty());
  CHECK(t.size() == 0);
}

TEST_CASE("copies, moves and self-assignment keep the count right") {
  NameTable t;
  SharedName a = t.intern("org-a");
  {
    SharedName b = a;            // copy
    SharedName c = std::move(b); // move: b holds nothing now
    CHECK(b.empty());            // NOLINT(bugprone-use-after-move): moved-from is empty
    SharedName &same = c;
    c = same; // self copy-assignment keeps it
    CHECK(c.str() == "org-a");
    c = t.intern("org-b"); // reassigning drops c's hold on org-a only
    CHECK(t.size() == 2);
  }
  CHECK(t.size() == 1); // org-b went with c; a still holds org-a
  CHECK(a.str() == "org-a");
  SharedName &alias = a;
  a = std::move(alias); // self move-assignment keeps it
  CHECK(a.str() == "org-a");
  a = SharedName();
  CHECK(t.size() == 0);
}
