// Drives Debian's headless Chromium through page.html for test_browser.py and prints one JSON
// line per event the page records (open, message, error, close), so the Python test can assert
// on what a real browser saw. It owns the browser's lifetime: launch, cookies, load, poll, exit.
//
// Usage: node drive.js '<json>' with
//   page_url    the page to load (page.html served over http://127.0.0.1:<port>/)
//   cookies     optional Playwright cookies ({name, value, url} or {name, value, domain, path})
//   timeout_ms  optional overall deadline (default 30000); the driver exits 2 when it passes
//   executable  optional browser binary (default /usr/bin/chromium)
// Output lines: {"event":"loaded"}, then the page's events in order; the driver exits 0 after
// the page reports "close". A line "close" on stdin (or stdin's end) makes the page close its
// WebSocket with 1000, so the test ends the session the way a browser tab would; lines "offline"
// and "online" switch the browser's emulated network (see below). Driver failures print {"event":"driver_error","message":...}, exit 1.
"use strict";

const path = require("path");

// playwright-core lives in ../node/node_modules with the other Node test dependencies.
const { chromium } = require(path.join(__dirname, "..", "node", "node_modules", "playwright-core"));

// Flags this machine needs: root (no sandbox), no GPU, and nothing that reaches the network on
// its own (QUIC, component updates, sync, background fetches).
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function main() {
  const opts = JSON.parse(process.argv[2] || "{}");
  if (!opts.page_url) throw new Error("page_url is required");
  const deadline = Date.now() + (opts.timeout_ms || 30000);
  const remaining = () => Math.max(deadline - Date.now(), 1);

  // launch() gives the browser a fresh temporary --user-data-dir and removes it on close.
  const browser = await chromium.launch({
    executablePath: opts.executable || "/usr/bin/chromium",
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
    timeout: remaining(),
  });
  let exitCode = 2;
  try {
    const context = await browser.newContext();
    if (opts.cookies && opts.cookies.length) await context.addCookies(opts.cookies);
    const page = await context.newPage();
    page.on("pageerror", (e) => emit({ event: "page_exception", message: String(e) }));
    await page.goto(opts.page_url, { timeout: remaining(), waitUntil: "load" });
    emit({ event: "loaded" });
    let closing = false;
    const closeSocket = () => {
      if (closing) return;
      closing = true;
      page.evaluate(() => window.__ws && window.__ws.close(1000, "done")).catch(() => {});
    };
    // Commands, one a line: "close" (above), "offline" and "online" (the network as Chromium's
    // DevTools emulate it: navigator.onLine changes, the window gets the event, and the network
    // is refused to the page). Each network command is acknowledged with {"event":"driver"}.
    let pendingInput = "";
    process.stdin.on("data", (chunk) => {
      pendingInput += String(chunk);
      const lines = pendingInput.split("\n");
      pendingInput = lines.pop();
      for (const line of lines.map((l) => l.trim())) {
        if (line === "close") closeSocket();
        if (line === "offline" || line === "online") {
          context.setOffline(line === "offline").then(
            () => emit({ event: "driver", did: line }),
            (e) => emit({ event: "driver_error", message: String(e) }));
        }
      }
    });
    process.stdin.on("end", closeSocket);

    // Wait for the page to record more events than we have printed, print them, and stop at the
    // close event or at the deadline; every wait is bounded by the deadline.
    let seen = 0;
    for (;;) {
      try {
        await page.waitForFunction((n) => window.__events.length > n, seen,
                                   { timeout: remaining(), polling: 20 });
      } catch (e) {
        emit({ event: "timeout", after_events: seen });
        break;
      }
      const events = await page.evaluate((n) => window.__events.slice(n), seen);
      seen += events.length;
      for (const ev of events) emit(ev);
      if (events.some((ev) => ev.event === "close" || ev.event === "page_error")) {
        exitCode = 0;
        break;
      }
    }
  } finally {
    process.stdin.destroy();
    await browser.close();
  }
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    emit({ event: "driver_error", message: String(e && e.stack ? e.stack : e) });
    process.exit(1);
  },
);
