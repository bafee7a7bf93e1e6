// redis_uv; see redis_uv.h.
#include "redis_uv.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sys/ioctl.h>

namespace sidecar {
namespace {

// One per context. The poll handle must outlive the context until its close callback, so the
// context pointer is cleared in cleanup and the memory freed in on_closed.
struct RedisPoll {
  uv_poll_t handle{};
  redisAsyncContext *ac = nullptr;
  int events = 0;
};

// At most this many reads per wakeup: enough to take everything Redis has handed over in one
// loop turn (so fan-out batches per socket), bounded so that one busy channel cannot starve the
// clients' own reads.
constexpr int kMaxReadsPerWakeup = 16;

void on_poll(uv_poll_t *h, int status, int events) {
  auto *p = static_cast<RedisPoll *>(h->data);
  // On an error libuv reports no events; hand hiredis both directions so that its own read or
  // write fails and it runs the disconnect path.
  int ev = status < 0 ? p->events : events;
  if (p->ac != nullptr && (ev & UV_READABLE)) {
    for (int i = 0; i < kMaxReadsPerWakeup && p->ac != nullptr; ++i) {
      redisAsyncHandleRead(p->ac);
      if (p->ac == nullptr || status < 0)
        break;
      int pending = 0;
      if (ioctl(p->ac->c.fd, FIONREAD, &pending) != 0 || pending <= 0)
        break;
    }
  }
  if (p->ac != nullptr && (ev & UV_WRITABLE))
    redisAsyncHandleWrite(p->ac);
}

void update(RedisPoll *p, int add, int remove) {
  p->events = (p->events | add) & ~remove;
  if (p->events != 0) {
    uv_poll_start(&p->handle, p->events, &on_poll);
  } else {
    uv_poll_stop(&p->handle);
  }
}

void add_read(void *d) { update(static_cast<RedisPoll *>(d), UV_READABLE, 0); }
void del_read(void *d) { update(static_cast<RedisPoll *>(d), 0, UV_READABLE); }
void add_write(void *d) { update(static_cast<RedisPoll *>(d), UV_WRITABLE, 0); }
void del_write(void *d) { update(static_cast<RedisPoll *>(d), 0, UV_WRITABLE); }

void on_closed(uv_handle_t *h) { delete static_cast<RedisPoll *>(h->data); }

void cleanup(void *d) {
  auto *p = static_cast<RedisPoll *>(d);
  p->ac = nullptr; // the context is being freed; a poll callback may still be queued
  uv_close(reinterpret_cast<uv_handle_t *>(&p->handle), &on_closed);
}

} // namespace

int redis_attach_uv(redisAsyncContext *ac, uv_loop_t *loop) {
  if (ac->ev.data != nullptr)
    return UV_EINVAL;
  auto *p = new RedisPoll;
  int rc = uv_poll_init(loop, &p->handle, ac->c.fd);
  if (rc != 0) {
    delete p;
    return rc;
  }
  p->handle.data = p;
  p->ac = ac;
  ac->ev.addRead = &add_read;
  ac->ev.delRead = &del_read;
  ac->ev.addWrite = &add_write;
  ac->ev.delWrite = &del_write;
  ac->ev.cleanup = &cleanup;
  ac->ev.data = p;
  return 0;
}

} // namespace sidecar
