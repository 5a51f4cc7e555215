// kinko trading screen: the live order book (WebSocket level2, grouped to a multiple of the tick,
// with the spread), live trades, candles, order entry for every order type, and the customer's
// open orders, order history and fills. Prices and sizes are decimal strings checked against
// the market's tick and lot with kinkoDec; nothing is floating point but the chart's pixels.
"use strict";
(() => {
  const { $, api, num, pct, rows, button, date, time } = kinko;
  const { t } = kinkoI18n;
  const D = kinkoDec;
  const GRANULARITIES = [[60, "1m"], [300, "5m"], [900, "15m"], [3600, "1h"], [21600, "6h"], [86400, "1d"]];
  const BOOK_ROWS = 12;
  // A price at the market's tick, a size at its lot (the API writes the assets' full places).
  const P = (s) => (s === null || s === undefined ? "–" : num(D.floorTo(s, market.tick_size)));
  const S = (s) => (s === null || s === undefined ? "–" : num(D.floorTo(s, market.lot_size)));

  const symbol = decodeURIComponent(location.pathname.split("/")[2] || "BTC-USD").toUpperCase();
  let market = null; // MarketOut
  let ticker = null;
  let granularity = 60;
  const book = { bids: new Map(), asks: new Map(), sequence: null };
  let trades = [];
  let ws = null;

  // --- book ------------------------------------------------------------------------------

  function applyLevels(side, levels) {
    for (const [price, size, orders] of levels) {
      if (D.cmp(size, "0") === 0) side.delete(price);
      else side.set(price, [size, orders]);
    }
  }
  // Levels grouped to `step` (bids down, asks up), best first: [[price, size, orders]].
  function grouped(side, isBid, step) {
    const d = Math.max(D.places(step), D.places(market.tick_size));
    const st = D.toUnits(step, d);
    const sizeD = D.places(market.lot_size);
    const out = new Map();
    for (const [price, [size, orders]] of side) {
      const u = D.toUnits(price, d);
      let g = (u / st) * st;
      if (!isBid && g < u) g += st;
      const prev = out.get(g) || [0n, 0];
      out.set(g, [prev[0] + D.toUnits(size, sizeD), prev[1] + Number(orders)]);
    }
    const keys = [...out.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (isBid) keys.reverse();
    return keys.map((k) => [D.fromUnits(k, d, D.places(D.trim(step))), D.fromUnits(out.get(k)[0], sizeD), out.get(k)[1]]);
  }
  function renderBook() {
    const step = $("book-step").value || market.tick_size;
    const pp = D.places(D.trim(step));
    const sp = D.places(D.trim(market.lot_size));
    const bids = grouped(book.bids, true, step).slice(0, BOOK_ROWS);
    const asks = grouped(book.asks, false, step).slice(0, BOOK_ROWS);
    const fill = (tbody, list) => {
      tbody.replaceChildren();
      for (const [p, s, o] of list) {
        const tr = document.createElement("tr");
        tr.dataset.price = p;
        tr.dataset.size = s;
        for (const [v, cls] of [[num(p, pp), "num price"], [num(s, sp), "num"], [String(o), "num"]]) {
          const td = document.createElement("td");
          td.className = cls;
          td.textContent = v;
          tr.append(td);
        }
        tbody.append(tr);
      }
    };
    fill($("asks"), asks.slice().reverse());
    fill($("bids"), bids);
    const bestBid = bids[0] && grouped(book.bids, true, market.tick_size)[0][0];
    const bestAsk = asks[0] && grouped(book.asks, false, market.tick_size)[0][0];
    if (bestBid && bestAsk) {
      const spread = D.sub(bestAsk, bestBid);
      const bps = D.changeBps(bestBid, bestAsk);
      $("spread").textContent = `${t("Spread")} ${P(spread)} (${pct(bps)})`;
    } else {
      $("spread").textContent = t("Spread") + " –";
    }
  }

  // --- trades, ticker, candles -------------------------------------------------------------

  function renderTrades() {
    rows($("trades"), trades.slice(0, 30), (x) => {
      const p = document.createElement("span");
      p.textContent = P(x.price);
      p.className = x.side === "buy" ? "up" : "down";
      return [p, S(x.size), time(x.time)];
    });
  }
  function renderTicker() {
    const dl = $("ticker");
    dl.replaceChildren();
    const bps = ticker ? D.changeBps(ticker.open_24h, ticker.last) : null;
    const facts = [
      ["Last price", ticker && P(ticker.last)],
      ["24 h change", pct(bps, true)],
      ["24 h high", ticker && P(ticker.high_24h)],
      ["24 h low", ticker && P(ticker.low_24h)],
      ["24 h volume", ticker && `${S(ticker.volume_24h)} ${market.base}`],
    ];
    for (const [k, v] of facts) {
      const dt = document.createElement("dt");
      dt.textContent = t(k);
      const dd = document.createElement("dd");
      dd.textContent = v || "–";
      dl.append(dt, dd);
    }
    preview();
  }

  let candleTimer = null;
  async function loadCandles() {
    const r = await api("GET", `/markets/${symbol}/candles?granularity=${granularity}&limit=120`, undefined, { open: true });
    if (r.ok) drawCandles(r.data);
  }
  function soonCandles() {
    if (candleTimer) return;
    candleTimer = setTimeout(() => { candleTimer = null; loadCandles(); }, 1000);
  }
  // Drawn on the canvas; the numbers become pixels here only.
  function drawCandles(list) {
    const c = $("candles");
    const w = c.clientWidth || c.width;
    c.width = w;
    const h = c.height;
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.body);
    g.fillStyle = css.getPropertyValue("--muted") || "#555";
    g.font = "12px system-ui, sans-serif";
    if (!list.length) {
      g.fillText(t("No trades in this interval yet."), 10, 20);
      return;
    }
    const px = (s) => Number(s);
    let lo = Infinity, hi = -Infinity;
    for (const k of list) { lo = Math.min(lo, px(k.low)); hi = Math.max(hi, px(k.high)); }
    if (hi === lo) { hi += 1; lo -= 1; }
    const pad = 40;
    const y = (v) => 10 + (h - 30) * (1 - (px(v) - lo) / (hi - lo));
    const n = Math.max(list.length, 30);
    const cw = (w - pad) / n;
    // The newest candle at the right edge.
    list.forEach((k, i) => {
      const x = (n - list.length + i) * cw + cw / 2;
      const up = D.cmp(k.close, k.open) >= 0;
      g.strokeStyle = g.fillStyle = up ? "#0a7d32" : "#b3261e";
      g.beginPath(); g.moveTo(x, y(k.high)); g.lineTo(x, y(k.low)); g.stroke();
      const top = Math.min(y(k.open), y(k.close));
      g.fillRect(x - Math.max(cw * 0.35, 1), top, Math.max(cw * 0.7, 2), Math.max(Math.abs(y(k.open) - y(k.close)), 1));
    });
    g.fillStyle = "#333";
    g.textAlign = "right";
    g.fillText(P(list.reduce((a, k) => (D.cmp(k.high, a) > 0 ? k.high : a), list[0].high)), w - 2, 14);
    g.fillText(P(list.reduce((a, k) => (D.cmp(k.low, a) < 0 ? k.low : a), list[0].low)), w - 2, h - 20);
    c.dataset.candles = String(list.length);
  }

  // --- the WebSocket -------------------------------------------------------------------------

  function live() {
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/ws");
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "subscribe", channels: ["level2", "trades", "ticker", "candles"], markets: [symbol] }));
      if (kinko.signedIn()) ws.send(JSON.stringify({ type: "auth", token: kinko.token() }));
    };
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      switch (m.type) {
        case "authenticated":
          ws.send(JSON.stringify({ type: "subscribe", channels: ["orders", "fills"] }));
          break;
        case "level2_snapshot":
          book.bids.clear(); book.asks.clear();
          applyLevels(book.bids, m.bids); applyLevels(book.asks, m.asks);
          book.sequence = m.sequence;
          renderBook();
          break;
        case "level2_update":
          if (book.sequence === null || m.sequence !== book.sequence + 1) {
            book.sequence = null;
            ws.send(JSON.stringify({ type: "subscribe", channels: ["level2"], markets: [symbol] }));
            break;
          }
          book.sequence = m.sequence;
          for (const [side, price, size, orders] of m.changes) applyLevels(side === "buy" ? book.bids : book.asks, [[price, size, orders]]);
          renderBook();
          break;
        case "trade":
          trades.unshift({ price: m.price, size: m.size, side: m.side, time: m.time });
          trades = trades.slice(0, 100);
          renderTrades();
          soonCandles();
          break;
        case "ticker":
          ticker = m;
          renderTicker();
          break;
        case "order":
        case "fill":
          soonMine();
          break;
      }
    };
    ws.onclose = () => setTimeout(live, 1000);
  }

  // --- order entry -------------------------------------------------------------------------

  function form() {
    const type = $("order-type").value;
    const by = $("by-funds").checked ? "funds" : "size";
    return {
      side: $("side-sell").checked ? "sell" : "buy",
      type, by,
      limit: type === "limit" || type === "stop_limit",
      stop: type === "stop_limit" || type === "stop_market",
      tif: $("tif").value,
    };
  }
  function layout() {
    const f = form();
    $("price-label").hidden = !f.limit;
    $("tif-label").hidden = !f.limit;
    $("cancel-after-label").hidden = !(f.limit && f.tif === "gtt");
    $("stop-label").hidden = !f.stop;
    $("by-label").hidden = f.limit;
    $("size-label").hidden = !f.limit && f.by === "funds";
    $("funds-label").hidden = f.limit || f.by !== "funds";
    preview();
  }
  // Checks a decimal field against a step; returns the error text or "".
  function stepError(id, what, step) {
    const v = $(id).value.trim();
    if (!v) return t("{what} is required.", { what: t(what) });
    if (!/^[0-9]+(\.[0-9]+)?$/.test(v)) return t("{what} must be a decimal number like 1.25.", { what: t(what) });
    if (step && !D.isMultiple(v, step)) return t("{what} must be a multiple of {step}.", { what: t(what), step: D.trim(step) });
    return "";
  }
  function validate() {
    const f = form();
    const errs = [];
    if (f.limit) errs.push(stepError("price", "Price", market.tick_size));
    if (f.stop) errs.push(stepError("stop-price", "Stop price", market.tick_size));
    if (f.limit || f.by === "size") {
      const e = stepError("size", "Size", market.lot_size);
      errs.push(e);
      if (!e && D.cmp($("size").value.trim(), market.min_size) < 0) errs.push(t("Size must be at least {min}.", { min: D.trim(market.min_size) }));
    } else {
      errs.push(stepError("funds", "Funds", null));
    }
    return errs.filter(Boolean);
  }
  // The fee and the price band, before submitting.
  function preview() {
    if (!market) return;
    const f = form();
    const parts = [];
    const fee = (bps) => pct(bps);
    parts.push(t("Fee: maker {maker}, taker {taker}.", { maker: fee(market.maker_fee_bps), taker: fee(market.taker_fee_bps) }));
    const ref = ticker && ticker.last;
    if (ref) {
      const qd = D.places(market.tick_size);
      const lo = D.mulDiv(ref, String(10000 - market.band_bps), "10000", qd);
      const hi = D.mulDiv(ref, String(10000 + market.band_bps), "10000", qd);
      parts.push(t("Price band: orders that trade on arrival must be within {lo} – {hi} {quote}.", { lo: P(lo), hi: P(hi), quote: market.quote }));
    }
    try {
      const price = f.limit ? $("price").value.trim() : ref;
      const size = $("size").value.trim();
      if (price && size && (f.limit || f.by === "size")) {
        const value = D.mul(price, size);
        const qd = Math.max(D.places(D.trim(market.tick_size)), 2);
        parts.push(t("Value about {value} {quote}; fee at most {fee} {quote}.", {
          value: num(D.floorTo(value, "0." + "0".repeat(qd - 1) + "1")), fee: num(D.bpsOf(value, market.taker_fee_bps, qd)), quote: market.quote,
        }));
      } else if (!f.limit && f.by === "funds" && $("funds").value.trim()) {
        const funds = $("funds").value.trim();
        const qd = Math.max(D.places(D.trim(market.tick_size)), 2);
        parts.push(t("Fee at most {fee} {quote}, included in the funds.", { fee: num(D.bpsOf(funds, market.taker_fee_bps, qd)), quote: market.quote }));
      }
    } catch (_) { /* incomplete numbers: no estimate */ }
    $("order-preview").textContent = parts.join(" ");
  }
  function body() {
    const f = form();
    const b = { market: symbol, side: f.side, type: f.limit ? "limit" : "market" };
    if (f.limit) {
      b.price = $("price").value.trim();
      b.size = $("size").value.trim();
      b.time_in_force = f.tif;
      if (f.tif === "gtt") b.cancel_after = $("cancel-after").value;
    } else if (f.by === "funds") {
      b.funds = $("funds").value.trim();
    } else {
      b.size = $("size").value.trim();
    }
    if (f.stop) b.stop_price = $("stop-price").value.trim();
    b.client_order_id = crypto.randomUUID();
    return b;
  }
  async function submit(e) {
    e.preventDefault();
    $("order-error").textContent = "";
    const errs = validate();
    if (errs.length) { $("order-error").textContent = errs.join(" "); return; }
    const r = await api("POST", "/orders", body());
    if (!r.ok) { $("order-error").textContent = kinko.refusal(r); return; }
    const o = r.data;
    const filled = o.status === "filled" || !o.price;
    kinko.say(t("Order {status}: {side} {size} {base}.", { status: t("status." + o.status, null, o.status), side: t(o.side), size: S(filled ? o.filled_size : o.size), base: market.base }));
    loadMine();
  }

  // --- the customer's orders and fills -------------------------------------------------------

  let mineTimer = null;
  function soonMine() {
    if (mineTimer) return;
    mineTimer = setTimeout(() => { mineTimer = null; loadMine(); }, 300);
  }
  function typeText(o) {
    const parts = [t(o.order_type)];
    if (o.time_in_force) parts.push(t("tif." + o.time_in_force, null, o.time_in_force));
    if (o.stop_price) parts.push(t("stop") + " " + o.stop_price);
    return parts.join(" · ");
  }
  async function loadMine() {
    if (!kinko.signedIn()) return;
    const [open, done, fills] = await Promise.all([
      api("GET", `/orders?market=${symbol}&status=open`),
      api("GET", `/orders?market=${symbol}&status=done&limit=50`),
      api("GET", `/fills?market=${symbol}&limit=50`),
    ]);
    if (open.ok) rows($("open-orders"), open.data, (o) => [t(o.side), typeText(o), P(o.price), S(o.size), S(o.filled_size),
      t("status." + o.status, null, o.status),
      button(t("Cancel"), () => cancel(o.id), t("Cancel order {id}", { id: o.id }))]);
    if (done.ok) rows($("order-history"), done.data, (o) => [t(o.side), typeText(o), P(o.price || o.average_price), o.funds && !o.price ? `${num(D.trim(o.funds))} ${market.quote}` : S(o.size),
      S(o.filled_size), t("status." + o.status, null, o.status) + (o.cancel_reason ? ` (${t("reason." + o.cancel_reason, null, o.cancel_reason)})` : ""), date(o.updated_at)]);
    if (fills.ok) rows($("fills"), fills.data, (x) => [t(x.side), P(x.price), S(x.size), `${num(D.trim(x.fee))} ${market.quote}`, t(x.liquidity), date(x.time)]);
  }
  async function cancel(id) {
    const r = await api("DELETE", `/orders/${id}`);
    if (!r.ok) return kinko.fail(r);
    kinko.say(t("Order cancelled."));
    loadMine();
  }

  // --- start ---------------------------------------------------------------------------------

  (async () => {
    kinko.start();
    const r = await api("GET", "/markets", undefined, { open: true });
    if (!r.ok) return kinko.fail(r);
    market = r.data.find((m) => m.symbol === symbol);
    if (!market) { kinko.say(t("No such market: {m}", { m: symbol }), true); return; }
    document.title = `kinko — ${market.base}/${market.quote}`;
    $("market-title").textContent = `${market.base}/${market.quote}`;
    const sel = $("market-select");
    for (const m of r.data) {
      const o = document.createElement("option");
      o.value = m.symbol; o.textContent = `${m.base}/${m.quote}`; o.selected = m.symbol === symbol;
      sel.append(o);
    }
    sel.onchange = () => { location.href = "/trade/" + sel.value; };
    for (const mult of ["1", "10", "100", "1000"]) {
      const o = document.createElement("option");
      o.value = D.trim(D.mul(market.tick_size, mult));
      o.textContent = o.value;
      $("book-step").append(o);
    }
    $("book-step").onchange = renderBook;
    for (const [g, label] of GRANULARITIES) {
      const b = button(label, () => {
        granularity = g;
        for (const x of $("intervals").children) x.setAttribute("aria-pressed", String(x === b));
        loadCandles();
      });
      b.setAttribute("aria-pressed", String(g === granularity));
      b.dataset.granularity = String(g);
      $("intervals").append(b);
    }
    for (const id of ["order-type", "tif", "side-buy", "side-sell", "by-size", "by-funds"]) $(id).onchange = layout;
    for (const id of ["price", "size", "funds", "stop-price"]) $(id).oninput = preview;
    $("order-form").onsubmit = submit;
    $("cancel-all").onclick = async () => {
      const x = await api("DELETE", `/orders?market=${symbol}`);
      if (!x.ok) return kinko.fail(x);
      kinko.say(t("Cancelled {n} orders.", { n: x.data.cancelled.length }));
      loadMine();
    };
    const tk = await api("GET", `/markets/${symbol}/ticker`, undefined, { open: true });
    if (tk.ok) ticker = tk.data;
    const tr = await api("GET", `/markets/${symbol}/trades?limit=30`, undefined, { open: true });
    if (tr.ok) trades = tr.data;
    renderTicker();
    renderTrades();
    layout();
    await loadCandles();
    live();
    kinko.onSession(() => { ws && ws.close(); loadMine(); });
    await loadMine();
    document.body.dataset.ready = "1";
  })();
})();
