// redis_uv: hooks a hiredis async context into the libuv loop. It replaces hiredis 0.14's own
// adapters/libuv.h, which drops poll errors on the floor: a Redis that dies with an RST while
// replies are pending was never noticed (the sidecar stayed "ready" and never reconnected), and a
// refused connect was only seen when our connect timeout ran out.
#pragma once

#include <uv.h>

struct redisAsyncContext;

namespace sidecar {

// Returns 0, or a libuv error when the poll handle cannot be created. hiredis owns the returned
// state: it is freed through the cleanup hook when the context goes away.
int redis_attach_uv(redisAsyncContext *ac, uv_loop_t *loop);

} // namespace sidecar
