#!/usr/bin/env node
// Many `sidecar.v1` clients on the `ws` package in one process, for the history tests (issue 11).
// Each client connects to URL, records every envelope of CHANNEL, and when its connection ends
// before it has seen offset UNTIL it reconnects to NEXT_URL (or URL again) with
// `recover=CHANNEL@EPOCH:OFFSET`, the last position it saw, after the delay the server's
// `server_shutdown` asked for (else 50 ms). It closes with 1000 once it has seen UNTIL.
//
//   node history_clients.js URL [--next-url URL2] [--clients N] [--until N]
//                               [--channel org:acme] [--timeout-ms MS]
//
// Lines on stdout: {"event":"ready"} once every client has its first welcome, then one
// {"event":"result","client":i,...} per client when all are done (or at the timeout, with
// "done":false), then the process exits. The test judges the results; this script only records.
'use strict';

const WebSocket = require('ws');

function parseArgs(argv) {
  const a = { url: null, nextUrl: null, clients: 1, until: 0, channel: 'org:acme',
              timeoutMs: 60000 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--next-url') a.nextUrl = argv[++i];
    else if (k === '--clients') a.clients = Number(argv[++i]);
    else if (k === '--until') a.until = Number(argv[++i]);
    else if (k === '--channel') a.channel = argv[++i];
    else if (k === '--timeout-ms') a.timeoutMs = Number(argv[++i]);
    else if (a.url === null) a.url = k;
    else throw new Error(`unexpected argument ${k}`);
  }
  if (!a.url || !(a.until > 0)) throw new Error('usage: history_clients.js URL --until N ...');
  return a;
}

const args = parseArgs(process.argv.slice(2));
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const MAX_CONNECTS = 20; // a client that cannot settle gives up rather than loop forever

class Client {
  constructor(index) {
    this.index = index;
    this.offsets = [];
    this.ns = [];
    this.epochs = [];
    this.resyncs = [];
    this.welcomes = [];
    this.shutdowns = 0;
    this.closes = [];
    this.errors = [];
    this.connects = 0;
    this.done = false;
    this.position = null; // {epoch, offset}: the last one seen
    this.hintMs = 50;
  }

  connect(url) {
    this.connects++;
    let full = url;
    if (this.position) {
      const v = `${args.channel}@${this.position.epoch}:${this.position.offset}`;
      full += (url.includes('?') ? '&' : '?') + 'recover=' + encodeURIComponent(v);
    }
    const ws = new WebSocket(full, ['sidecar.v1'], { perMessageDeflate: false });
    this.ws = ws;
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('close', (code) => this.onClose(code));
    ws.on('error', (err) => this.errors.push(String(err && err.message)));
  }

  onMessage(data, isBinary) {
    if (isBinary) {
      this.errors.push('a binary frame in sidecar.v1');
      return;
    }
    const m = JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : String(data));
    if (m.type === 'connected') {
      const st = m.channels && m.channels[args.channel];
      this.welcomes.push(st || null);
      if (!this.position && st) this.position = { epoch: st.epoch, offset: st.offset };
      if (this.welcomes.length === 1) onFirstWelcome();
    } else if (m.type === 'message' && m.channel === args.channel) {
      this.offsets.push(m.offset);
      this.ns.push(m.data && m.data.n);
      if (!this.epochs.includes(m.epoch)) this.epochs.push(m.epoch);
      this.position = { epoch: m.epoch, offset: m.offset };
      if (m.offset >= args.until && !this.done) {
        this.done = true;
        this.ws.close(1000, 'done');
        onDone();
      }
    } else if (m.type === 'resync') {
      this.resyncs.push(m);
      if (m.channel === args.channel && m.epoch !== undefined && m.offset !== undefined)
        this.position = { epoch: m.epoch, offset: m.offset };
    } else if (m.type === 'server_shutdown') {
      this.shutdowns++;
      if (typeof m.reconnect_after_ms === 'number') this.hintMs = m.reconnect_after_ms;
    }
  }

  onClose(code) {
    this.closes.push(code);
    if (this.done || finished) return;
    if (this.connects >= MAX_CONNECTS) return;
    const url = args.nextUrl || args.url;
    const delay = this.hintMs;
    this.hintMs = 100; // a refused or failed reconnect retries soon
    setTimeout(() => this.connect(url), delay);
  }

  result() {
    return { event: 'result', client: this.index, done: this.done, offsets: this.offsets,
             ns: this.ns, epochs: this.epochs, resyncs: this.resyncs, welcomes: this.welcomes,
             shutdowns: this.shutdowns, closes: this.closes, errors: this.errors,
             connects: this.connects };
  }
}

let welcomed = 0;
let doneCount = 0;
let finished = false;
const clients = [];

function onFirstWelcome() {
  if (++welcomed === args.clients) emit({ event: 'ready' });
}

function onDone() {
  if (++doneCount === args.clients) finish();
}

function finish() {
  if (finished) return;
  finished = true;
  clearTimeout(deadline);
  const out = clients.map((c) => JSON.stringify(c.result()) + '\n').join('');
  // A pipe may take the lines asynchronously: exit only once they are all written, or the
  // reader gets a truncated line. Connections still open end with the process.
  process.stdout.write(out, () => process.exit(0));
}

// A bounded lifetime: results are printed either way, marked done or not.
const deadline = setTimeout(finish, args.timeoutMs);

for (let i = 0; i < args.clients; i++) {
  const c = new Client(i);
  clients.push(c);
  c.connect(args.url);
}
