// TypeScript declarations for sidecar-client.js, the client the sidecar serves at GET /client.js.
// The version is the sidecar's own (CMakeLists.txt project VERSION); a test checks they agree.

export declare const VERSION: "0.1.0";

/** Where the client is. "idle" only before the first connect(). */
export type SidecarState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** Why the state changed. Reasons for "reconnecting": connection_lost, handshake_failed,
 *  server_shutdown, ping_timeout, connect_timeout, token_expired, token_refresh,
 *  token_refresh_failed, unauthorized (one retry with a fresh token), refused_429/refused_503,
 *  discovery_failed. For "closed": client_closed, unauthorized, forbidden, refused,
 *  handshake_refused (browser heuristic), token_expired, no_websocket, bad_url. */
export interface StateEvent {
  state: SidecarState;
  reason: string;
  /** Close code of the socket that ended, when there was one (1006: no close frame). */
  code?: number | null;
  closeReason?: string;
  /** HTTP status of a refused handshake, where the socket implementation reports it (Node `ws`). */
  status?: number;
  /** The refusal's error code (e.g. "UNAUTHORIZED") or the socket's error text. For
   *  token_refresh_failed: the sidecar's code for the refused refresh (UNAUTHORIZED,
   *  FORBIDDEN_ORG, BAD_USER, USER_MISMATCH, AUTH_DISABLED) or "REFRESH_TIMEOUT". */
  error?: string | null;
  /** Milliseconds until the next attempt ("reconnecting"). */
  delayMs?: number;
  /** Attempts since the last welcome ("reconnecting"). */
  attempt?: number;
  /** "online" when retries wait for the browser to be back online. */
  waiting?: "online";
  /** Result of the reachability probe after repeated pre-open failures. */
  probe?: "reachable" | "unreachable";
  /** On "open": the welcome's connection_id and the negotiated subprotocol. */
  connectionId?: string;
  protocol?: string;
  detail?: string;
}

/** The sidecar's welcome, {"type":"connected",...}. */
export interface Welcome {
  type: "connected";
  connection_id: string;
  org: string;
  user: string | null;
  heartbeat_ms: number;
  /** sidecar.v1 only: each channel's position and whether this connection resumed it. */
  channels?: Record<string, { epoch: string; offset: number; recovered: boolean }>;
  [key: string]: unknown;
}

export interface ServerShutdown {
  type: "server_shutdown";
  reconnect_after_ms: number;
}
export interface TokenExpiring {
  type: "token_expiring";
  expires_at: number;
}
export interface Refreshed {
  type: "refreshed";
  expires_at: number;
}
export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  recoverable?: boolean;
  /** A refused subscribe or unsubscribe: the channel it concerns. */
  channel?: string;
}
export interface Subscribed {
  type: "subscribed";
  channel: string;
  /** sidecar.v1 and a channel with history: its position, as in the welcome. */
  channels?: Record<string, { epoch: string; offset: number; recovered: boolean }>;
}
export interface Unsubscribed {
  type: "unsubscribed";
  channel: string;
  /** "revoked": a refreshed token no longer grants it. */
  reason?: string;
}
export interface Pong {
  type: "pong";
  timestamp: number;
}
export interface Resync {
  type: "resync";
  channel: string;
  reason: "epoch_changed" | "trimmed" | "too_many" | "bad_position" | "unavailable" |
    "redis_reconnected" | string;
  epoch?: string;
  offset?: number;
}

/** What came with an application message. */
export interface MessageMeta {
  binary: boolean;
  /** sidecar.v1: the channel it was published on, and its position when it has one. */
  channel?: string;
  epoch?: string;
  offset?: number;
  /** Verbatim mode: the frame's text when it parsed as JSON. */
  raw?: string;
}

/** A payload as delivered: parsed JSON, a string that was not JSON, or binary bytes. */
export type Payload = unknown;

export interface DroppedEvent {
  message: unknown;
  /** queue_full (queueOverflow), or closed (close() discarded what was queued). */
  reason: "queue_full" | "closed";
}

export interface SidecarClientOptions {
  /** WebSocket URL, e.g. "wss://rt.example.com/ws/acme", or a function that returns one. */
  url?: string | (() => string | Promise<string>);
  /** GET this (the sidecar's /ws/config) and connect to its first route with {org} filled. */
  discoveryUrl?: string;
  /** The org for discovery's route template. */
  org?: string;
  /** A route template to use instead of the discovered one, e.g. "/api/ws/sync/{org}". */
  route?: string;
  /** A fixed token. */
  token?: string;
  /** Called before every connection attempt and on token_expiring; may be async. */
  getToken?: () => string | null | Promise<string | null>;
  /** Put the token in the query string instead of the bearer subprotocol. Default false. */
  tokenInQuery?: boolean;
  /** The query parameter for tokenInQuery. Default "token" (or discovery's auth.query_param). */
  tokenQueryParam?: string;
  /** Offer the sidecar.v1 subprotocol: positions, resume with `recover`, resync. Default false. */
  history?: boolean;
  /** Called when the sidecar could not resume a channel: reload its state from the backend. */
  onResync?: (channel: string, reason: string, message: Resync) => void;
  /** Extra subprotocols to offer after the client's own. */
  protocols?: string[];
  /** Full-jitter backoff: attempt n waits random(0, min(cap, base * 2^n)). 500 and 30000. */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** Give up on an attempt that has no welcome after this long. Default 10000. */
  connectTimeoutMs?: number;
  /** Client ping interval when no frame arrives; default the welcome's heartbeat_ms. */
  pingIntervalMs?: number;
  /** Deadline for any frame after a ping; default min(10 s, max(1 s, interval / 2)). */
  pongTimeoutMs?: number;
  /** Messages kept while disconnected. Default 100. */
  queueLimit?: number;
  /** What send() does when the queue is full; each drop is reported as "dropped". */
  queueOverflow?: "drop-oldest" | "drop-newest" | "error";
  /** Mirror of the sidecar's inbound rate limit (messages/s and burst); discovery fills them. */
  sendRate?: number;
  sendBurst?: number;
  /** On token_expiring: "in-band" sends {"type":"refresh"} and reconnects only if it fails;
   *  "reconnect" reconnects with the new token at once. Default "in-band". */
  refresh?: "in-band" | "reconnect";
  refreshTimeoutMs?: number;
  /** Consecutive failed attempts before a reachability probe decides whether to stop. Default 3. */
  probeAfterFailures?: number;
  /** The WebSocket constructor: the `ws` package in Node < 22. Default: the global one, or
   *  `import("ws")` in Node. */
  WebSocket?: unknown;
  /** fetch() for discovery and the probe. Default the global one. */
  fetch?: typeof fetch;
  /** Connect from the constructor. Default true. */
  autoConnect?: boolean;
  /** Random source for the jitter, for tests. Default Math.random. */
  random?: () => number;
}

export interface SidecarEvents {
  state: (event: StateEvent) => void;
  /** Every application message (the sidecar's own messages are not included). */
  message: (data: Payload, meta: MessageMeta) => void;
  /** Every incoming frame before interpretation: a string or an ArrayBuffer. */
  frame: (data: string | ArrayBuffer) => void;
  /** The welcome, once per connection, after which queued messages are sent. */
  open: (welcome: Welcome) => void;
  dropped: (event: DroppedEvent) => void;
  connected: (welcome: Welcome) => void;
  pong: (msg: Pong) => void;
  error: (msg: ErrorFrame) => void;
  server_shutdown: (msg: ServerShutdown) => void;
  token_expiring: (msg: TokenExpiring) => void;
  refreshed: (msg: Refreshed) => void;
  resync: (msg: Resync) => void;
  subscribed: (msg: Subscribed) => void;
  unsubscribed: (msg: Unsubscribed) => void;
}

export declare class SidecarError extends Error {
  readonly code: "BAD_OPTIONS" | "CLOSED" | "QUEUE_FULL" | string;
}

export declare class SidecarClient {
  static readonly version: typeof VERSION;
  constructor(options: SidecarClientOptions);
  readonly options: Required<Pick<SidecarClientOptions, "queueLimit" | "queueOverflow">> &
    SidecarClientOptions;
  readonly state: SidecarState;
  readonly welcome: Welcome | null;
  readonly connectionId: string | null;
  /** The subprotocol the sidecar chose: "", "bearer" or "sidecar.v1". */
  readonly protocol: string;
  /** Messages waiting in the offline queue. */
  readonly queued: number;
  /** sidecar.v1: the last position seen per channel. */
  positions(): Record<string, { epoch: string; offset: number }>;

  /** Lifecycle events, or any payload `type` (e.g. on("SYNC_SUCCESS", fn)). Returns off(). */
  on<K extends keyof SidecarEvents>(type: K, fn: SidecarEvents[K]): () => void;
  on(type: string, fn: (payload: any, meta: MessageMeta) => void): () => void;
  once<K extends keyof SidecarEvents>(type: K, fn: SidecarEvents[K]): () => void;
  once(type: string, fn: (payload: any, meta: MessageMeta) => void): () => void;
  /** Removes one listener, or all of a type when fn is left out. */
  off(type: string, fn?: (...args: any[]) => void): void;

  connect(): void;
  /** Sends now (true) or queues until the next welcome (false); objects are sent as JSON.
   *  Throws SidecarError QUEUE_FULL with queueOverflow "error", CLOSED after close(). */
  send(message: object | string | ArrayBuffer | ArrayBufferView): boolean;
  close(code?: number, reason?: string): void;
  /** Follows a further channel now and after every reconnect (resuming with `history`). */
  subscribe(channel: string): void;
  /** Stops following a channel given to subscribe(). */
  unsubscribe(channel: string): void;
  /** Channels given to subscribe() and not refused, revoked or unsubscribed. */
  subscriptions(): string[];
}

export default SidecarClient;
