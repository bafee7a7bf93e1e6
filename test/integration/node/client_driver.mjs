#!/usr/bin/env node
// Runs N SidecarClients (client/sidecar-client.js, with the `ws` package as the socket) in one
// process for test_client_node.py and prints one JSON line per thing they report, each stamped
// with the wall clock in ms, so the test can judge timing across clients without sleeping.
//
//   node client_driver.mjs '<json>'
//     count     how many clients (default 1)
//     options   SidecarClient options, shared by all (url or discoveryUrl, history, queueLimit, ...)
//     tokens    optional list: getToken() returns them in order, the last one repeatedly; an entry
//               null makes that call throw (a token service that is down)
//     ws        "package" (default) passes `ws` as options.WebSocket; "import" lets the client
//               find it on its own
//     client_path  optional path of sidecar-client.js (default: the repo's client/)
//     lifetime_ms  the process exits on its own after this (default 60000)
//     notes_on_token_expiring  optional n: the token_expiring listener sends n {"type":"note"}
//               messages. Listeners run before the client's refresh goes out, so these are
//               sent just ahead of it and their answers arrive while it is pending.
//
// Lines: {"event":"ready"} once the clients exist, then per client i:
//   {"event":"state","i":i,"t":ms,"state":...,"reason":...,...}
//   {"event":"message","i":i,"t":ms,"data":...,"meta":{...}}   (binary data as {"b64":...})
//   {"event":"typed","i":i,"t":ms,"type":...,"payload":...}   (on(type) for "SYNC_SUCCESS")
//   {"event":"control","i":i,"t":ms,"type":...,"payload":...}  (sidecar's own messages)
//   {"event":"dropped","i":i,"t":ms,"message":...,"reason":...}
//   {"event":"resync","i":i,"t":ms,"channel":...,"reason":...}  (from options.onResync)
//   {"event":"sent","i":i,"seq":n,"now":bool} / {"event":"send_error","i":i,"code":...}
// stdin takes JSON lines: {"cmd":"send","i":i|null,"msg":...} (null: every client),
// {"cmd":"close"} (every client, then exit 0), {"cmd":"positions","i":i},
// {"cmd":"subscribe"|"unsubscribe"|"subscriptions","i":i,"channel":...} (answered with
// {"event":"subscriptions","i":i,"channels":[...]} after the call).
import { createRequire } from "node:module";
import readline from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";

const args = JSON.parse(process.argv[2] || "{}");
const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const { SidecarClient, VERSION } = await import(
  args.client_path || path.join(here, "..", "..", "..", "client", "sidecar-client.js"));

const count = args.count || 1;

function emit(obj) {
  process.stdout.write(JSON.stringify({ t: Date.now(), ...obj }) + "\n");
}

function plain(data) {
  if (data instanceof ArrayBuffer) return { b64: Buffer.from(data).toString("base64") };
  return data;
}

let tokenCalls = 0;
async function getToken() {
  const list = args.tokens;
  const tok = list[Math.min(tokenCalls, list.length - 1)];
  tokenCalls++;
  emit({ event: "get_token", call: tokenCalls });
  if (tok === null) throw new Error("token service down");
  return tok;
}

const clients = [];
for (let i = 0; i < count; i++) {
  const options = { ...args.options };
  if (args.ws !== "import") options.WebSocket = WebSocket;
  if (Array.isArray(args.tokens)) options.getToken = getToken;
  options.onResync = (channel, reason) => emit({ event: "resync", i, channel, reason });
  const c = new SidecarClient(options);
  c.on("state", (s) => emit({ event: "state", i, ...s }));
  c.on("message", (data, meta) => emit({ event: "message", i, data: plain(data), meta }));
  c.on("SYNC_SUCCESS", (payload) => emit({ event: "typed", i, type: "SYNC_SUCCESS", payload }));
  c.on("dropped", (d) => emit({ event: "dropped", i, message: d.message, reason: d.reason }));
  for (const type of ["connected", "server_shutdown", "token_expiring", "refreshed", "error",
                      "resync", "pong", "subscribed", "unsubscribed"]) {
    c.on(type, (payload) => emit({ event: "control", i, type, payload }));
  }
  if (args.notes_on_token_expiring) {
    c.on("token_expiring", () => {
      for (let seq = 0; seq < args.notes_on_token_expiring; seq++) c.send({ type: "note", seq });
    });
  }
  clients.push(c);
}
emit({ event: "ready", version: VERSION, static_version: SidecarClient.version });

const lifetime = setTimeout(() => {
  emit({ event: "lifetime_over" });
  process.exit(2);
}, args.lifetime_ms || 60000);

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.cmd === "send") {
    const targets = cmd.i == null ? clients.map((_, i) => i) : [cmd.i];
    for (const i of targets) {
      try {
        const now = clients[i].send(cmd.msg);
        emit({ event: "sent", i, now, queued: clients[i].queued });
      } catch (e) {
        emit({ event: "send_error", i, code: e.code, message: e.message });
      }
    }
  } else if (["subscribe", "unsubscribe", "subscriptions"].includes(cmd.cmd)) {
    try {
      if (cmd.cmd !== "subscriptions") clients[cmd.i][cmd.cmd](cmd.channel);
    } catch (e) {
      emit({ event: "send_error", i: cmd.i, code: e.code, message: e.message });
    }
    emit({ event: "subscriptions", i: cmd.i, channels: clients[cmd.i].subscriptions() });
  } else if (cmd.cmd === "positions") {
    emit({ event: "positions", i: cmd.i, positions: clients[cmd.i].positions() });
  } else if (cmd.cmd === "close") {
    for (const c of clients) c.close();
    clearTimeout(lifetime);
    emit({ event: "closed_all" });
    process.exit(0);
  }
});
