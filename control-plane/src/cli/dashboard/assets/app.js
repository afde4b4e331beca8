// The Weft dashboard: polls /api/state and draws it. No framework, no network
// beyond this origin. Every drawn element carries data-* attributes with the
// numbers it shows, so tests (and curious users) can read them from the DOM.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
let state = null;

function health(success) {
  if (success === null || success === undefined) return "idle";
  if (success >= 0.99) return "ok";
  if (success >= 0.95) return "warn";
  return "bad";
}
const pct = (x, digits) => (x === null || x === undefined ? "-" : (x * 100).toFixed(digits) + "%");
const ms = (x) => (x === null || x === undefined ? "-" : x < 10 ? x.toFixed(2) + " ms" : x.toFixed(0) + " ms");
const rps = (x) => x.toFixed(1);

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function cell(text, numeric) { return el("td", numeric ? { class: "num" } : {}, text); }

// Columns by call depth: clients first, then what they call, and so on.
function layout(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.name, 0]));
  for (let pass = 0; pass < nodes.length; pass++) {
    for (const e of edges) {
      const d = (depth.get(e.source) || 0) + 1;
      if (depth.has(e.destination) && d > depth.get(e.destination) && d < nodes.length) depth.set(e.destination, d);
    }
  }
  const columns = [];
  for (const n of nodes) (columns[depth.get(n.name)] ||= []).push(n);
  const width = 1000, height = 420, at = new Map();
  const used = columns.filter(Boolean);
  used.forEach((column, i) => {
    column.forEach((n, j) => {
      at.set(n.name, { x: (width * (i + 0.5)) / used.length, y: (height * (j + 0.5)) / column.length });
    });
  });
  return at;
}

function drawGraph(view) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  svg.setAttribute("viewBox", "0 0 1000 420");
  const defs = el("svg:defs");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
  marker.append(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#57606a" }));
  defs.append(marker);
  svg.append(defs);
  const at = layout(view.nodes, view.edges);
  for (const e of view.edges) {
    const a = at.get(e.source), b = at.get(e.destination);
    if (!a || !b) continue;
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1, r = 26;
    const g = el("svg:g", { class: "edge " + health(e.success), "data-source": e.source, "data-destination": e.destination,
      "data-rps": e.rps, "data-success": e.success ?? "", "data-p99-ms": e.p99_ms ?? "",
      "data-dst-identities": (e.dst_identities || []).join(" ") });
    // Who answered, for a hover: the endpoints' SPIFFE IDs (none for plaintext hops).
    const answered = (e.dst_identities || []).length ? e.dst_identities.join(", ") : "no mTLS identity";
    g.append(el("svg:title", {}, `${e.source} → ${e.destination}: answered by ${answered}`));
    g.append(el("svg:line", { x1: a.x + (dx * r) / len, y1: a.y + (dy * r) / len, x2: b.x - (dx * r) / len, y2: b.y - (dy * r) / len, "marker-end": "url(#arrow)" }));
    // The label sits nearer the caller, so that edges into one service do not
    // stack their labels at its door.
    g.append(el("svg:text", { x: a.x + dx * 0.4, y: a.y + dy * 0.4 - 6 }, `${rps(e.rps)} rps · ${pct(e.success, 1)} · p99 ${ms(e.p99_ms)}`));
    svg.append(g);
  }
  for (const n of view.nodes) {
    const p = at.get(n.name);
    const classes = ["node", n.kind, health(n.success)];
    if (n.proxies_down > 0) classes.push("down");
    const g = el("svg:g", { class: classes.join(" "), "data-name": n.name, "data-kind": n.kind, "data-rps": n.rps,
      "data-success": n.success ?? "", "data-proxies": n.proxies, "data-proxies-down": n.proxies_down });
    g.append(el("svg:circle", { cx: p.x, cy: p.y, r: 24 }));
    g.append(el("svg:text", { x: p.x, y: p.y + 40 }, n.name));
    g.append(el("svg:text", { x: p.x, y: p.y + 54 }, `${rps(n.rps)} rps · ${pct(n.success, 1)}`));
    svg.append(g);
  }
}

function drawServices(view) {
  const body = document.querySelector("#services tbody");
  body.replaceChildren(...view.services.map((s) => {
    const row = el("tr", { "data-service": s.service, "data-rps": s.rps, "data-success": s.success ?? "", "data-endpoints": s.endpoints });
    const badge = el("span", { class: "badge " + health(s.success) }, pct(s.success, 2));
    const success = cell(""); success.append(badge);
    row.append(cell(s.service), cell(String(s.endpoints), true), cell(rps(s.rps), true), success,
      cell(ms(s.p50_ms), true), cell(ms(s.p99_ms), true), cell(pct(s.tls, 0), true), callers(s.client_identities || []));
    return row;
  }));
}

// The mTLS callers of a service by service account (the SPIFFE ID's last part),
// the whole ID on hover: callers without a proxy of their own show here too.
function callers(identities) {
  const td = el("td", { class: "callers", "data-client-identities": identities.join(" ") });
  td.append(...identities.map((id) => el("span", { class: "identity", title: id }, id.split("/").pop())));
  if (!identities.length) td.textContent = "-";
  return td;
}

function certificate(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 0) return "expired";
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60);
  return `expires in ${h} h ${m} min`;
}

function drawProxies(view) {
  const body = document.querySelector("#proxies tbody");
  body.replaceChildren(...view.proxies.map((p) => {
    const row = el("tr", { class: "state-" + p.state, "data-proxy": p.id, "data-state": p.state, "data-workload": p.workload });
    const link = el("a", { href: "#proxy/" + encodeURIComponent(p.id) }, p.id);
    const name = cell(""); name.append(link);
    const state = p.state + (p.reason ? ` (${p.reason})` : "") + (p.nacks.length ? `: ${p.nacks.join("; ")}` : "");
    row.append(name, cell(p.workload), cell(state), cell(String(p.config_version), true),
      cell(certificate(p.cert_expires_in_s)), cell(p.build + (p.outdated ? " (outdated)" : "")));
    return row;
  }));
  const unreachable = document.getElementById("unreachable");
  unreachable.replaceChildren(...view.unreachable.map((u) => el("li", {}, `${u.target}: ${u.error}`)));
  document.getElementById("unreachable-section").hidden = view.unreachable.length === 0;
}

function drawProxy(view, id) {
  const p = view.proxies.find((x) => x.id === id);
  document.getElementById("proxy-title").textContent = p ? `Proxy ${p.id}` : `Proxy ${id} (not seen)`;
  const facts = document.getElementById("proxy-facts");
  facts.replaceChildren();
  if (!p) return;
  facts.setAttribute("data-state", p.state);
  const add = (k, v) => facts.append(el("dt", {}, k), el("dd", {}, v));
  add("Workload", p.workload);
  add("State", p.state + (p.reason ? ` (${p.reason})` : ""));
  add("Admin", p.admin || "-");
  add("Config version", String(p.config_version));
  add("NACKs", p.nacks.length ? p.nacks.join("; ") : "none");
  add("Certificate", certificate(p.cert_expires_in_s));
  add("Build", p.build + (p.outdated ? " (outdated: not the control plane's)" : ""));
  const live = el("a", { id: "proxy-tap", href: "#tap/" + encodeURIComponent(p.admin) }, "its requests, live");
  if (p.admin) { const dd = el("dd"); dd.append(live); facts.append(el("dt", {}, "Tap"), dd); }
  const body = document.querySelector("#proxy-endpoints tbody");
  body.replaceChildren(...p.endpoints.map((e) => {
    const row = el("tr", { "data-service": e.service });
    row.append(cell(e.service), cell(String(e.healthy), true), cell(String(e.unhealthy), true),
      cell(String(e.ejected), true), cell(String(e.unreachable), true));
    return row;
  }));
}

// The live tap view (#tap, or #tap/ADMIN for one proxy): /api/tap's server-sent
// events, newest row first, only the last TAP_ROWS kept. The stream is open only
// while the view is shown: leaving it closes the EventSource, and the dashboard
// then stops tapping the proxies.
const TAP_ROWS = 200;
let tap = null;

function tapQuery(proxy) {
  const query = new URLSearchParams();
  if (proxy) query.set("proxy", proxy);
  for (const name of ["namespace", "service", "to", "path", "method"]) {
    const value = document.getElementById("tap-" + name).value.trim();
    if (value) query.set(name, value);
  }
  return query.toString();
}

function setTapState(text, open) {
  document.getElementById("tap-state").textContent = text;
  document.body.dataset.tap = open ? "open" : "closed";
}

function stopTap() {
  if (!tap) return;
  tap.source.close();
  tap = null;
  setTapState("stopped", false);
}

// Opens the stream for the form's filters, unless one for the same is open
// (or ended: a poll does not restart it; Apply does, with `again`).
function startTap(proxy, again) {
  const query = tapQuery(proxy);
  if (tap && tap.query === query && !again) return;
  stopTap();
  document.getElementById("tap-rows").replaceChildren();
  const source = new EventSource("/api/tap?" + query);
  tap = { source, query };
  setTapState("connecting…", true);
  source.addEventListener("open", (m) => {
    const proxies = JSON.parse(m.data).proxies.map(proxyName);
    setTapState(proxies.length ? `tapping ${proxies.join(", ")}` : "no proxy to tap", true);
  });
  source.addEventListener("ended", (m) => {
    const ended = JSON.parse(m.data);
    if (ended.error) setTapState(`${ended.proxy}: ${ended.error}`, true);
  });
  // Every stream ended (or none could start): no reconnecting in a loop.
  source.addEventListener("done", () => { source.close(); setTapState("ended: no proxy stream left (Apply starts again)", false); });
  source.onmessage = (m) => addTapRow(JSON.parse(m.data));
}

// A proxy by its id where the dashboard knows it (the stream names admin addresses).
function proxyName(admin) {
  const known = state && state.proxies.find((p) => p.admin === admin);
  return known ? known.id : admin;
}

function addTapRow({ proxy, event: e }) {
  const status = e.status === null || e.status === undefined ? "-" : String(e.status) + (e.grpc_status === null || e.grpc_status === undefined ? "" : ` grpc ${e.grpc_status}`);
  const row = el("tr", { class: "tap-row", "data-proxy": proxy, "data-direction": e.direction || "", "data-method": e.method || "",
    "data-authority": e.authority || "", "data-path": e.path || "", "data-status": e.status ?? "", "data-grpc-status": e.grpc_status ?? "",
    "data-latency-ms": e.latency_ms ?? "", "data-service": e.service || "", "data-tls": String(!!e.tls) });
  if ((e.status >= 500) || (e.grpc_status !== null && e.grpc_status !== undefined && e.grpc_status !== 0)) row.classList.add("failed");
  const source = cell((e.source || "-").split("/").pop()); source.title = e.source || "";
  const name = cell(proxyName(proxy)); name.title = proxy;
  row.append(cell((e.time || "").slice(11, 23)), name, cell(e.direction === "inbound" ? "in" : "out"), cell(e.method || ""),
    cell((e.authority || "") + (e.path || "")), cell(status, true), cell(ms(e.latency_ms), true), cell(e.service || "-"),
    cell(e.endpoint || "-"), cell(e.tls ? "yes" : "no"), source);
  const body = document.getElementById("tap-rows");
  body.prepend(row);
  while (body.children.length > TAP_ROWS) body.lastElementChild.remove();
}

function showTap(view, proxy, again) {
  const known = proxy ? view && view.proxies.find((p) => p.admin === proxy) : null;
  document.getElementById("tap-title").textContent = proxy ? `Live requests of proxy ${known ? known.id : proxy}` : "Live requests";
  startTap(proxy, again);
}

// Figures for whoever measures the page: when the first data was drawn (ms since
// navigation began) and the script's heap then (Chromium only).
function markFirstRender() {
  if (document.body.dataset.firstRenderMs) return;
  document.body.dataset.firstRenderMs = String(Math.round(performance.now()));
  if (performance.memory) document.body.dataset.jsHeapBytes = String(performance.memory.usedJSHeapSize);
}

function render(again) {
  const hash = decodeURIComponent(location.hash.slice(1));
  const tapping = hash === "tap" || hash.startsWith("tap/");
  const proxy = hash.startsWith("proxy/") ? hash.slice(6) : null;
  document.getElementById("mesh").hidden = proxy !== null || tapping;
  document.getElementById("proxy").hidden = proxy === null;
  document.getElementById("tap").hidden = !tapping;
  if (state) {
    document.getElementById("updated").textContent = state.time ? `updated ${state.time}` : "waiting for the first scrape…";
    document.body.setAttribute("data-time", state.time || "");
  }
  if (tapping) { showTap(state, hash.slice(4) || null, again); return; }
  stopTap();
  if (!state) return;
  if (proxy !== null) { drawProxy(state, proxy); return; }
  drawGraph(state);
  drawServices(state);
  drawProxies(state);
  markFirstRender();
}

async function poll() {
  try {
    const response = await fetch("/api/state", { cache: "no-store" });
    if (response.ok) { state = await response.json(); render(); }
  } catch (error) {
    document.getElementById("updated").textContent = "the dashboard's server does not answer";
  }
  setTimeout(poll, POLL_MS);
}
window.addEventListener("hashchange", () => render());
window.addEventListener("pagehide", stopTap);
document.getElementById("tap-form").addEventListener("submit", (event) => { event.preventDefault(); render(true); });
render();
poll();
