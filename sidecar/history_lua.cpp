// The Redis Function library that keeps history (issue 11): generated from the `history:` list,
// loaded with FUNCTION LOAD REPLACE. Every sidecar on one Redis must have the same list, since
// the last one to connect replaces the library for all of them.
//
// sidecar_publish 1 C payload: the channel's template (first match, as find_history), the
// epoch (made with the metadata hash when it is missing, and again after a failover: epoch_of),
// XADD at the next position, EXPIRE of
// both keys, PUBLISH of the header and payload; returns the position. The position is written
// only after XADD succeeded, so a refused XADD leaves no hole behind.
//
// sidecar_read 1 C from count: [epoch, top, offset, payload, ...], the entries after `from`,
// none when top - from > count. It makes the epoch when missing, so it writes; it is marked
// allow-oom because that write is one small hash with a TTL, and refusing reads at maxmemory
// would turn every resume into a resync while nothing new can be published anyway.
//
// The functions derive their keys from KEYS[1] (the channel) instead of receiving them: the
// contract is `FCALL sidecar_publish 1 <channel> <payload>`. Both keys hash-tag the whole channel
// name, so they live in the channel's slot and a Cluster routes the call to the right node.
// While that slot migrates, though, a Cluster redirects a call by whether its declared keys exist
// on the source, and the channel is never a key: every call is sent to the target, which would
// start a second history there (and the keys' MIGRATE then fails). So the functions also take
// the two keys themselves, `2 sidecar:{C}:s sidecar:{C}:m`, which a Cluster routes by where they
// are (TRYAGAIN while they are split); README "Scaling out" says when to use which.
#include "history.h"

#include <cstdio>
#include <string>

namespace sidecar {
namespace {

// A Lua string literal holding any bytes: printable ASCII but the quote and the backslash as it
// is, everything else as a decimal escape, so no template can end the literal or the line.
std::string lua_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    bool plain = c >= 0x20 && c < 0x7F && c != '"' && c != '\\';
    if (plain) {
      out.push_back(static_cast<char>(c));
    } else {
      // Always three digits: Lua reads up to three, so a shorter escape would swallow a digit.
      char esc[5];
      std::snprintf(esc, sizeof esc, "\\%03u", static_cast<unsigned>(c));
      out.append(esc, 4);
    }
  }
  out.push_back('"');
  return out;
}

// An anchored Lua pattern for a template: literals escaped, each placeholder one or more of the
// characters is_valid_org admits. Lua's matcher backtracks over single-class repetitions as
// channel_matches_template does, so both agree on every channel.
std::string lua_pattern(std::string_view tmpl) {
  std::vector<TemplatePiece> pieces;
  std::string why;
  split_template(tmpl, pieces, why);
  std::string p = "^";
  for (const TemplatePiece &piece : pieces) {
    if (piece.placeholder) {
      p += "[0-9A-Za-z._:%-]+";
      continue;
    }
    for (char c : piece.text) {
      if (std::string_view("^$()%.[]*+-?").find(c) != std::string_view::npos)
        p.push_back('%');
      p.push_back(c);
    }
  }
  return p + "$";
}

constexpr std::string_view kBody = R"LUA(
local function config_of(channel)
  for _, t in ipairs(templates) do
    if string.find(channel, t.pattern) then
      return t
    end
  end
  return nil
end

-- What a channel name can show in an error line: printable ASCII only.
local function shown(channel)
  return (string.gsub(string.sub(channel, 1, 200), '[^%w%p ]', '?'))
end

local function keys_of(channel)
  return 'sidecar:{' .. channel .. '}:s', 'sidecar:{' .. channel .. '}:m'
end

-- This node's replication history (master_replid), and the one it carried on from when it was a
-- replica that got promoted (master_replid2; all zeros when it was not). Nil when the caller's
-- ACL does not allow INFO: then no failover is noticed, and nothing else changes.
local function replication_ids()
  local info = redis.pcall('INFO', 'replication')
  if type(info) ~= 'string' then
    return nil, nil
  end
  return string.match(info, 'master_replid:(%x+)'), string.match(info, 'master_replid2:(%x+)')
end

-- The channel's epoch, made with the metadata hash when that is missing: seconds and
-- microseconds of the server clock in fixed-width hex. A stream left without its metadata (evicted
-- alone) holds positions of an epoch that is gone, so it goes too.
--
-- The hash also names the replication history that last wrote it (`writer`). When this node is
-- the promoted replica of that writer (a failover), the writer may have acknowledged positions
-- it never replicated, and this node would give them out again: the epoch starts over, so that
-- every client resyncs once instead of taking a new message for one it has seen. Keys that moved
-- here from another shard (resharding) or a restarted node keep their epoch.
local function epoch_of(skey, mkey, ttl)
  local m = redis.call('HMGET', mkey, 'epoch', 'top', 'writer')
  local epoch, top, writer = m[1], m[2], m[3]
  local id, carried = replication_ids()
  if epoch and (not id or writer == id) then
    return epoch
  end
  if epoch and (not writer or writer ~= carried or not string.find(carried or '', '[^0]')) then
    redis.call('HSET', mkey, 'writer', id)
    return epoch
  end
  local now = redis.call('TIME')
  epoch = string.format('%08x%05x', tonumber(now[1]), tonumber(now[2]))
  redis.call('DEL', skey)
  -- After a failover the positions go on from the top (no position is ever given twice);
  -- a new channel starts at 0.
  redis.call('HSET', mkey, 'epoch', epoch, 'top', top or 0, 'writer', id or '')
  redis.call('EXPIRE', mkey, ttl)
  return epoch
end

-- The channel a call names: 1 key, the channel itself; or 2 keys, the channel's stream and
-- metadata keys (the form a Cluster routes correctly while the channel's slot migrates).
local function channel_of(name, keys)
  if #keys == 1 then
    return keys[1]
  end
  local channel = #keys == 2 and string.match(keys[1], '^sidecar:{(.+)}:s$')
  if not channel or keys[2] ~= 'sidecar:{' .. channel .. '}:m' then
    return nil, redis.error_reply('ERR ' .. name .. ': expected 1 key, the channel, or 2 keys, ' ..
                                  'sidecar:{channel}:s and sidecar:{channel}:m')
  end
  return channel
end

local function history_of(name, keys)
  local channel, err = channel_of(name, keys)
  if not channel then
    return nil, err
  end
  local t = config_of(channel)
  if not t then
    return nil, redis.error_reply('ERR ' .. name .. ': no history configured for channel ' ..
                                  shown(channel) .. '; use ' .. publish_command)
  end
  return t, channel
end

local function publish(keys, args)
  local t, channel = history_of('sidecar_publish', keys)
  if not t then
    return channel
  end
  if #args ~= 1 then
    return redis.error_reply('ERR sidecar_publish: expected 1 argument, the payload')
  end
  local payload = args[1]
  local skey, mkey = keys_of(channel)
  local epoch = epoch_of(skey, mkey, t.ttl)
  local top = tonumber(redis.call('HGET', mkey, 'top')) + 1
  -- '%d', not tostring: Lua 5.1 writes numbers from 1e14 on with an exponent.
  local pos = string.format('%d', top)
  redis.call('XADD', skey, 'MAXLEN', '~', t.size, pos .. '-0', 'd', payload)
  redis.call('HSET', mkey, 'top', pos)
  redis.call('EXPIRE', skey, t.ttl)
  redis.call('EXPIRE', mkey, t.ttl)
  redis.call(publish_command, channel, '\30sidecar1 ' .. epoch .. ' ' .. pos .. '\n' .. payload)
  return top
end

local function read(keys, args)
  local t, channel = history_of('sidecar_read', keys)
  if not t then
    return channel
  end
  if #args ~= 2 or not string.match(args[1], '^%d+$') or not string.match(args[2], '^%d+$') then
    return redis.error_reply('ERR sidecar_read: expected 2 arguments, from and count')
  end
  local from, count = tonumber(args[1]), tonumber(args[2])
  local skey, mkey = keys_of(channel)
  local epoch = epoch_of(skey, mkey, t.ttl)
  local top = tonumber(redis.call('HGET', mkey, 'top'))
  local out = {epoch, top}
  if count > 0 and from < top and top - from <= count then
    local entries = redis.call('XRANGE', skey, string.format('%d-0', from + 1), '+', 'COUNT', count)
    for _, e in ipairs(entries) do
      out[#out + 1] = tonumber(string.match(e[1], '^(%d+)-'))
      out[#out + 1] = e[2][2]
    end
  end
  return out
end

redis.register_function{function_name = 'sidecar_publish', callback = publish, flags = {}}
redis.register_function{function_name = 'sidecar_read', callback = read, flags = {'allow-oom'}}
)LUA";

} // namespace

std::string history_library(const std::vector<HistoryConfig> &list, bool sharded) {
  std::string out = "#!lua name=sidecar\n"
                    "-- Generated by sidecar from its history: list; every sidecar on this Redis\n"
                    "-- must load the same one. The first template that matches a channel wins.\n";
  // Sharded pub/sub (redis.pubsub: sharded): the live message goes out with SPUBLISH, which
  // reaches the SSUBSCRIBErs of the channel's shard, and only them.
  out += sharded ? "local publish_command = 'SPUBLISH'\n" : "local publish_command = 'PUBLISH'\n";
  out += "local templates = {\n";
  for (const HistoryConfig &h : list) {
    out += "  {template = " + lua_string(h.channel_template) +
           ", pattern = " + lua_string(lua_pattern(h.channel_template)) +
           ", size = " + std::to_string(h.size) + ", ttl = " + std::to_string(h.ttl_s) + "},\n";
  }
  out += "}\n";
  out += kBody;
  return out;
}

} // namespace sidecar
