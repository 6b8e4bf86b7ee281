// schemahub status page: polls /api/stats, /api/coverage and /api/candles and draws them. No libraries, no CDN.
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(250, Number(params.get("refresh")) || 3000);
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { market: params.get("market"), interval: params.get("interval") || "1m", stats: null };

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ formatting

const fmtInt = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));

function fmtBytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
}

function fmtAge(s) {
  if (s == null) return "no rows";
  if (s < 0) return "in " + fmtAge(-s);
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return Math.round(s / 86400) + " d";
}

const fmtTime = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "–");

function fmtPrice(x) {
  const a = Math.abs(x);
  const digits = a >= 1000 ? 2 : a >= 1 ? 4 : 8;
  return x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
}

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

const marketKey = (p) => p.exchange + "/" + p.product_id;

// ------------------------------------------------------------------ totals and table

function renderTotals(doc) {
  const t = doc.totals;
  $("storage").textContent = doc.storage;
  const rows = $("total-rows");
  rows.textContent = fmtInt(t.rows);
  rows.dataset.rows = String(t.rows);
  $("total-quarantined").textContent = t.quarantined ? fmtInt(t.quarantined) + " quarantined" : "none quarantined";
  $("total-quarantined").className = "sub" + (t.quarantined ? " warn" : "");
  $("total-size").textContent = fmtBytes(t.table_bytes);
  $("total-size-sub").textContent = "table; raw " + fmtBytes(t.raw_bytes);
  for (const [id, n, by] of [["exchanges", t.exchanges, t.exchanges_by_state], ["products", t.products, t.products_by_state]]) {
    $("total-" + id).textContent = fmtInt(n);
    const sub = $("total-" + id + "-sub");
    sub.replaceChildren();
    for (const s of ["fresh", "lagging", "stale", "empty"]) {
      if (!by[s] && s !== "fresh" && s !== "stale") continue;
      const span = el("span", { "data-state": s });
      span.append(el("i", { class: "dot " + s }), (by[s] || 0) + " " + (s === "fresh" ? "up" : s));
      sub.append(span);
    }
  }
  const th = doc.thresholds;
  const legend = $("legend");
  legend.replaceChildren("Freshness is the age of the last trade: ",
    el("span", { class: "pill fresh" }, "fresh"), " ≤ " + fmtAge(th.fresh_s) + ", ",
    el("span", { class: "pill lagging" }, "lagging"), " up to " + fmtAge(th.stale_s) + ", ",
    el("span", { class: "pill stale" }, "stale"), " beyond (an exchange is as fresh as its newest trade). Coverage:",
    el("i", { class: "swatch day-swatch" }), "rows that day (taller = more)",
    el("i", { class: "swatch hole-swatch" }), "hole: no rows between first and last day.");
}

function timeline(cov, range) {
  const svg = el("svg:svg", { class: "timeline", viewBox: "0 0 260 18", preserveAspectRatio: "none" });
  if (!cov || !range.first) return svg;
  const day0 = Date.parse(range.first + "T00:00:00Z");
  const ndays = Math.round((Date.parse(range.last + "T00:00:00Z") - day0) / 86400000) + 1;
  const w = 260 / ndays;
  const max = Math.max(...cov.days.map((d) => d[1]));
  const x = (iso) => Math.round((Date.parse(iso + "T00:00:00Z") - day0) / 86400000) * w;
  svg.append(el("svg:rect", { class: "none", x: 0, y: 0, width: 260, height: 18 }));
  for (const [day, n] of cov.days) {
    const h = Math.max(3, 18 * Math.sqrt(n / max));
    const r = el("svg:rect", { class: "day", x: x(day), y: 18 - h, width: Math.max(w - (w > 4 ? 1 : 0), 1.5), height: h,
                               "data-day": day, "data-rows": n });
    r.append(el("svg:title", {}, day + ": " + fmtInt(n) + " rows"));
    svg.append(r);
  }
  for (const day of cov.holes) {
    const r = el("svg:rect", { class: "hole", x: x(day), y: 0, width: Math.max(w - (w > 4 ? 1 : 0), 2), height: 18,
                               "data-day": day });
    r.append(el("svg:title", {}, day + ": hole (no rows)"));
    svg.append(r);
  }
  return svg;
}

function renderTable(doc, coverage) {
  const byKey = new Map((coverage ? coverage.products : []).map((c) => [marketKey(c), c]));
  const range = { first: coverage && coverage.first_day, last: coverage && coverage.last_day };
  $("coverage-range").textContent = range.first ? "coverage " + range.first + " → " + range.last + " (UTC)" : "";
  const body = $("products").tBodies[0];
  const rows = doc.products.map((p) => {
    const tr = el("tr", { "data-exchange": p.exchange, "data-product": p.product_id, "data-rows": p.rows,
                          "data-state": p.state });
    if (marketKey(p) === state.market) tr.className = "selected";
    const cell = (text, cls) => tr.append(el("td", cls ? { class: cls } : {}, text));
    cell(p.exchange);
    cell(p.product_id);
    cell(fmtInt(p.rows), "num");
    cell(fmtTime(p.first_trade), "mono");
    cell(fmtTime(p.last_trade), "mono");
    const fr = el("td");
    fr.append(el("span", { class: "pill " + p.state, title: p.state }, p.state === "empty" ? "no rows" : fmtAge(p.freshness_s)));
    tr.append(fr);
    cell(fmtBytes(p.raw_bytes), "num");
    cell(fmtBytes(p.table_bytes), "num");
    cell(p.bytes_per_trade == null ? "–" : p.bytes_per_trade.toFixed(1), "num");
    cell(fmtInt(p.quarantined), "num" + (p.quarantined ? " warn" : ""));
    const au = p.audit;  // the latest `schemahub audit` reports: coverage of the ids the exchange served
    cell(!au || au.coverage == null ? "–" : (100 * au.coverage).toFixed(3) + "%" + (au.ok ? "" : " ✗"),
         "num" + (au && !au.ok ? " warn" : ""));
    const tl = el("td");
    const cov = byKey.get(marketKey(p));
    tl.append(timeline(cov, range));
    if (cov && cov.holes.length) tl.append(el("span", { class: "warn" }, " " + cov.holes.length + " hole" + (cov.holes.length > 1 ? "s" : "")));
    tr.append(tl);
    tr.addEventListener("click", () => selectMarket(marketKey(p)));
    return tr;
  });
  body.replaceChildren(...rows);
}

function renderMarkets(doc) {
  const select = $("market");
  const withRows = doc.products.filter((p) => p.rows > 0);
  if (!state.market || !withRows.some((p) => marketKey(p) === state.market)) {
    const pick = withRows.find((p) => p.exchange === "coinbase" && p.product_id === "BTC-USD") || withRows[0];
    state.market = pick ? marketKey(pick) : null;
  }
  const keys = withRows.map(marketKey);
  if (select.options.length !== keys.length || [...select.options].some((o, i) => o.value !== keys[i])) {
    select.replaceChildren(...keys.map((k) => el("option", { value: k }, k.replace("/", "  "))));
  }
  if (state.market) select.value = state.market;
}

// ------------------------------------------------------------------ candle chart

function niceStep(range, count) {
  const raw = range / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

function renderChart(doc) {
  const svg = $("chart");
  const W = Math.max(300, svg.clientWidth || 1200), H = 360;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const bars = doc.candles.map((c) => ({ t: Date.parse(c.interval_start), o: +c.open, h: +c.high, l: +c.low, c: +c.close,
                                          v: +c.volume, n: c.trades, done: c.complete !== false }));
  const info = $("chart-info");
  if (!bars.length) {
    svg.append(el("svg:text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no trades in this range"));
    info.textContent = "";
    return;
  }
  const padL = 34, padR = 78, padT = 10, priceH = 250, volTop = 280, volH = 50, axisY = H - 8;
  const lo = Math.min(...bars.map((b) => b.l)), hi = Math.max(...bars.map((b) => b.h));
  const span = hi - lo || Math.abs(hi) * 0.001 || 1;
  const y = (p) => padT + (hi + span * 0.05 - p) / (span * 1.1) * priceH;
  const t0 = Date.parse(doc.start), t1 = Date.parse(doc.end);
  const width = { "1m": 60e3, "5m": 300e3, "15m": 900e3, "1h": 3600e3, "4h": 14400e3, "1d": 86400e3 }[doc.interval];
  const slots = Math.max(1, Math.round((t1 - t0) / width));
  const slot = (W - padL - padR) / slots;
  const x = (t) => padL + ((t - t0) / width) * slot;

  const step = niceStep(span * 1.1, 5);
  const lastClose = bars[bars.length - 1].c;
  for (let p = Math.ceil((lo - span * 0.05) / step) * step; p <= hi + span * 0.05; p += step) {
    svg.append(el("svg:line", { class: "grid", x1: padL, x2: W - padR, y1: y(p), y2: y(p) }));
    if (Math.abs(y(p) - y(lastClose)) > 14)  // the last price's own label wins
      svg.append(el("svg:text", { class: "axis", x: W - padR + 6, y: y(p) + 4 }, fmtPrice(p)));
  }
  const labelEvery = Math.max(1, Math.ceil(slots / 8));
  for (let k = 0; k <= slots; k += labelEvery) {
    const t = t0 + k * width, d = new Date(t).toISOString();
    const text = width >= 86400e3 ? d.slice(0, 10) : (k === 0 || d.slice(11, 16) === "00:00" ? d.slice(5, 10) + " " : "") + d.slice(11, 16);
    svg.append(el("svg:line", { class: "grid", x1: x(t), x2: x(t), y1: padT, y2: volTop + volH }));
    svg.append(el("svg:text", { class: "axis", x: x(t), y: axisY, "text-anchor": "middle" }, text));
  }
  const vmax = Math.max(...bars.map((b) => b.v)) || 1;
  const bw = Math.max(1, slot * 0.7);
  const g = el("svg:g", { class: "candles" });
  for (const b of bars) {
    const cx = x(b.t) + slot / 2;
    const dir = b.c >= b.o ? "up" : "down";
    const cg = el("svg:g", { class: "candle " + dir + (b.done ? "" : " partial"), "data-t": new Date(b.t).toISOString() });
    cg.append(el("svg:line", { x1: cx, x2: cx, y1: y(b.h), y2: y(b.l) }));
    const top = y(Math.max(b.o, b.c)), bottom = y(Math.min(b.o, b.c));
    cg.append(el("svg:rect", { x: cx - bw / 2, y: top, width: bw, height: Math.max(1, bottom - top) }));
    cg.append(el("svg:title", {}, `${new Date(b.t).toISOString().slice(0, 16)}Z  O ${fmtPrice(b.o)}  H ${fmtPrice(b.h)}  ` +
                                  `L ${fmtPrice(b.l)}  C ${fmtPrice(b.c)}  vol ${b.v}  ${b.n} trades` +
                                  (b.done ? "" : "  (not covered to its end yet)")));
    g.append(cg);
    const vh = (b.v / vmax) * volH;
    g.append(el("svg:rect", { class: "vol", x: cx - bw / 2, y: volTop + volH - vh, width: bw, height: Math.max(0.5, vh) }));
  }
  svg.append(g);
  const last = bars[bars.length - 1];
  svg.append(el("svg:line", { class: "last", x1: padL, x2: W - padR, y1: y(last.c), y2: y(last.c) }));
  svg.append(el("svg:text", { class: "last-label", x: W - padR + 6, y: y(last.c) + 4 }, fmtPrice(last.c)));
  info.textContent = `${doc.exchange} ${doc.product_id} · ${doc.interval} · ${bars.length} candles · last trade ${fmtTime(doc.last_trade)}`;
}

// ------------------------------------------------------------------ polling

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  const doc = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
  if (!r.ok) throw new Error(url.split("?")[0] + ": " + (doc.error || r.status));
  return doc;
}

let timer = null, inflight = null;

async function refresh() {
  clearTimeout(timer);
  const run = (async () => {
    try {
      const [stats, coverage] = await Promise.all([getJSON("api/stats"), getJSON("api/coverage")]);
      state.stats = stats;
      renderTotals(stats);
      renderMarkets(stats);
      renderTable(stats, coverage);
      if (state.market) {
        const [ex, product] = state.market.split("/");
        const q = new URLSearchParams({ exchange: ex, product, interval: state.interval });
        renderChart(await getJSON("api/candles?" + q));
      } else {
        renderChart({ candles: [] });
      }
      $("error").hidden = true;
      $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + "Z · every " + REFRESH_MS / 1000 + " s";
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    } catch (e) {
      $("error").textContent = String(e.message || e) + " (retrying)";
      $("error").hidden = false;
    }
  })();
  inflight = run;
  await run;
  if (inflight === run) timer = setTimeout(refresh, REFRESH_MS);
}

function selectMarket(key) {
  state.market = key;
  $("market").value = key;
  for (const tr of $("products").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.exchange + "/" + tr.dataset.product === key);
  refresh();
}

function selectInterval(iv) {
  state.interval = iv;
  for (const b of document.querySelectorAll("#intervals button")) b.classList.toggle("active", b.dataset.interval === iv);
}

$("market").addEventListener("change", (e) => selectMarket(e.target.value));
for (const b of document.querySelectorAll("#intervals button")) {
  b.addEventListener("click", () => { selectInterval(b.dataset.interval); refresh(); });
}
selectInterval(state.interval);
refresh();
