// kinko markets list: every market with its 24 h ticker (GET /markets, /markets/{m}/ticker),
// refreshed by the WebSocket's ticker channel.
"use strict";
(() => {
  const { $, api, num } = kinko;
  const { t } = kinkoI18n;
  const tickers = new Map();
  let markets = [];

  function change(tk) {
    const bps = tk ? kinkoDec.changeBps(tk.open_24h, tk.last) : null;
    if (bps === null) return { text: "–", cls: "" };
    return { text: kinko.pct(bps, true), cls: bps > 0 ? "up" : bps < 0 ? "down" : "" };
  }

  function render() {
    const body = $("markets");
    body.replaceChildren();
    for (const m of markets) {
      const tk = tickers.get(m.symbol);
      const tr = document.createElement("tr");
      tr.dataset.market = m.symbol;
      const link = document.createElement("a");
      link.href = "/trade/" + m.symbol;
      link.textContent = `${m.base}/${m.quote}`;
      const c = change(tk);
      const P = (x) => (x ? num(kinkoDec.floorTo(x, m.tick_size)) : "–");
      const cells = [link, P(tk && tk.last), c.text, P(tk && tk.high_24h),
        P(tk && tk.low_24h), tk ? `${num(kinkoDec.floorTo(tk.volume_24h, m.lot_size))} ${m.base}` : "–", t("state." + m.state, null, m.state)];
      cells.forEach((x, i) => {
        const td = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) td.scope = "row";
        if (i > 0 && i < 6) td.className = "num";
        if (i === 2) td.className += " " + c.cls;
        if (x instanceof Node) td.append(x); else td.textContent = x;
        tr.append(td);
      });
      body.append(tr);
    }
  }

  function live() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/ws");
    ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", channels: ["ticker"], markets: markets.map((m) => m.symbol) }));
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "ticker") { tickers.set(m.market, m); render(); }
    };
    ws.onclose = () => setTimeout(live, 3000);
  }

  (async () => {
    kinko.start();
    const r = await api("GET", "/markets", undefined, { open: true });
    if (!r.ok) return kinko.fail(r);
    markets = r.data;
    await Promise.all(markets.map(async (m) => {
      const x = await api("GET", `/markets/${m.symbol}/ticker`, undefined, { open: true });
      if (x.ok) tickers.set(m.symbol, x.data);
    }));
    render();
    document.body.dataset.ready = "1";
    live();
  })();
})();
