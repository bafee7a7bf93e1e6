// Fuzzes what Redis sends, in two modes chosen by bit 7 of byte 0 (its low 6 bits pick the read
// size, 1..64):
//
// - reader mode: hiredis's redisReader fed arbitrary bytes, then a walk of every reply tree that
//   reads every byte and tells pub/sub pushes from replies the way the subscriber link does
//   (classify() below). The rest of the input is the byte stream. This is hiredis on its own.
// - link mode: RedisReplies (sidecar/redis_link.h), the pure half of a Redis link, is told which
//   commands were sent and fed the stream; it must hand each reply to the command it answers, in
//   order, and pub/sub messages to the sink. Byte 1: bit 0 subscriber link, bits 1-3 the number
//   of commands sent (0..7); then one byte per command (its kind); then the stream.
//
// Invariants, each an abort when broken:
// - hiredis hands up well-formed trees: string kinds have str != NULL and a NUL at str[len], arrays
//   have non-null elements; an error from the reader is final (no reply after it);
// - every byte a reply tree points at lies inside that tree's own allocations, which ASan checks
//   as the walk reads every byte (it sums them, so nothing is optimised away).
//
// - link mode: replies reach the sink in the order the commands were sent, never more of them
//   than were sent, and pending() counts the rest; a link that is not a subscriber gets no
//   pub/sub messages; a non-empty reason from feed() is final (the link closes).
//
// Arrays are capped at kMaxElements by a wrapper around hiredis's own createArray: hiredis 0.14
// trusts the element count of "*N\r\n" and callocs N pointers up front ("*4294967295\r\n" asks for
// 32 GiB), which libFuzzer would report as an out-of-memory crash on every run. The cap keeps
// the fuzzer on the parsing; the uncapped behaviour is a known hiredis 0.14 limit (fixed in hiredis
// 1.0 with maxelements), written up in the fuzzing report rather than rediscovered here.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_stats.h"

#include "redis_link.h"

// RedisReplies owns its reader, so its arrays are not capped: "*4294967295\r\n" makes hiredis
// calloc 32 GiB there. Allocations over 512 MiB fail (NULL, which hiredis reports as out of
// memory) instead of ending the run as an out-of-memory crash: the link must survive that too.
extern "C" const char *__asan_default_options() {
  return "allocator_may_return_null=1:max_allocation_size_mb=512";
}

namespace {

enum : size_t {
  kReplies,
  kMessages,
  kPmessages,
  kSubscribeAcks,
  kProtocolErrors,
  kErrorReplies,
  kCapped,
  kNested,
  kLinkReply,
  kLinkMessage,
  kLinkClosed
};
fuzz::Stats stats("fuzz_resp", {{"replies", true},
                                {"message", true},
                                {"pmessage", true},
                                {"subscribe_ack", true},
                                {"protocol_error", true},
                                {"error_reply", true},
                                {"array_capped", true},
                                {"nested_array", true},
                                {"link_reply", true},
                                {"link_message", true},
                                {"link_closed", true}});

constexpr size_t kMaxElements = 1 << 16;

[[noreturn]] void broken(const char *what, size_t a) {
  std::fprintf(stderr, "fuzz_resp: %s (%zu)\n", what, a);
  std::abort();
}

// The element count is an int in hiredis 0.14 and a size_t in 1.x; take whichever this one has.
template <class R, class T, class N> N count_type_of(R (*)(T, N));
using ElementCount = decltype(count_type_of(redisReplyObjectFunctions{}.createArray));

redisReplyObjectFunctions capped_fns;
decltype(redisReplyObjectFunctions{}.createArray) default_create_array = nullptr;

void *create_array_capped(const redisReadTask *task, ElementCount elements) {
  if (elements < 0 || static_cast<size_t>(elements) > kMaxElements) {
    stats.hit(kCapped);
    return nullptr; // the reader turns this into "Out of memory", a protocol error
  }
  return default_create_array(task, elements);
}

bool is_string_kind(int type) {
  return type == REDIS_REPLY_STRING || type == REDIS_REPLY_STATUS || type == REDIS_REPLY_ERROR;
}

std::string_view str_of(const redisReply *r) {
  if (r == nullptr || !is_string_kind(r->type))
    return {};
  return {r->str, r->len};
}

// Reads every byte of the tree; returns a checksum so that the reads cannot be dropped.
size_t walk(const redisReply *r, int depth) {
  if (r == nullptr)
    broken("a null reply in a tree", static_cast<size_t>(depth));
  size_t sum = static_cast<size_t>(r->type);
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
  case REDIS_REPLY_ERROR:
    if (r->str == nullptr)
      broken("a string reply without bytes", r->len);
    if (r->str[r->len] != '\0')
      broken("a string reply without its terminating NUL", r->len);
    for (size_t i = 0; i < r->len; ++i)
      sum += static_cast<unsigned char>(r->str[i]);
    break;
  case REDIS_REPLY_ARRAY:
    if (r->elements > 0 && r->element == nullptr)
      broken("an array without its element table", r->elements);
    if (depth > 0 && r->elements > 0)
      stats.hit(kNested);
    for (size_t i = 0; i < r->elements; ++i)
      sum += walk(r->element[i], depth + 1);
    break;
  case REDIS_REPLY_INTEGER:
    sum += static_cast<size_t>(r->integer);
    break;
  case REDIS_REPLY_NIL:
    break;
  default:
    broken("a reply type hiredis 0.14 does not have", static_cast<size_t>(r->type));
  }
  return sum;
}

// What the subscriber connection decides for one reply (see the file comment).
size_t classify(const redisReply *r) {
  if (r->type == REDIS_REPLY_ERROR) {
    stats.hit(kErrorReplies);
    return r->len;
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3)
    return 0;
  std::string_view kind = str_of(r->element[0]);
  if (kind == "message") {
    std::string_view channel = str_of(r->element[1]);
    std::string_view payload = str_of(r->element[2]);
    stats.hit(kMessages);
    return channel.size() + payload.size();
  }
  if (kind == "pmessage" && r->elements >= 4) {
    stats.hit(kPmessages);
    return str_of(r->element[2]).size() + str_of(r->element[3]).size();
  }
  if (kind == "subscribe" || kind == "unsubscribe") {
    stats.hit(kSubscribeAcks);
    return str_of(r->element[1]).size() + (r->element[2]->type == REDIS_REPLY_INTEGER ? 1 : 0);
  }
  return 0;
}

struct LinkChecker final : sidecar::RedisReplies::Sink {
  void on_reply(const sidecar::RedisPending &cmd, const redisReply &reply) override {
    if (replies >= sent.size())
      broken("more replies than commands sent", replies);
    if (cmd.cmd != sent[replies])
      broken("a reply reached the wrong command", replies);
    ++replies;
    stats.hit(kLinkReply);
    sink += walk(&reply, 0);
  }
  void on_message(std::string_view pattern, std::string_view channel,
                  std::string_view payload) override {
    if (!subscriber)
      broken("a pub/sub message on a link that is not a subscriber", 0);
    stats.hit(kLinkMessage);
    for (char c : pattern)
      sink += static_cast<unsigned char>(c);
    for (char c : channel)
      sink += static_cast<unsigned char>(c);
    for (char c : payload)
      sink += static_cast<unsigned char>(c);
  }
  bool subscriber = false;
  std::vector<sidecar::RedisCmd> sent;
  size_t replies = 0;
  size_t sink = 0;
};

void link_mode(const uint8_t *data, size_t size, size_t chunk) {
  if (size < 1)
    return;
  LinkChecker c;
  c.subscriber = (data[0] & 1) != 0;
  size_t n = (data[0] >> 1) & 7;
  if (size < 1 + n)
    return;
  sidecar::RedisReplies replies(c.subscriber);
  static constexpr sidecar::RedisCmd kCmds[] = {
      sidecar::RedisCmd::auth,      sidecar::RedisCmd::select,      sidecar::RedisCmd::ping,
      sidecar::RedisCmd::subscribe, sidecar::RedisCmd::unsubscribe, sidecar::RedisCmd::xadd};
  for (size_t i = 0; i < n; ++i) {
    c.sent.push_back(kCmds[data[1 + i] % 6]);
    replies.expect(c.sent.back(), "org:acme", i);
  }
  const char *stream = reinterpret_cast<const char *>(data + 1 + n);
  size_t len = size - 1 - n;
  for (size_t off = 0; off < len; off += chunk) {
    std::string why = replies.feed(stream + off, std::min(chunk, len - off), c);
    if (replies.pending() + c.replies != c.sent.size())
      broken("pending() does not count the commands still unanswered", replies.pending());
    if (!why.empty()) {
      stats.hit(kLinkClosed);
      return; // the link closes the connection here
    }
  }
  volatile size_t keep = c.sink;
  (void)keep;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t chunk = 1 + (data[0] & 0x3f);
  if ((data[0] & 0x80) != 0) {
    link_mode(data + 1, size - 1, chunk);
    return 0;
  }
  redisReader *reader = redisReaderCreate();
  if (reader == nullptr)
    return 0;
  if (default_create_array == nullptr) {
    capped_fns = *reader->fn;
    default_create_array = capped_fns.createArray;
    capped_fns.createArray = &create_array_capped;
  }
  reader->fn = &capped_fns;

  volatile size_t sink = 0;
  bool failed = false;
  for (size_t off = 1; off < size && !failed; off += chunk) {
    size_t len = std::min(chunk, size - off);
    if (redisReaderFeed(reader, reinterpret_cast<const char *>(data + off), len) != REDIS_OK)
      broken("the reader refused bytes", len);
    for (;;) {
      void *out = nullptr;
      if (redisReaderGetReply(reader, &out) != REDIS_OK) {
        if (out != nullptr)
          broken("a reply together with an error", 0);
        if (reader->err == 0)
          broken("an error without a code", 0);
        stats.hit(kProtocolErrors);
        failed = true;
        break;
      }
      if (out == nullptr)
        break; // needs more bytes
      auto *reply = static_cast<redisReply *>(out);
      stats.hit(kReplies);
      sink = sink + walk(reply, 0) + classify(reply);
      freeReplyObject(reply);
    }
  }
  if (failed) {
    // An error is final: hiredis must not produce a reply from a broken stream.
    void *out = nullptr;
    if (redisReaderGetReply(reader, &out) == REDIS_OK && out != nullptr)
      broken("a reply after a protocol error", 0);
  }
  redisReaderFree(reader);
  (void)sink;
  return 0;
}
