// The Server's side of issue 15's control channel and connection channels: applying a control
// command (parsed and checked in control.cpp) to this sidecar's own sessions, and delivering a
// message published to one connection's channel. The Redis bus keeps both subscribed.
//
// Finding sessions: a command naming a connection id ("conn") is a lookup in the session table,
// since the id carries this sidecar's prefix and the session number. A command by org, user or
// sidecar scans the session table once. That is a choice: an index by org and user would cost
// every idle session memory and bookkeeping on every connect and close, for commands that are
// rare and operator-driven; a scan of 10,000 sessions is a few tens of microseconds, and a flood
// of commands that fail to parse or to verify never reaches it.
#include <random>

#include "client_messages.h"
#include "control.h"
#include "frame.h"
#include "guard.h"
#include "history.h"
#include "log.h"
#include "server.h"
#include "shared_frame.h"
#include "text.h"

namespace sidecar {
namespace {

// Redis glob characters in a literal part of the connection pattern.
std::string glob_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\')
      out += '\\';
    out += c;
  }
  return out;
}

} // namespace

std::string Server::connection_id(const Session &s) const {
  return instance_ + "-" + std::to_string(s.id());
}

void Server::start_control() {
  if (!cfg_->control.channel.empty())
    bus_.set_control_channel(cfg_->control.channel);
  const std::string &tmpl = cfg_->channels.connection;
  size_t at = tmpl.find("{conn}");
  if (at == std::string::npos)
    return; // off (config checks that a template has exactly one {conn})
  conn_prefix_ = tmpl.substr(0, at);
  conn_suffix_ = tmpl.substr(at + 6);
  // Every connection id of this process starts with instance_ + "-", so one pattern covers all
  // of this sidecar's sessions and nobody else's: a session costs no Redis command.
  bus_.set_connection_pattern(glob_escape(conn_prefix_) + instance_ + "-*" +
                              glob_escape(conn_suffix_));
}

Session *Server::find_connection(std::string_view id) {
  std::string_view prefix = instance_;
  if (id.size() <= prefix.size() + 1 || !id.starts_with(prefix) || id[prefix.size()] != '-')
    return nullptr;
  uint64_t n = 0;
  if (!parse_u64(id.substr(prefix.size() + 1), n))
    return nullptr;
  auto it = sessions_.find(n);
  if (it == sessions_.end() || !it->second->is_open())
    return nullptr;
  // parse_u64 may accept forms (leading zeros) that name the same number differently; only the
  // id as this sidecar wrote it is that session's.
  return connection_id(*it->second) == id ? it->second.get() : nullptr;
}

void Server::on_connection_message(std::string_view channel, std::string_view payload) {
  guarded("redis.connection_message", 0, "this message is dropped", [&] {
    Session *s = nullptr;
    if (channel.size() >= conn_prefix_.size() + conn_suffix_.size() &&
        channel.starts_with(conn_prefix_) && channel.ends_with(conn_suffix_)) {
      s = find_connection(channel.substr(conn_prefix_.size(), channel.size() - conn_prefix_.size() -
                                                                  conn_suffix_.size()));
    }
    if (s == nullptr) {
      ++metrics_.control.connection_unrouted;
      return;
    }
    // One session, so one frame: verbatim as a room would relay it, or the sidecar.v1 envelope
    // without a position (a connection channel has no history).
    FrameRef f(s->v1() ? SharedFrame::make(Opcode::text, build_envelope(channel, nullptr, payload))
                       : SharedFrame::make(is_valid_utf8(payload) ? Opcode::text : Opcode::binary,
                                           payload));
    if (!f) {
      log_error("out_of_memory", {{"channel", channel}, {"bytes", payload.size()}});
      return;
    }
    s->deliver(f.get());
    ++metrics_.control.connection_delivered;
  });
}

void Server::on_control_message(std::string_view payload) {
  guarded("redis.control", 0, "this control command is dropped", [&] {
    ControlParse p = parse_control(payload, cfg_->control.secret);
    if (!p.cmd) {
      ++metrics_.control.refused[static_cast<size_t>(p.refusal)];
      // A flood of garbage is one warning a second; the rest are debug lines.
      uint64_t now = now_ms();
      bool loud = now - last_control_warn_ms_ >= 1000 || last_control_warn_ms_ == 0;
      if (loud)
        last_control_warn_ms_ = now;
      log_event(loud ? LogConfig::Level::warn : LogConfig::Level::debug, "control_refused",
                {{"reason", control_refusal_name(p.refusal)},
                 {"detail", p.detail},
                 {"bytes", payload.size()},
                 {"action", "nobody was affected; see README, Control commands"}});
      return;
    }
    apply_control(*p.cmd);
  });
}

void Server::apply_control(const ControlCommand &cmd) {
  const ControlSelector &who = cmd.who;
  std::vector<Session *> chosen;
  auto consider = [&](Session *s) {
    // The id is built only for the one session a conn selector looked up, never in the scan.
    if (s != nullptr && s->is_open() &&
        control_selects(who, s->org(), s->user(), who.conn ? connection_id(*s) : std::string(),
                        instance_))
      chosen.push_back(s);
  };
  if (who.conn) {
    consider(find_connection(*who.conn));
  } else if (!who.sidecar || *who.sidecar == instance_) {
    for (auto &[id, s] : sessions_)
      consider(s.get());
  }
  // A refresh asks the client for a new token, which only means something with auth on: without
  // it the client's refresh would be refused (auth_disabled), and the JS client drops its socket
  // on a refused refresh.
  bool auth = cfg_->auth.mode == AuthConfig::Mode::jwt;
  if (cmd.op == ControlOp::refresh && !auth)
    chosen.clear();

  const ShutdownConfig &sd = cfg_->shutdown;
  uint32_t after = cmd.after_ms.value_or(sd.reconnect_after_ms);
  std::uniform_int_distribution<uint32_t> jitter(0, cmd.jitter_ms.value_or(sd.reconnect_jitter_ms));
  // Sessions close through their own close path, which frees nothing before this loop ends.
  for (Session *s : chosen) {
    switch (cmd.op) {
    case ControlOp::disconnect:
      s->close(static_cast<CloseCode>(cmd.code), cmd.reason);
      break;
    case ControlOp::reconnect:
      // As at shutdown: each client waits its own share of the jitter, so a rebalance does not
      // bring them all back in the same instant; 1001 is what makes clients honour the delay.
      s->send_json(server_shutdown_message(after + jitter(rng_), "reconnect"));
      s->close(CloseCode::going_away, "reconnect");
      break;
    case ControlOp::refresh:
      s->send_json(token_expiring_message(s->token_exp(), "refresh"));
      break;
    }
  }
  ++metrics_.control.applied[static_cast<size_t>(cmd.op)];
  metrics_.control.sessions += chosen.size();
  log_info("control_applied",
           {{"op", control_op_name(cmd.op)},
            {"org", who.org.value_or("")},
            {"user", who.user.value_or("")},
            {"conn", who.conn.value_or("")},
            {"sidecar", who.sidecar.value_or("")},
            {"all", who.all},
            {"sessions", chosen.size()},
            {"code", cmd.op == ControlOp::disconnect ? cmd.code : 0},
            {"skipped", cmd.op == ControlOp::refresh && !auth ? "auth is off" : ""}});
}

} // namespace sidecar
