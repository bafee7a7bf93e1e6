// Drives Debian's headless Chromium on the sidecar's own /dashboard for test_dashboard.py. Unlike
// drive.js (which records a page's WebSocket events), this one keeps the page open and answers
// commands, one JSON object per stdin line, with one JSON line each on stdout:
//   {"cmd":"read"}                      -> {"event":"read","snapshot":{...}} (see snapshot())
//   {"cmd":"wait_seq","after":N}        -> {"event":"seq","seq":M} once the page has polled past N
//   {"cmd":"fill","selector":S,"value":V}, {"cmd":"click","selector":S} -> {"event":"done"}
//   {"cmd":"screenshot","path":P}       -> {"event":"done"} after a full-page PNG is written to P
//   {"cmd":"quit"}                      -> closes the browser and exits 0
// It prints {"event":"loaded","status":…,"headers":{…}} first (the document's HTTP answer).
// Console errors, page exceptions, failed requests and CSP violations are printed as they happen
// ({"event":"console_error"|"page_exception"|"request_failed"|"csp_violation",...}), so the test
// can fail on any of them.
//
// Usage: node dashboard.js '<json>' with url (the dashboard), optional headers (extra HTTP
// headers for every request, e.g. the admin token), color_scheme ("light" or "dark"),
// timeout_ms (overall deadline, default 60000) and executable (default /usr/bin/chromium).
"use strict";

const path = require("path");
const readline = require("readline");

const { chromium } = require(path.join(__dirname, "..", "node", "node_modules", "playwright-core"));

// The same flags as drive.js: root (no sandbox), no GPU, nothing that reaches the network.
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// Everything the test compares, read in one evaluate so that it is one moment of the page.
function snapshot() {
  const values = {};
  for (const el of document.querySelectorAll("[id][data-value]")) {
    values[el.id] = { value: el.dataset.value, text: el.textContent.trim(),
                      total: el.dataset.total === undefined ? null : el.dataset.total };
  }
  const refusals = {};
  for (const tr of document.querySelectorAll("#refusals tbody tr")) {
    refusals[tr.dataset.reason] = Number(tr.querySelector("td.num").dataset.value);
  }
  const rows = [];
  for (const tr of document.querySelectorAll("#conn-table tbody tr")) {
    const row = { id: tr.dataset.id };
    for (const td of tr.querySelectorAll("td")) row[td.dataset.field] = td.dataset.value;
    rows.push(row);
  }
  const info = document.getElementById("page-info");
  const canvases = {};
  for (const c of document.querySelectorAll("canvas")) {
    // A chart that drew anything has pixels that are not fully transparent.
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let inked = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) inked++;
    canvases[c.id] = { inked, width: c.width, height: c.height };
  }
  return {
    seq: Number(document.body.dataset.seq || 0),
    error: document.body.dataset.error || "",
    values, refusals, rows, canvases,
    page: { matched: info.dataset.matched, offset: info.dataset.offset, text: info.textContent },
    background: getComputedStyle(document.body).backgroundColor,
  };
}

async function main() {
  const opts = JSON.parse(process.argv[2] || "{}");
  if (!opts.url) throw new Error("url is required");
  const deadline = Date.now() + (opts.timeout_ms || 60000);
  const remaining = () => Math.max(deadline - Date.now(), 1);
  const browser = await chromium.launch({
    executablePath: opts.executable || "/usr/bin/chromium",
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
    timeout: remaining(),
  });
  try {
    const context = await browser.newContext({
      extraHTTPHeaders: opts.headers || {},
      colorScheme: opts.color_scheme || "light",
      viewport: { width: 1280, height: 900 },
    });
    const page = await context.newPage();
    page.on("pageerror", (e) => emit({ event: "page_exception", message: String(e) }));
    page.on("console", (m) => {
      if (m.type() === "error") emit({ event: "console_error", message: m.text() });
    });
    page.on("requestfailed", (r) => emit({ event: "request_failed", url: r.url(),
                                           failure: r.failure() && r.failure().errorText }));
    // A CSP violation reaches the page as an event; report it before the page's own script runs.
    await page.exposeFunction("__reportCsp", (v) => emit({ event: "csp_violation", ...v }));
    await page.addInitScript(() => {
      document.addEventListener("securitypolicyviolation", (e) => {
        window.__reportCsp({ directive: e.violatedDirective, blocked: e.blockedURI,
                             sample: e.sample });
      });
    });
    const response = await page.goto(opts.url, { timeout: remaining(), waitUntil: "load" });
    emit({ event: "loaded", status: response.status(), headers: response.headers() });

    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
      if (!line.trim()) continue;
      const cmd = JSON.parse(line);
      if (cmd.cmd === "quit") break;
      if (cmd.cmd === "read") {
        emit({ event: "read", snapshot: await page.evaluate(snapshot) });
      } else if (cmd.cmd === "wait_seq") {
        await page.waitForFunction((n) => Number(document.body.dataset.seq || 0) > n, cmd.after,
                                   { timeout: remaining(), polling: 20 });
        emit({ event: "seq", seq: await page.evaluate(() => Number(document.body.dataset.seq)) });
      } else if (cmd.cmd === "fill") {
        await page.fill(cmd.selector, cmd.value, { timeout: remaining() });
        emit({ event: "done" });
      } else if (cmd.cmd === "click") {
        await page.click(cmd.selector, { timeout: remaining() });
        emit({ event: "done" });
      } else if (cmd.cmd === "screenshot") {
        await page.screenshot({ path: cmd.path, fullPage: true, timeout: remaining() });
        emit({ event: "done" });
      } else {
        emit({ event: "driver_error", message: `unknown command ${line}` });
      }
    }
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    emit({ event: "driver_error", message: String(e && e.stack ? e.stack : e) });
    process.exit(1);
  },
);
