// The dashboard's load figures, in real time: headless Chromium driven over its
// DevTools protocol (no npm package; Node's WebSocket client, behind a flag on
// Node 20). Prints JSON: when the first data was drawn and the page's JS heap then,
// over RUNS fresh loads, and the weftctl dashboard process's RSS when PID is given.
//
//   node --experimental-websocket tests/scripts/dashboard-load.mjs URL [RUNS] [PID]
import { readFileSync } from "node:fs";
import { openChromium } from "./cdp.mjs";

const [url, runs = "5", pid] = process.argv.slice(2);
if (!url) { console.error("usage: dashboard-load.mjs URL [RUNS] [PID]"); process.exit(2); }
const { send, evaluate, close } = await openChromium();
await send("Page.enable");
await send("Runtime.enable");
const loads = [];
for (let i = 0; i < Number(runs); i++) {
  await send("Network.clearBrowserCache");
  await send("Page.navigate", { url: `${url}?run=${i}` });
  const deadline = Date.now() + 10000;
  let ms = null;
  while (ms === null && Date.now() < deadline) {
    ms = await evaluate("document.body && document.body.dataset.firstRenderMs ? Number(document.body.dataset.firstRenderMs) : null");
    if (ms === null) await new Promise((r) => setTimeout(r, 20));
  }
  await send("HeapProfiler.collectGarbage");
  const heap = (await send("Runtime.getHeapUsage")).result;
  loads.push({ first_render_ms: ms, js_heap_used_bytes: heap.usedSize });
}
let rss_kib = null;
if (pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  rss_kib = { rss: Number(status.match(/VmRSS:\s+(\d+)/)[1]), peak: Number(status.match(/VmHWM:\s+(\d+)/)[1]) };
}
const sorted = loads.map((l) => l.first_render_ms).sort((a, b) => a - b);
console.log(JSON.stringify({ loads, median_first_render_ms: sorted[Math.floor(sorted.length / 2)], dashboard_kib: rss_kib }));
close();
