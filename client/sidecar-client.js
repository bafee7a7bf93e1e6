// sidecar-client.js: the browser and Node client for the sidecar's WebSocket protocol (issue 12).
// One ES module, no dependencies, no build step. It is served by the sidecar at GET /client.js and
// carries the sidecar's version, because the protocol it speaks is the one of that binary.
//
// What it owns: one WebSocket at a time, the reconnect schedule (exponential backoff with full
// jitter, the server's shutdown hint, a fresh token after 4001), liveness a page can see (its own
// {"type":"ping"} and a deadline on any incoming frame), a bounded queue of messages sent while
// disconnected, and, with `history: true`, the last position per channel for sidecar.v1 resume.
//
// What must stay true:
// - At most one socket is live. Every socket's handlers check that it is still `this._ws` before
//   acting, so a late event from a socket we gave up on can never move the state.
// - The queue is flushed only after the welcome, in order, and never past the send budget the
//   server enforces (a message over the server's rate limit is dropped there, not delayed).
// - A refused handshake is never retried in a tight loop: each attempt waits its backoff, and
//   401/403 (or, in a browser, a reachable server that keeps refusing) ends in state "closed".

export const VERSION = "0.1.0";

// Messages the sidecar itself sends. In verbatim mode a backend payload with one of these types
// is indistinguishable from the sidecar's own, so it is treated as the sidecar's.
const CONTROL_TYPES = new Set([
  "connected", "pong", "error", "server_shutdown", "token_expiring", "refreshed", "resync",
  "subscribed", "unsubscribed",
]);

// Refusals of a subscribe that asking again cannot change: the channel leaves subscriptions().
// ALREADY_SUBSCRIBED stays (the connection receives the channel anyway, e.g. its org room).
const SUBSCRIBE_REFUSALS = new Set([
  "BAD_CHANNEL", "FORBIDDEN_CHANNEL", "TOO_MANY_CHANNELS", "BAD_RECOVER", "SUBSCRIPTIONS_DISABLED",
]);

// The error codes with which the sidecar refuses {"type":"refresh"} (the handshake's token codes,
// plus USER_MISMATCH and AUTH_DISABLED). An upgraded session gets them for nothing else, so one
// of them while a refresh is pending is that refresh's answer. Other errors (RATE_LIMITED,
// UNSUPPORTED, INVALID_JSON, UNAVAILABLE) may answer a message sent before the refresh and say
// nothing about it; a refresh the rate limit dropped ends at refreshTimeoutMs.
const REFRESH_REFUSALS = new Set([
  "UNAUTHORIZED", "FORBIDDEN_ORG", "BAD_USER", "USER_MISMATCH", "AUTH_DISABLED",
]);

// Events of the client itself; every other name given to on() is a payload `type`.
const LIFECYCLE_EVENTS = new Set(["message", "frame", "state", "dropped", "open"]);

const DEFAULTS = {
  backoffBaseMs: 500,
  backoffCapMs: 30000,
  connectTimeoutMs: 10000,
  queueLimit: 100,
  queueOverflow: "drop-oldest",
  refresh: "in-band",
  refreshTimeoutMs: 10000,
  probeAfterFailures: 3,
  sendRate: 10, // the server's limits.inbound_rate default; /ws/config overrides it
  sendBurst: 20, // the server's limits.inbound_burst default
  history: false,
  tokenInQuery: false,
  tokenQueryParam: "token",
  autoConnect: true,
};

const OPEN = 1; // WebSocket.OPEN in every implementation

function now() {
  return Date.now();
}

function isNode() {
  return typeof process !== "undefined" && process.versions != null && process.versions.node != null;
}

function base64ToBytes(b64) {
  if (typeof atob === "function") {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  return new Uint8Array(Buffer.from(b64, "base64"));
}

// ws (Node) may hand us a Buffer even with binaryType "arraybuffer" on old versions; browsers
// give ArrayBuffer or Blob. The client always presents binary payloads as ArrayBuffer.
function toArrayBuffer(data) {
  if (data instanceof ArrayBuffer) return data;
  if (ArrayBuffer.isView(data)) {
    return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  }
  return data;
}

function httpBaseOf(wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  return u.origin;
}

export class SidecarError extends Error {
  constructor(message, code) {
    super(message);
    this.name = "SidecarError";
    this.code = code;
  }
}

export class SidecarClient {
  static version = VERSION;

  constructor(options = {}) {
    if (!options.url && !options.discoveryUrl) {
      throw new SidecarError("SidecarClient needs `url` or `discoveryUrl`", "BAD_OPTIONS");
    }
    if (options.discoveryUrl && !options.url && options.org == null) {
      throw new SidecarError("discovery needs `org` to fill the route's {org}", "BAD_OPTIONS");
    }
    if (!["drop-oldest", "drop-newest", "error"].includes(options.queueOverflow ?? "drop-oldest")) {
      throw new SidecarError("queueOverflow is drop-oldest, drop-newest or error", "BAD_OPTIONS");
    }
    this.options = { ...DEFAULTS, ...options };
    this._random = this.options.random || Math.random;
    this._listeners = new Map();
    this._state = "idle";
    this._ws = null;
    this._welcome = null;
    this._protocol = "";
    this._attempt = 0; // failed attempts since the last welcome, for the backoff exponent
    this._preOpenFailures = 0; // consecutive attempts that never reached the welcome
    this._freshTokenTried = false; // a refused handshake already got one retry with a new token
    this._retryTimer = null;
    this._tickTimer = null;
    this._connectTimer = null;
    this._refreshTimer = null;
    this._flushTimer = null;
    this._shutdownHintMs = null; // reconnect_after_ms from the last server_shutdown
    this._closeRequested = false;
    this._discovery = null;
    this._queue = [];
    this._positions = new Map(); // channel -> {epoch, offset}
    this._subscriptions = new Set(); // channels asked for with subscribe(), again at each welcome
    this._tokens = this._burst();
    this._tokensAt = now();
    this._lastFrameAt = 0;
    this._pingSentAt = 0;
    this._handshakeStatus = null; // HTTP status of a refused handshake, when the socket says (ws)
    this._handshakeError = null;
    this._pageHooks = null;
    // Deferred so that listeners added right after `new` see the first "connecting" event.
    if (this.options.autoConnect) {
      Promise.resolve().then(() => {
        if (this._state === "idle") this.connect();
      });
    }
  }

  // ------------------------------------------------------------------ public API

  get state() {
    return this._state;
  }
  get welcome() {
    return this._welcome;
  }
  get connectionId() {
    return this._welcome ? this._welcome.connection_id : null;
  }
  get protocol() {
    return this._protocol;
  }
  get queued() {
    return this._queue.length;
  }
  positions() {
    const out = {};
    for (const [ch, p] of this._positions) out[ch] = { epoch: p.epoch, offset: p.offset };
    return out;
  }

  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (!set) return;
    if (fn === undefined) set.clear();
    else set.delete(fn);
  }

  once(type, fn) {
    const off = this.on(type, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  // Starts (or restarts after close()) the connection. Safe to call when already connecting.
  connect() {
    if (this._state === "connecting" || this._state === "open" || this._state === "reconnecting") {
      return;
    }
    this._closeRequested = false;
    this._attempt = 0;
    this._preOpenFailures = 0;
    this._freshTokenTried = false;
    this._installPageHooks();
    this._setState("connecting", { reason: "start" });
    this._open();
  }

  // Sends an object (as JSON), a string, or binary data. Returns true when it went out now and
  // false when it waits in the queue; with queueOverflow "error" a full queue throws.
  send(message) {
    const payload = typeof message === "string" || message instanceof ArrayBuffer ||
      ArrayBuffer.isView(message) ? message : JSON.stringify(message);
    if (this._state === "closed" && this._closeRequested) {
      throw new SidecarError("send() after close()", "CLOSED");
    }
    if (this._queue.length === 0 && this._canSendNow()) {
      this._rawSend(payload);
      return true;
    }
    this._enqueue(payload, message);
    this._scheduleFlush();
    return false;
  }

  // Follows a further channel (the sidecar's `subscriptions` must allow it), now and after every
  // reconnect; with `history` it resumes from the last position seen. The answer comes as a
  // `subscribed` event, or an `error` event with the channel and a code; a refusal that cannot
  // change (FORBIDDEN_CHANNEL, BAD_CHANNEL, ...) also drops it from subscriptions().
  subscribe(channel) {
    if (typeof channel !== "string" || channel === "") {
      throw new SidecarError("subscribe() needs a channel name", "BAD_CHANNEL");
    }
    if (this._subscriptions.has(channel)) return;
    this._subscriptions.add(channel);
    if (this._state === "open" && this._ws) this._controlSend(this._subscribeMessage(channel));
  }

  // Stops following a channel given to subscribe(); answered by an `unsubscribed` event.
  unsubscribe(channel) {
    if (!this._subscriptions.delete(channel)) return;
    if (this._state === "open" && this._ws) this._controlSend({ type: "unsubscribe", channel });
  }

  // The channels given to subscribe() and not refused, revoked or unsubscribed.
  subscriptions() {
    return [...this._subscriptions];
  }

  _subscribeMessage(channel) {
    const msg = { type: "subscribe", channel };
    const p = this.options.history ? this._positions.get(channel) : null;
    if (p) msg.recover = { epoch: p.epoch, offset: p.offset };
    return msg;
  }

  // Ends the connection for good (until connect()); queued messages are reported as dropped.
  close(code = 1000, reason = "client closed") {
    this._closeRequested = true;
    this._clearTimers();
    this._removePageHooks();
    const ws = this._ws;
    this._ws = null;
    if (ws) this._detach(ws, code, reason);
    const dropped = this._queue.splice(0);
    for (const item of dropped) this._emit("dropped", { message: item.original, reason: "closed" });
    this._setState("closed", { reason: "client_closed" });
  }

  // ------------------------------------------------------------------ events

  _emit(type, ...args) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's exception must not break the client's own bookkeeping; surface it later.
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }

  _setState(state, detail = {}) {
    this._state = state;
    this._emit("state", { state, ...detail });
  }

  // ------------------------------------------------------------------ connecting

  async _open() {
    this._clearTimer("_retryTimer");
    const generation = {}; // identifies this attempt across awaits
    this._pending = generation;
    let url;
    let token;
    try {
      url = await this._resolveUrl();
      token = await this._currentToken();
    } catch (e) {
      if (this._pending !== generation || this._closeRequested) return;
      this._handshakeError = String(e && e.message ? e.message : e);
      this._afterLoss({ reason: "discovery_failed", error: this._handshakeError, preOpen: true });
      return;
    }
    if (this._pending !== generation || this._closeRequested) return;

    const protocols = [];
    const params = [];
    if (token) {
      if (this.options.tokenInQuery) {
        params.push(`${encodeURIComponent(this._tokenParam())}=${encodeURIComponent(token)}`);
      } else {
        // The sidecar takes the first offered protocol other than "bearer" as the token, so the
        // token goes right after "bearer" and before anything else we offer.
        protocols.push("bearer", token);
      }
    }
    if (this.options.history) {
      protocols.push("sidecar.v1");
      for (const [channel, p] of this._positions) {
        params.push(`recover=${encodeURIComponent(`${channel}@${p.epoch}:${p.offset}`)}`);
      }
    }
    if (Array.isArray(this.options.protocols)) protocols.push(...this.options.protocols);
    this._lastUrl = url;
    if (params.length) url += (url.includes("?") ? "&" : "?") + params.join("&");

    let Ctor;
    try {
      Ctor = await this._socketCtor();
    } catch (e) {
      this._afterLoss({ reason: "no_websocket", error: String(e), preOpen: true, fatal: true });
      return;
    }
    if (this._pending !== generation || this._closeRequested) return;

    this._handshakeStatus = null;
    this._handshakeError = null;
    let ws;
    try {
      ws = protocols.length ? new Ctor(url, protocols) : new Ctor(url);
    } catch (e) {
      this._afterLoss({ reason: "bad_url", error: String(e), preOpen: true, fatal: true });
      return;
    }
    this._ws = ws;
    this._welcome = null;
    this._protocol = "";
    try {
      ws.binaryType = "arraybuffer";
    } catch (_) {
      // Some implementations only have one binary type; toArrayBuffer copes.
    }
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._protocol = ws.protocol || "";
      this._lastFrameAt = now();
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      this._onFrame(ev.data);
    };
    ws.onerror = (ev) => {
      if (this._ws !== ws || this._handshakeStatus != null) return;
      const why = ev && ev.message ? ev.message : ev && ev.error ? String(ev.error) : "error";
      this._handshakeError = why;
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._onSocketClosed(ev.code, ev.reason || "");
    };
    // The `ws` package says why a handshake was refused; browsers and undici never do.
    if (typeof ws.on === "function") {
      ws.on("unexpected-response", (req, res) => {
        if (this._ws !== ws) return;
        this._handshakeStatus = res.statusCode;
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c) => {
          if (body.length < 4096) body += c;
        });
        res.on("end", () => {
          try {
            this._handshakeError = JSON.parse(body).error || null;
          } catch (_) {
            this._handshakeError = null;
          }
          ws.terminate();
        });
        res.on("error", () => ws.terminate());
      });
      ws.on("ping", () => {
        if (this._ws === ws) this._lastFrameAt = now();
      });
    }
    // A server that accepts TCP but never answers (frozen, overloaded) must not hold us forever.
    this._connectTimer = setTimeout(() => {
      if (this._ws !== ws || this._welcome) return;
      this._dropSocket(ws, "connect_timeout");
    }, this.options.connectTimeoutMs);
  }

  async _resolveUrl() {
    if (this.options.url) {
      const u = this.options.url;
      return typeof u === "function" ? await u() : u;
    }
    const d = await this._discover();
    const cfg = d.websocket_config || {};
    const endpoints = cfg.endpoints || {};
    const template = this.options.route || endpoints.websocket;
    if (!template) throw new Error("/ws/config names no websocket route");
    const here = typeof location !== "undefined" ? location.href : undefined;
    const base = new URL(this.options.discoveryUrl, here);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    return base.origin + template.replace("{org}", encodeURIComponent(String(this.options.org)));
  }

  async _discover() {
    if (this._discovery) return this._discovery;
    const f = this.options.fetch || globalThis.fetch;
    if (!f) throw new Error("discovery needs fetch()");
    const res = await f(this.options.discoveryUrl, { cache: "no-store" });
    if (!res.ok) throw new Error(`GET ${this.options.discoveryUrl} answered ${res.status}`);
    const d = await res.json();
    const limits = (d.websocket_config || {}).connection_limits || {};
    if (this.options.sendRate === DEFAULTS.sendRate && limits.max_message_rate > 0) {
      this.options.sendRate = limits.max_message_rate;
    }
    if (this.options.sendBurst === DEFAULTS.sendBurst && limits.max_message_burst > 0) {
      this.options.sendBurst = limits.max_message_burst;
    }
    const auth = (d.websocket_config || {}).auth || {};
    if (auth.query_param && this.options.tokenQueryParam === DEFAULTS.tokenQueryParam) {
      this.options.tokenQueryParam = auth.query_param;
    }
    this._discovery = d;
    return d;
  }

  _tokenParam() {
    return this.options.tokenQueryParam;
  }

  async _currentToken() {
    if (typeof this.options.getToken === "function") return await this.options.getToken();
    return this.options.token || null;
  }

  async _socketCtor() {
    if (this.options.WebSocket) return this.options.WebSocket;
    if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket;
    if (isNode()) {
      // Node before 22 has no global WebSocket; the `ws` package is the usual one.
      // The specifier is a variable and the comments tell bundlers not to follow it: a browser
      // build must not try to bundle a Node-only package it never loads.
      const name = "ws";
      const mod = await import(/* webpackIgnore: true */ /* @vite-ignore */ name);
      return mod.default || mod.WebSocket;
    }
    throw new Error("no WebSocket implementation: pass options.WebSocket");
  }

  // ------------------------------------------------------------------ incoming frames

  _onFrame(data) {
    this._lastFrameAt = now();
    this._pingSentAt = 0;
    this._emit("frame", data);
    if (typeof data !== "string") {
      this._deliver(toArrayBuffer(data), { binary: true });
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (_) {
      this._deliver(data, { binary: false });
      return;
    }
    const isObj = msg !== null && typeof msg === "object" && !Array.isArray(msg);
    const type = isObj && typeof msg.type === "string" ? msg.type : null;
    if (this._protocol === "sidecar.v1" && type === "message" && typeof msg.channel === "string") {
      this._onEnvelope(msg);
      return;
    }
    if (type !== null && CONTROL_TYPES.has(type)) {
      this._onControl(type, msg);
      return;
    }
    this._deliver(msg, { binary: false, raw: data });
  }

  _deliver(data, meta) {
    this._emit("message", data, meta);
    if (data !== null && typeof data === "object" && typeof data.type === "string" &&
        !LIFECYCLE_EVENTS.has(data.type)) {
      this._emit(data.type, data, meta);
    }
  }

  _onEnvelope(env) {
    const meta = { binary: false, channel: env.channel };
    if (typeof env.epoch === "string" && Number.isInteger(env.offset)) {
      const last = this._positions.get(env.channel);
      // The server promises no duplicates; this guard keeps that true across our own races.
      if (last && last.epoch === env.epoch && env.offset <= last.offset) return;
      this._positions.set(env.channel, { epoch: env.epoch, offset: env.offset });
      meta.epoch = env.epoch;
      meta.offset = env.offset;
    }
    let data = env.data;
    if (data === undefined && typeof env.data_b64 === "string") {
      data = base64ToBytes(env.data_b64).buffer;
      meta.binary = true;
    }
    this._deliver(data, meta);
  }

  _onControl(type, msg) {
    switch (type) {
      case "connected":
        this._onWelcome(msg);
        break;
      case "server_shutdown":
        if (Number.isFinite(msg.reconnect_after_ms) && msg.reconnect_after_ms >= 0) {
          this._shutdownHintMs = msg.reconnect_after_ms;
        }
        break;
      case "token_expiring":
        this._refreshToken(msg);
        break;
      case "refreshed":
        this._clearTimer("_refreshTimer");
        break;
      case "error":
        if (this._refreshTimer && REFRESH_REFUSALS.has(msg.code)) {
          this._refreshFailed(msg.code, typeof msg.message === "string" ? msg.message : "");
        }
        if (typeof msg.channel === "string" && SUBSCRIBE_REFUSALS.has(msg.code)) {
          this._subscriptions.delete(msg.channel);
        }
        break;
      case "subscribed":
        this._takePositions(msg.channels);
        break;
      case "unsubscribed":
        if (msg.reason === "revoked") this._subscriptions.delete(msg.channel);
        break;
      case "resync":
        if (typeof msg.channel === "string" && typeof msg.epoch === "string" &&
            Number.isInteger(msg.offset)) {
          this._positions.set(msg.channel, { epoch: msg.epoch, offset: msg.offset });
        }
        if (typeof this.options.onResync === "function") {
          try {
            this.options.onResync(msg.channel, msg.reason, msg);
          } catch (e) {
            setTimeout(() => {
              throw e;
            }, 0);
          }
        }
        break;
      default:
        break;
    }
    this._emit(type, msg);
  }

  _onWelcome(msg) {
    this._clearTimer("_connectTimer");
    this._welcome = msg;
    this._attempt = 0;
    this._preOpenFailures = 0;
    this._freshTokenTried = false;
    this._shutdownHintMs = null;
    this._tokens = this._burst();
    this._tokensAt = now();
    this._takePositions(msg.channels);
    this._startLiveness(msg);
    // Subscriptions before anything else: before the queue, so that what it sends already has
    // them, and before the listeners, whose own subscribe() calls then go out once.
    for (const channel of this._subscriptions) this._controlSend(this._subscribeMessage(channel));
    this._setState("open",
                   { reason: "welcome", connectionId: msg.connection_id, protocol: this._protocol });
    this._emit("open", msg);
    this._flush();
  }

  // Positions of a welcome or a `subscribed`. A recovered channel keeps ours: the replay that
  // follows moves it. Otherwise live delivery starts at the position given.
  _takePositions(channels) {
    if (!channels || typeof channels !== "object") return;
    for (const [channel, c] of Object.entries(channels)) {
      if (!c || c.recovered || typeof c.epoch !== "string" || !Number.isInteger(c.offset)) continue;
      this._positions.set(channel, { epoch: c.epoch, offset: c.offset });
    }
  }

  // ------------------------------------------------------------------ liveness

  _pingIntervalMs(welcome) {
    if (this.options.pingIntervalMs > 0) return this.options.pingIntervalMs;
    const hb = welcome && Number(welcome.heartbeat_ms);
    return hb > 0 ? hb : 25000;
  }

  _pongTimeoutMs(interval) {
    if (this.options.pongTimeoutMs > 0) return this.options.pongTimeoutMs;
    return Math.min(10000, Math.max(1000, Math.round(interval / 2)));
  }

  _startLiveness(welcome) {
    this._clearTimer("_tickTimer");
    const interval = this._pingIntervalMs(welcome);
    const timeout = this._pongTimeoutMs(interval);
    this._liveness = { interval, timeout };
    this._lastFrameAt = now();
    this._pingSentAt = 0;
    // A coarse tick is enough: the deadline is late by at most a quarter of the shorter period.
    const tick = Math.max(50, Math.floor(Math.min(interval, timeout) / 4));
    this._tickTimer = setInterval(() => this._checkLiveness(), tick);
  }

  _checkLiveness() {
    const ws = this._ws;
    if (!ws || !this._welcome || !this._liveness) return;
    const t = now();
    if (this._pingSentAt && t - this._pingSentAt >= this._liveness.timeout) {
      this._dropSocket(ws, "ping_timeout");
      return;
    }
    if (!this._pingSentAt && t - this._lastFrameAt >= this._liveness.interval) {
      this._pingSentAt = t;
      this._controlSend({ type: "ping" });
    }
  }

  // Checks a connection that may have died unseen (back from offline, tab visible again).
  _probeNow() {
    if (this._ws && this._welcome && !this._pingSentAt) {
      this._pingSentAt = now();
      this._controlSend({ type: "ping" });
    }
  }

  // ------------------------------------------------------------------ token refresh

  async _refreshToken() {
    if (typeof this.options.getToken !== "function") return; // nothing fresher to offer
    const ws = this._ws;
    let token;
    try {
      token = await this.options.getToken();
    } catch (e) {
      return; // keep the current connection; at exp the server closes with 4001 and we retry
    }
    if (this._ws !== ws || !ws) return;
    if (this.options.refresh === "reconnect" || !token) {
      this._dropSocket(ws, "token_refresh", 0);
      return;
    }
    this._clearTimer("_refreshTimer");
    this._refreshTimer = setTimeout(
      () => this._refreshFailed("REFRESH_TIMEOUT", "no answer to the refresh in time"),
      this.options.refreshTimeoutMs);
    this._controlSend({ type: "refresh", token });
  }

  // The state event says which: `error` is the sidecar's code (USER_MISMATCH, UNAUTHORIZED, ...)
  // or REFRESH_TIMEOUT, `detail` its message.
  _refreshFailed(code, message) {
    this._clearTimer("_refreshTimer");
    if (this._ws) this._dropSocket(this._ws, "token_refresh_failed", 0, message, code);
  }

  // ------------------------------------------------------------------ closing and retrying

  // Gives up on a socket we no longer trust: its late events are ignored from here on.
  _dropSocket(ws, reason, delayMs, detail, error) {
    if (this._ws !== ws) return;
    this._ws = null;
    this._detach(ws, 1000, reason);
    const extra = error === undefined ? {} : { error };
    this._afterLoss({ reason, code: null, preOpen: !this._welcome, delayMs, detail, ...extra });
  }

  _detach(ws, code, reason) {
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (typeof ws.removeAllListeners === "function") {
      ws.removeAllListeners("unexpected-response");
      ws.removeAllListeners("ping");
      ws.on("error", () => {}); // ws emits errors on a socket that is torn down mid-handshake
    }
    try {
      if (typeof ws.terminate === "function") ws.terminate();
      else ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason);
    } catch (_) {
      // A socket still connecting may refuse close(); it is unreferenced either way.
    }
  }

  _onSocketClosed(code, reason) {
    const preOpen = !this._welcome;
    const detail = { code, closeReason: reason };
    if (code === 4001) {
      // The token expired. Only a getToken() can give a new one; a fixed token would be refused.
      if (typeof this.options.getToken !== "function") {
        this._finish("token_expired", detail);
        return;
      }
      this._afterLoss({ reason: "token_expired", ...detail, preOpen: false, delayMs: 0 });
      return;
    }
    if (preOpen && this._handshakeStatus != null) {
      this._onRefusedHandshake(this._handshakeStatus, detail);
      return;
    }
    if (code === 1001 && this._shutdownHintMs != null) {
      // server_shutdown already carries a delay the sidecar randomised per client
      // (reconnect_after_ms plus a share of its jitter); waiting exactly that keeps the spread
      // the operator configured and keeps us off the listener that is closing.
      const hint = this._shutdownHintMs;
      this._shutdownHintMs = null;
      this._afterLoss({ reason: "server_shutdown", ...detail, preOpen: false, delayMs: hint });
      return;
    }
    this._afterLoss({
      reason: preOpen ? "handshake_failed" : "connection_lost",
      ...detail,
      preOpen,
      error: preOpen ? this._handshakeError : undefined,
    });
  }

  _onRefusedHandshake(status, detail) {
    const info = { ...detail, status, error: this._handshakeError };
    if (status === 401 && typeof this.options.getToken === "function" && !this._freshTokenTried) {
      // The token may have expired while we were away: one more try with a fresh one.
      this._freshTokenTried = true;
      this._afterLoss({ reason: "unauthorized", ...info, preOpen: true, delayMs: this._backoff() });
      return;
    }
    if (status === 401) return this._finish("unauthorized", info);
    if (status === 403) return this._finish("forbidden", info);
    if (status === 400 || status === 404 || status === 405 || status === 426 || status === 505) {
      return this._finish("refused", info);
    }
    // 429 and 503 are limits and drains: they pass, so back off and try again.
    this._afterLoss({ reason: `refused_${status}`, ...info, preOpen: true });
  }

  _afterLoss({ reason, preOpen, delayMs, ...detail }) {
    this._clearTimer("_connectTimer");
    this._clearTimer("_tickTimer");
    this._clearTimer("_refreshTimer");
    this._clearTimer("_flushTimer");
    this._welcome = null;
    if (this._closeRequested) return;
    if (detail.fatal) return this._finish(reason, detail);
    if (preOpen) this._preOpenFailures++;
    if (preOpen && this._preOpenFailures >= this.options.probeAfterFailures &&
        this._handshakeStatus == null) {
      this._probeRefusal(reason, detail);
      return;
    }
    this._scheduleRetry(reason, delayMs, detail);
  }

  // Browsers hide a refused handshake's status: every failure is 1006 before open. After a few in
  // a row, ask whether the server is reachable at all. Down: keep backing off. Up but refusing:
  // one attempt with a fresh token, then stop, because it is 401/403 or a limit and hammering it
  // helps nobody.
  async _probeRefusal(reason, detail) {
    const reachable = await this._reachable();
    if (this._closeRequested) return;
    if (!reachable) {
      this._scheduleRetry(reason, undefined, { ...detail, probe: "unreachable" });
      return;
    }
    if (!this._freshTokenTried) {
      this._freshTokenTried = true;
      this._scheduleRetry(reason, undefined, { ...detail, probe: "reachable" });
      return;
    }
    this._finish("handshake_refused", {
      ...detail,
      probe: "reachable",
      error: detail.error ||
        "the server answers HTTP but refuses the upgrade (401/403 or a limit; the browser hides which)",
    });
  }

  async _reachable() {
    const f = this.options.fetch || globalThis.fetch;
    const target = this._lastUrl || this.options.discoveryUrl;
    if (!f || !target) return false;
    const ctl = typeof AbortController === "function" ? new AbortController() : null;
    // A frozen server accepts TCP and never answers; the probe must end anyway.
    const timer = setTimeout(() => ctl && ctl.abort(), this.options.connectTimeoutMs);
    try {
      // no-cors: a cross-origin page cannot read the answer, but the promise resolves when the
      // server answered at all and rejects when nothing did, which is all this needs.
      await f(`${httpBaseOf(target)}/health`,
              { mode: "no-cors", cache: "no-store", signal: ctl ? ctl.signal : undefined });
      return true;
    } catch (_) {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  _backoff() {
    const { backoffBaseMs: base, backoffCapMs: cap } = this.options;
    const ceiling = Math.min(cap, base * 2 ** Math.min(this._attempt, 30));
    return Math.floor(this._random() * ceiling); // full jitter
  }

  _scheduleRetry(reason, delayMs, detail = {}) {
    const delay = delayMs === undefined ? this._backoff() : delayMs;
    if (this._offline()) {
      // No network: waiting for "online" costs nothing and spends no attempts.
      this._setState("reconnecting", { reason, ...detail, waiting: "online", attempt: this._attempt });
      return;
    }
    this._attempt++;
    this._setState("reconnecting", { reason, ...detail, delayMs: delay, attempt: this._attempt });
    this._clearTimer("_retryTimer");
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._open();
    }, delay);
  }

  _finish(reason, detail = {}) {
    this._clearTimers();
    this._removePageHooks();
    this._pending = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) this._detach(ws, 1000, reason);
    this._setState("closed", { reason, ...detail });
  }

  _clearTimer(name) {
    if (this[name]) {
      clearTimeout(this[name]);
      clearInterval(this[name]);
      this[name] = null;
    }
  }

  _clearTimers() {
    for (const t of ["_retryTimer", "_tickTimer", "_connectTimer", "_refreshTimer", "_flushTimer"]) {
      this._clearTimer(t);
    }
  }

  // ------------------------------------------------------------------ browser page events

  _offline() {
    return typeof navigator !== "undefined" && navigator.onLine === false &&
      typeof window !== "undefined";
  }

  _installPageHooks() {
    if (this._pageHooks || typeof window === "undefined" ||
        typeof window.addEventListener !== "function") {
      return;
    }
    const retryNow = () => {
      if (this._state === "reconnecting" && !this._ws && !this._closeRequested) {
        this._clearTimer("_retryTimer");
        this._open();
      }
    };
    const online = () => (this._state === "open" ? this._probeNow() : retryNow());
    const offline = () => this._probeNow();
    const visible = () => {
      if (typeof document === "undefined" || document.visibilityState !== "visible") return;
      // Background tabs have their timers throttled, so a hidden tab may have missed a death.
      if (this._state === "open") this._probeNow();
      else retryNow();
    };
    window.addEventListener("online", online);
    window.addEventListener("offline", offline);
    if (typeof document !== "undefined") document.addEventListener("visibilitychange", visible);
    this._pageHooks = { online, offline, visible };
  }

  _removePageHooks() {
    const h = this._pageHooks;
    if (!h) return;
    window.removeEventListener("online", h.online);
    window.removeEventListener("offline", h.offline);
    if (typeof document !== "undefined") document.removeEventListener("visibilitychange", h.visible);
    this._pageHooks = null;
  }

  // ------------------------------------------------------------------ sending

  _canSendNow() {
    return this._state === "open" && this._ws && this._ws.readyState === OPEN && this._takeToken();
  }

  // The server's token bucket, mirrored: a message over its rate is answered RATE_LIMITED and
  // dropped there, so we hold it here instead. Its clock is not ours and the network delays some
  // messages more than others, so two sent 1/rate apart can arrive closer together: we keep one
  // token of the burst and a fifth of the rate in hand.
  _refill() {
    const t = now();
    const rate = this.options.sendRate * 0.8;
    this._tokens = Math.min(this._burst(), this._tokens + ((t - this._tokensAt) / 1000) * rate);
    this._tokensAt = t;
  }

  _burst() {
    return Math.max(1, this.options.sendBurst - 1);
  }

  _takeToken() {
    this._refill();
    if (this._tokens < 1) return false;
    this._tokens -= 1;
    return true;
  }

  // Pings and refreshes go out at once but spend from the same budget, as the server counts them.
  _controlSend(obj) {
    this._refill();
    this._tokens -= 1;
    this._rawSend(JSON.stringify(obj));
  }

  _rawSend(payload) {
    try {
      this._ws.send(payload);
    } catch (_) {
      // The socket is closing; its close event decides what happens next.
    }
  }

  _enqueue(payload, original) {
    const limit = this.options.queueLimit;
    if (this._queue.length >= limit) {
      const policy = this.options.queueOverflow;
      if (policy === "error") {
        this._emit("dropped", { message: original, reason: "queue_full" });
        throw new SidecarError(`send queue is full (${limit} messages)`, "QUEUE_FULL");
      }
      if (policy === "drop-newest") {
        this._emit("dropped", { message: original, reason: "queue_full" });
        return;
      }
      const old = this._queue.shift();
      this._emit("dropped", { message: old.original, reason: "queue_full" });
      if (limit <= 0) {
        this._emit("dropped", { message: original, reason: "queue_full" });
        return;
      }
    }
    this._queue.push({ payload, original });
  }

  _flush() {
    this._clearTimer("_flushTimer");
    while (this._queue.length && this._canSendNow()) {
      this._rawSend(this._queue.shift().payload);
    }
    this._scheduleFlush();
  }

  _scheduleFlush() {
    if (!this._queue.length || this._flushTimer || this._state !== "open") return;
    const perMs = (this.options.sendRate * 0.8) / 1000;
    const wait = Math.max(1, Math.ceil((1 - this._tokens) / perMs));
    this._flushTimer = setTimeout(() => {
      this._flushTimer = null;
      this._flush();
    }, wait);
  }
}

export default SidecarClient;
