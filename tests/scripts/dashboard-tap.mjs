// The dashboard's live tap view on a running mesh, in headless Chromium: opens
// URL#tap, waits for ROWS rows, then one proxy's view (#tap/ADMIN of the first
// row's proxy) and waits for its rows, then leaves the view. Prints JSON: the rows
// of each view as their data-* attributes, the row bound, and the tap's state
// after leaving (the page's data-tap: "closed" once the stream is closed). With
// PNG, a screenshot of the first view is saved there.
//
//   node --experimental-websocket tests/scripts/dashboard-tap.mjs URL [ROWS] [PNG]
import { writeFileSync } from "node:fs";
import { openChromium, until } from "./cdp.mjs";

const [url, want = "10", png] = process.argv.slice(2);
if (!url) { console.error("usage: dashboard-tap.mjs URL [ROWS]"); process.exit(2); }
const { send, evaluate, close } = await openChromium();
await send("Page.enable");
await send("Runtime.enable");

// The rows once there are `n` (of `proxy` only, when given), else null.
const rows = (n, proxy) => `(() => { const rows = [...document.querySelectorAll("#tap-rows tr")].map((r) => ({ ...r.dataset }));
  const mine = ${JSON.stringify(proxy ?? null)};
  if (mine !== null && rows.some((r) => r.proxy !== mine)) return null;
  return rows.length >= ${n} ? rows : null; })()`;
await send("Page.navigate", { url: `${url}#tap` });
const all = await until(evaluate, rows(Number(want)), 20000);
const max = await evaluate(`Number(document.getElementById("tap-rows").dataset.maxRows)`);
let one = null, proxy = null;
if (all && png) {
  await send("Emulation.setDeviceMetricsOverride", { width: 1300, height: 900, deviceScaleFactor: 1, mobile: false });
  const shot = await send("Page.captureScreenshot", { format: "png" });
  writeFileSync(png, Buffer.from(shot.result.data, "base64"));
}
if (all) {
  proxy = all[0].proxy;
  await evaluate(`location.hash = "#tap/" + encodeURIComponent(${JSON.stringify(proxy)})`);
  // The rows of the new view only: the old ones are cleared when the tap restarts.
  one = await until(evaluate, rows(3, proxy), 20000);
}
await evaluate(`location.hash = "#"`);
const closed = await until(evaluate, `document.body.dataset.tap === "closed" ? "closed" : null`, 5000);
console.log(JSON.stringify({ all, max_rows: max, proxy, one, after_leaving: closed }));
close();
