// kinko wallet: balances with their value in a reference currency, deposit addresses with a QR
// code, deposits, the withdrawal address book (waiting period as a countdown), withdrawals with a
// second-factor step-up bound to the exact withdrawal, and their history.
"use strict";
(() => {
  const { $, api, num, rows, button, date } = kinko;
  const { t } = kinkoI18n;
  const D = kinkoDec;
  const REFERENCE = "USD";
  const CANCELLABLE = ["requested", "waiting", "review", "approved"];
  let assets = [];
  let addresses = [];
  let prices = new Map(); // asset -> last price in REFERENCE
  let limits = new Map(); // asset -> what is left of the withdrawal limits (GET /withdrawal-limits)

  const assetOf = (code) => assets.find((a) => a.code === code);

  async function loadPrices() {
    const r = await api("GET", "/markets", undefined, { open: true });
    if (!r.ok) return;
    await Promise.all(r.data.filter((m) => m.quote === REFERENCE).map(async (m) => {
      const x = await api("GET", `/markets/${m.symbol}/ticker`, undefined, { open: true });
      if (x.ok && x.data.last) prices.set(m.base, x.data.last);
    }));
  }

  function valueOf(code, total) {
    if (code === REFERENCE) return total;
    const p = prices.get(code);
    if (!p) return null;
    return D.mulDiv(total, p, "1", 2);
  }

  async function loadBalances() {
    const r = await api("GET", "/balances");
    if (!r.ok) return kinko.fail(r);
    $("value-head").textContent = t("Value ({ref})", { ref: REFERENCE });
    rows($("balances"), r.data, (b) => {
      const v = valueOf(b.asset, b.total);
      return [b.asset, num(D.trim(b.available)), num(D.trim(b.hold)), v === null ? "–" : num(D.floorTo(v, "0.01"), 2)];
    });
    for (const tr of $("balances").children) tr.dataset.asset = tr.firstChild.textContent;
    $("value-note").textContent = t("Values use each market's last price against {ref}.", { ref: REFERENCE });
  }

  async function loadDeposits() {
    const r = await api("GET", "/deposits");
    if (!r.ok) return;
    rows($("deposits"), r.data, (d) => [d.asset, num(D.trim(d.amount)), t("status." + d.status, null, d.status), date(d.seen_at), d.txid.slice(0, 16) + "…"]);
  }

  async function showDepositAddress(e) {
    e.preventDefault();
    const asset = $("deposit-asset").value;
    let r = await api("GET", `/deposit-addresses?asset=${asset}`);
    let a = r.ok && r.data.length ? r.data[r.data.length - 1] : null;
    if (!a) {
      r = await api("POST", "/deposit-addresses", { asset });
      if (!r.ok) return kinko.fail(r);
      a = r.data;
    }
    $("deposit-address").textContent = a.address;
    $("deposit-qr").src = "/qr.svg?d=" + encodeURIComponent(a.address);
    $("deposit-qr").alt = t("QR code of the deposit address {address}", { address: a.address });
    const conf = assetOf(asset) && assetOf(asset).deposit_confirmations;
    $("deposit-confirmations").textContent = conf === 1
      ? t("Credited after 1 confirmation.")
      : conf
        ? t("Credited after {n} confirmations.", { n: conf })
        : t("Credited once the chain confirms it.");
    $("deposit-shown").hidden = false;
  }

  // --- address book ----------------------------------------------------------------------

  function countdown(usableAt) {
    const ms = new Date(usableAt).getTime() - Date.now();
    if (ms <= 0) return t("usable now");
    const s = Math.ceil(ms / 1000);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const hms = (h ? h + ":" : "") + String(m).padStart(h ? 2 : 1, "0") + ":" + String(sec).padStart(2, "0");
    return t("usable in {time}", { time: hms });
  }
  function renderAddresses() {
    const ul = $("address-book");
    ul.replaceChildren();
    for (const a of addresses) {
      const li = document.createElement("li");
      li.dataset.id = a.id;
      const text = document.createElement("span");
      text.textContent = `${a.asset} ${a.label ? a.label + " " : ""}${a.address} — `;
      const cd = document.createElement("span");
      cd.className = "countdown";
      cd.dataset.usableAt = a.usable_at;
      cd.textContent = countdown(a.usable_at);
      li.append(text, cd, " ", button(t("Remove"), () => removeAddress(a.id), t("Remove address {label}", { label: a.label || a.address })));
      ul.append(li);
    }
    const sel = $("withdraw-address");
    const keep = sel.value;
    sel.replaceChildren();
    for (const a of addresses) {
      const o = document.createElement("option");
      o.value = a.id;
      o.textContent = `${a.asset} — ${a.label || a.address}`;
      sel.append(o);
    }
    if (keep) sel.value = keep;
    withdrawFacts();
  }
  async function loadAddresses() {
    const r = await api("GET", "/withdrawal-addresses");
    if (r.ok) { addresses = r.data; renderAddresses(); }
  }
  async function removeAddress(id) {
    const r = await api("DELETE", `/withdrawal-addresses/${id}`);
    if (!r.ok) return kinko.fail(r);
    loadAddresses();
  }
  async function addAddress(e) {
    e.preventDefault();
    const body = { asset: $("addr-asset").value, address: $("addr-address").value.trim(), label: $("addr-label").value.trim() };
    const r = await kinko.withStepUp(t("add a withdrawal address"), "POST", "/withdrawal-addresses", body);
    if (!r.ok) return kinko.fail(r);
    $("addr-address").value = "";
    $("addr-label").value = "";
    kinko.say(t("Address added; usable from {time}.", { time: date(r.data.usable_at) }));
    loadAddresses();
  }

  // --- withdrawals -----------------------------------------------------------------------

  function withdrawFacts() {
    const a = addresses.find((x) => x.id === $("withdraw-address").value);
    if (!a) { $("withdraw-facts").textContent = t("Add an address first."); return; }
    const asset = assetOf(a.asset);
    const parts = [t("Fee: {fee} {asset}.", { fee: asset ? num(D.trim(asset.withdrawal_fee)) : "–", asset: a.asset })];
    if (asset && asset.totp_budget) parts.push(t("Approved with an authenticator app alone: at most {budget} {asset} a day; a passkey lifts it.", { budget: num(D.trim(asset.totp_budget)), asset: a.asset }));
    const amount = $("withdraw-amount").value.trim();
    if (asset && /^[0-9]+(\.[0-9]+)?$/.test(amount)) {
      try { parts.push(t("You receive {net} {asset}.", { net: num(D.sub(amount, asset.withdrawal_fee)), asset: a.asset })); } catch (_) { /* no estimate */ }
    }
    const l = limits.get(a.asset);
    if (l) {
      parts.push(t("Limit left: {day} {asset} in 24 h (of {day_max}), {month} {asset} in 30 days (of {month_max}).", {
        day: num(D.trim(l.day_left)), day_max: num(D.trim(l.day_max)),
        month: num(D.trim(l.month_left)), month_max: num(D.trim(l.month_max)), asset: a.asset,
      }));
    }
    parts.push(countdown(a.usable_at));
    $("withdraw-facts").textContent = parts.join(" ");
  }
  async function loadLimits() {
    const r = await api("GET", "/withdrawal-limits");
    if (!r.ok) return;
    limits = new Map(r.data.map((l) => [l.asset, l]));
    withdrawFacts();
  }
  async function withdraw(e) {
    e.preventDefault();
    $("withdraw-error").textContent = "";
    const a = addresses.find((x) => x.id === $("withdraw-address").value);
    const amount = $("withdraw-amount").value.trim();
    if (!a) { $("withdraw-error").textContent = t("Add an address first."); return; }
    const asset = assetOf(a.asset);
    try { D.toUnits(amount, asset ? asset.decimals : 8); } catch (_) {
      $("withdraw-error").textContent = t("{what} must be a decimal number like 1.25.", { what: t("Amount") });
      return;
    }
    // The client id makes a repeat (after a step-up, a lost session) the same withdrawal.
    const body = { address_id: a.id, amount, client_id: crypto.randomUUID() };
    const what = t("withdraw {amount} {asset} to {address}", { amount, asset: a.asset, address: a.label || a.address });
    const r = await kinko.withStepUp(what, "POST", "/withdrawals", body);
    if (!r.ok) { $("withdraw-error").textContent = kinko.refusal(r); return; }
    $("withdraw-amount").value = "";
    loadLimits();
    kinko.say(t("Withdrawal requested: {status}.", { status: t("status." + r.data.status, null, r.data.status) }));
    loadWithdrawals();
    loadBalances();
  }
  async function loadWithdrawals() {
    const r = await api("GET", "/withdrawals");
    if (!r.ok) return;
    rows($("withdrawals"), r.data, (w) => {
      let status = t("status." + w.status, null, w.status);
      if (w.reason) status += ` (${w.reason})`;
      if (w.waiting_reason) status += ` — ${w.waiting_reason}`;
      const cancel = CANCELLABLE.includes(w.status)
        ? button(t("Cancel"), async () => {
          const x = await api("DELETE", `/withdrawals/${w.id}`);
          if (!x.ok) return kinko.fail(x);
          loadWithdrawals(); loadBalances();
        }, t("Cancel withdrawal {id}", { id: w.id }))
        : "";
      return [w.asset, num(D.trim(w.amount)), num(D.trim(w.fee)), w.address, status, date(w.requested_at), cancel];
    });
    [...$("withdrawals").children].forEach((tr, i) => { tr.dataset.status = r.data[i].status; tr.dataset.id = r.data[i].id; });
  }

  let ws = null;
  function live() {
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/ws");
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: kinko.token() }));
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "authenticated") {
        ws.send(JSON.stringify({ type: "subscribe", channels: ["balances", "withdrawals"] }));
        // What changed while the stream was down.
        loadBalances(); loadDeposits(); loadWithdrawals();
      }
      else if (m.type === "balance") { loadBalances(); loadDeposits(); }
      else if (m.type === "withdrawal") { loadWithdrawals(); loadLimits(); }
    };
    ws.onclose = () => { if (kinko.signedIn()) setTimeout(live, 1000); };
  }

  (async () => {
    kinko.start();
    const r = await api("GET", "/assets", undefined, { open: true });
    if (r.ok) assets = r.data;
    for (const a of assets) {
      for (const id of ["deposit-asset", "addr-asset"]) {
        if (id === "deposit-asset" && !a.deposits_enabled) continue;
        const o = document.createElement("option");
        o.value = a.code; o.textContent = a.code;
        $(id).append(o);
      }
    }
    $("deposit-form").onsubmit = showDepositAddress;
    $("addr-form").onsubmit = addAddress;
    $("withdraw-form").onsubmit = withdraw;
    $("withdraw-address").onchange = withdrawFacts;
    $("withdraw-amount").oninput = withdrawFacts;
    if (!kinko.signedIn()) await kinko.signIn(false);
    const me = await api("GET", "/me");
    if (me.ok && me.data.anti_phishing_code) {
      $("ap-code-shown").textContent = me.data.anti_phishing_code;
      $("ap-banner").hidden = false;
    }
    await loadPrices();
    await Promise.all([loadBalances(), loadDeposits(), loadAddresses(), loadWithdrawals(), loadLimits()]);
    setInterval(() => {
      for (const c of document.querySelectorAll(".countdown")) c.textContent = countdown(c.dataset.usableAt);
      if (addresses.length) withdrawFacts();
    }, 1000);
    // The balances and withdrawals stream; deposits are looked at again every few seconds too.
    setInterval(() => { if (kinko.signedIn() && !document.getElementById("signin-dialog").open) loadDeposits(); }, 5000);
    live();
    // A new session (after one was lost): the stream authenticates again with it.
    kinko.onSession(() => ws && ws.close());
    document.body.dataset.ready = "1";
  })();
})();
