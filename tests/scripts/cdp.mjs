// Headless Chromium driven over its DevTools protocol, with no npm package: Node's
// own WebSocket client (behind a flag on Node 20). Shared by the dashboard scripts.
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Starts Chromium with one page; `send(method, params)` calls the protocol,
// `evaluate(expression)` returns the expression's value, `close()` ends it all.
export async function openChromium() {
  const profile = mkdtempSync(join(tmpdir(), "weft-chromium-"));
  const chromium = spawn("chromium", ["--headless", "--no-sandbox", "--disable-gpu",
    "--remote-debugging-port=0", `--user-data-dir=${profile}`, "about:blank"], { stdio: ["ignore", "ignore", "pipe"] });
  const browserWs = await new Promise((resolve, reject) => {
    let text = "";
    chromium.stderr.on("data", (chunk) => {
      text += chunk;
      const found = text.match(/DevTools listening on (ws:\/\/\S+)/);
      if (found) resolve(found[1]);
    });
    chromium.on("exit", () => reject(new Error("chromium exited: " + text)));
  });
  const port = new URL(browserWs).port;
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const ws = new WebSocket(targets.find((t) => t.type === "page").webSocketDebuggerUrl);
  await new Promise((resolve) => ws.addEventListener("open", resolve));
  let id = 0;
  const pending = new Map();
  ws.addEventListener("message", (event) => {
    const msg = JSON.parse(event.data);
    if (msg.id && pending.has(msg.id)) { pending.get(msg.id)(msg); pending.delete(msg.id); }
  });
  const send = (method, params = {}) => new Promise((resolve) => {
    id += 1; pending.set(id, resolve); ws.send(JSON.stringify({ id, method, params }));
  });
  const evaluate = async (expression) => (await send("Runtime.evaluate", { expression, returnByValue: true })).result.result.value;
  const close = () => { ws.close(); chromium.kill(); };
  return { send, evaluate, close };
}

// Polls `expression` until it is not null, up to `ms`; its last value.
export async function until(evaluate, expression, ms) {
  const deadline = Date.now() + ms;
  let value = null;
  while (value === null && Date.now() < deadline) {
    value = await evaluate(expression);
    if (value === null) await new Promise((r) => setTimeout(r, 50));
  }
  return value;
}
