#!/usr/bin/env node
// A WebSocket client built on the `ws` package that prints one JSON line per event, so the
// integration tests can check the sidecar against a client implementation we did not write.
//
//   node ws_client.js URL [--count N] [--send TEXT] [--timeout-ms MS] [--deflate]
//
// --deflate offers permessage-deflate (ws's perMessageDeflate: true) and adds the negotiated
// extensions to the open line: {"event":"open","extensions":"permessage-deflate"}.
//
// Lines: {"event":"open"}, {"event":"message","binary":bool,"data_b64":"..."},
//        {"event":"close","code":N,"reason":"..."}, {"event":"error","message":"..."}.
// It exits after N messages (closing with 1000), when the connection closes, or after the timeout.
'use strict';

const WebSocket = require('ws');

function parseArgs(argv) {
  const args = { url: null, count: 0, send: null, timeoutMs: 30000, deflate: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--count') args.count = Number(argv[++i]);
    else if (a === '--send') args.send = argv[++i];
    else if (a === '--timeout-ms') args.timeoutMs = Number(argv[++i]);
    else if (a === '--deflate') args.deflate = true;
    else if (args.url === null) args.url = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!args.url) throw new Error('usage: ws_client.js URL [--count N] [--send TEXT]');
  return args;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const args = parseArgs(process.argv.slice(2));
const ws = new WebSocket(args.url, { perMessageDeflate: args.deflate });
let received = 0;

// A bounded lifetime: a test that forgets to close us must not leave a process behind.
const deadline = setTimeout(() => {
  emit({ event: 'error', message: 'timeout' });
  ws.terminate();
  process.exitCode = 2;
}, args.timeoutMs);

ws.on('open', () => {
  emit(args.deflate ? { event: 'open', extensions: ws.extensions } : { event: 'open' });
  if (args.send !== null) ws.send(args.send);
});

ws.on('message', (data, isBinary) => {
  const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
  emit({ event: 'message', binary: isBinary, data_b64: buf.toString('base64') });
  received++;
  if (args.count > 0 && received >= args.count) ws.close(1000, 'done');
});

ws.on('close', (code, reason) => {
  emit({ event: 'close', code, reason: reason.toString('utf8') });
  clearTimeout(deadline);
});

ws.on('error', (err) => {
  emit({ event: 'error', message: String(err && err.message) });
  process.exitCode = 1;
});
