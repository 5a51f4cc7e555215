// kinko operators' console: sign-in with a second factor, then the alerts (open incidents, what
// is halted), the review queue, halting and proposing to resume withdrawals, two-person
// proposals and incidents, and the signer ceremony (a passkey assertion over a challenge the
// signer's operator printed). Every action carries the admin's passkey assertion, bound to it by
// the server's STEP_UP_REQUIRED challenge (which offers admins the passkey only), asked for by
// the dialog of stepup.js (shared with the account page). An admin without a passkey is told
// to add one on the account page.
// Three views: the overview above, customer lookup (status, balances, second factors, recent
// logins, withdrawals, addresses; freeze, and the two-person unfreeze) and the platform page
// (liabilities against custody per asset, withdrawals by state, the engine's sequence and
// queue). Every string shown is from console.i18n.js (English and Japanese), numbers and dates
// formatted per locale.
// Talks only to kinko's own /api/v1. Text from the server is only ever set with textContent.
"use strict";

const { t } = kinkoI18n;

/// How often the alerts and lists refresh while signed in, and the longest wait after failures.
const POLL_MS = 3000;
const POLL_BACKOFF_MAX_MS = 30000;
/// The session token's key in sessionStorage: the console's own, not the account page's.
const TOKEN_KEY = "kinko.console.token";

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
function setToken(t) {
  token = t;
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/// The signed-in admin (`/me`), the second factor a password sign-in still needs, and the asset
/// codes by asset id (from the public status, in id order).
let me = null;
let pendingSecond = null;
let assetCodes = [];
/// Bumped at every sign-in and sign-out: answers that arrive for an older one are dropped, so a
/// refresh in flight cannot put one admin's data back on the page after sign-out.
let epoch = 0;

function say(text, error, code) {
  const n = $("notice");
  n.textContent = text || "";
  n.className = error ? "error" : "";
  n.dataset.code = code || "";
}

function fail(r) {
  const d = r.data || {};
  say((d.code || "ERROR") + ": " + (d.message || t("msg.request_failed")), true, d.code);
}

async function api(method, path, body) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch("/api/v1" + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    return { status: 0, ok: false, data: { code: "NETWORK", message: String(e) } };
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { code: "BAD_RESPONSE", message: text }; }
  return { status: r.status, ok: r.ok, data };
}

function show(...ids) {
  for (const s of ["signin", "second", "console"]) $(s).hidden = !ids.includes(s);
  $("nav").hidden = !ids.includes("console");
}

// The step-up dialog and the WebAuthn helpers: stepup.js, shared with the account page.
const { passkeyAnswer } = kinkoStepUp;
// Sends an admin action; on STEP_UP_REQUIRED asks for the second factor and sends it again.
function withStepUp(what, method, path, body) {
  return kinkoStepUp.withStepUp(api, what, method, path, body);
}

// Asks for a line of text (a reason, a resolution); null when cancelled.
function askText(title, label) {
  const d = $("ask");
  $("ask-title").textContent = title;
  $("ask-label").textContent = label;
  $("ask-text").value = "";
  return new Promise((resolve) => {
    d.onclose = () => {
      const text = $("ask-text").value.trim();
      $("ask-text").value = "";
      resolve(d.returnValue === "ok" && text ? text : null);
    };
    d.returnValue = "";
    d.showModal();
    $("ask-text").focus();
  });
}

// ---- rendering (textContent only) ----

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("data-")) e.dataset[k.slice(5).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = v;
    else e.setAttribute(k, v);
  }
  return e;
}

function cell(field, text) {
  return el("td", text, { "data-field": field });
}

function button(label, act, id, aria, onclick) {
  const b = el("button", label, { type: "button", "data-act": act, "data-id": id, "aria-label": aria });
  b.onclick = onclick;
  return b;
}

function assetName(a) {
  if (a === null || a === undefined) return t("asset.every");
  if (typeof a === "number") return assetCodes[a] || "#" + a;
  return String(a);
}

function setAssetOptions(select, codes) {
  const keep = select.value;
  const have = [...select.options].map((o) => o.value).slice(1);
  if (have.join(",") === codes.join(",") && select.options[0].textContent === t("asset.every")) return;
  select.replaceChildren(el("option", t("asset.every"), { value: "" }));
  for (const c of codes) select.append(el("option", c, { value: c }));
  select.value = codes.includes(keep) ? keep : "";
}

function renderStatus(s) {
  assetCodes = s.assets.map((a) => a.asset);
  $("global-halt").hidden = !s.withdrawals_halted;
  const ul = $("asset-status");
  ul.replaceChildren();
  for (const a of s.assets) {
    const state = a.withdrawals ? "running" : "halted";
    ul.append(el("li", t("status.withdrawals_" + state, { asset: a.asset }), {
      "data-asset-status": a.asset, "data-withdrawals": state, class: state,
    }));
  }
  setAssetOptions($("halt-asset"), assetCodes);
  setAssetOptions($("resume-asset"), assetCodes);
}

function fact(dl, field, name, value) {
  dl.append(el("dt", name), el("dd", value, { "data-field": field }));
}

function renderIncidents(list) {
  const open = list.filter((i) => i.status === "open");
  const box = $("open-incidents");
  box.replaceChildren();
  for (const i of open) {
    const art = el("article", undefined, { class: "incident", "data-incident": i.id });
    art.append(el("h3", t("incident.heading", { id: i.id, kind: i.kind })));
    art.append(el("p", i.summary, { "data-field": "summary" }));
    const dl = el("dl");
    fact(dl, "asset", t("col.asset"), i.asset || t("none"));
    fact(dl, "missing", t("col.missing"), i.missing);
    fact(dl, "customer_share", t("incident.customer_funds"), i.customer_share);
    fact(dl, "company_share", t("incident.company_funds"), i.company_share);
    const tx = el("dd", undefined, { "data-field": "txids" });
    for (const t of i.txids) tx.append(el("code", t));
    if (!i.txids.length) tx.textContent = t("none");
    dl.append(el("dt", t("incident.transactions")), tx);
    fact(dl, "opened_at", t("incident.opened_at"), i.opened_at);
    fact(dl, "opened_by", t("incident.opened_by"), i.opened_by);
    art.append(dl);
    box.append(art);
  }
  $("no-alerts").hidden = open.length > 0;

  const tb = $("incidents");
  tb.replaceChildren();
  for (const i of list) {
    const tr = el("tr", undefined, { "data-id": i.id, "data-status": i.status });
    tr.append(cell("id", i.id), cell("kind", i.kind), cell("asset", i.asset || ""),
      cell("missing", i.missing), cell("opened_at", i.opened_at), cell("status", i.status),
      cell("resolution", i.resolution || ""));
    const actions = el("td");
    if (i.status === "open") {
      actions.append(button(t("incident.resolve"), "resolve", i.id, t("incident.resolve_aria", { id: i.id }), () => resolveIncident(i)));
    }
    tr.append(actions);
    tb.append(tr);
  }
  $("incidents-table").hidden = list.length === 0;
  $("no-incidents").hidden = list.length > 0;
}

function renderHeld(list) {
  const tb = $("held");
  tb.replaceChildren();
  for (const w of list) {
    const mine = me && w.approvals.includes(me.user_id);
    const tr = el("tr", undefined, { "data-id": w.id, "data-status": w.status });
    const dest = el("td", undefined, { "data-field": "address" });
    dest.append(el("code", w.address));
    tr.append(cell("id", w.id), cell("user_id", w.user_id), cell("amount", `${w.amount} ${w.asset}`), dest,
      cell("rule", w.rule || t("none")), cell("decision", w.decision || ""), cell("reason", w.reason || ""),
      cell("approvals", `${w.approvals.length}/${w.approvals_needed}` + (mine ? t("review.you_approved") : "")),
      cell("requested_at", w.requested_at));
    const actions = el("td");
    if (w.status === "review") {
      actions.append(
        button(t("review.approve"), "approve", w.id, t("review.approve_aria", { id: w.id }), () => review(w, true)),
        button(t("review.reject"), "reject", w.id, t("review.reject_aria", { id: w.id }), () => review(w, false)),
      );
    } else {
      actions.textContent = w.status;
    }
    tr.append(actions);
    tb.append(tr);
  }
  $("held-table").hidden = list.length === 0;
  $("no-held").hidden = list.length > 0;
}

function describeChange(p) {
  const c = p.change || {};
  if (p.kind === "resume_withdrawals") {
    const inner = c.ResumeWithdrawals || c;
    return t("change.resume", { asset: assetName(inner.asset) });
  }
  if (p.kind === "set_roles" && c.SetRoles) {
    return t("change.roles", { user: c.SetRoles.user, roles: (c.SetRoles.roles || []).join(", ") || t("none") });
  }
  if (p.kind === "unfreeze_user" && c.UnfreezeUser) return t("change.unfreeze", { user: c.UnfreezeUser.user });
  if (p.kind === "set_risk_policy") return t("change.policy");
  if (p.kind === "whitelist_address" && c.WhitelistAddress) {
    const w = c.WhitelistAddress;
    return t("change.whitelist", { address: w.address, asset: assetName(w.asset), user: w.user });
  }
  if (p.kind === "restitution" && c.Restitution) {
    const r = c.Restitution;
    return t("change.restitution", { incident: r.incident, count: (r.lines || []).length, asset: assetName(r.pay_asset) });
  }
  return p.kind;
}

function renderProposals(list) {
  const tb = $("proposals");
  tb.replaceChildren();
  for (const p of list) {
    const own = me && p.proposer === me.user_id;
    const tr = el("tr", undefined, { "data-id": p.id, "data-status": p.status, "data-kind": p.kind });
    const change = el("td", undefined, { "data-field": "change" });
    change.append(el("span", describeChange(p)), el("code", JSON.stringify(p.change), { class: "raw" }));
    tr.append(cell("id", p.id), change, cell("proposer", own ? t("proposal.you", { user: p.proposer }) : t("proposal.user", { user: p.proposer })),
      cell("reason", p.reason), cell("status", p.status),
      cell("approver", p.approver ? t("proposal.user", { user: p.approver }) : ""), cell("created_at", p.created_at));
    const actions = el("td");
    if (p.status === "open") {
      const b = button(t("review.approve"), "approve-proposal", p.id, t("proposal.approve_aria", { id: p.id }), () => approveProposal(p));
      if (own) {
        // The server refuses it anyway (OWN_PROPOSAL): a second admin must approve.
        b.disabled = true;
        b.title = t("proposal.own");
      }
      actions.append(b);
    }
    tr.append(actions);
    tb.append(tr);
  }
  $("proposals-table").hidden = list.length === 0;
  $("no-proposals").hidden = list.length > 0;
}

// ---- loading and polling ----

// What each list was last rendered from.
let rendered = {};
function changed(key, data) {
  const text = JSON.stringify(data);
  if (rendered[key] === text) return false;
  rendered[key] = text;
  return true;
}

// Loads everything once; false when something failed. Answers for an older epoch are dropped.
async function loadAll() {
  const mine = epoch;
  const [st, inc, held, props] = await Promise.all([
    api("GET", "/status"),
    api("GET", "/ops/incidents"),
    api("GET", "/ops/withdrawals/held"),
    api("GET", "/ops/proposals"),
  ]);
  if (mine !== epoch || !token) return true;
  const all = [st, inc, held, props];
  if (all.some((r) => r.status === 401)) {
    signedOut(t("msg.session_ended"), true);
    return false;
  }
  // Lists are rebuilt only when they changed: a refresh keeps the focus and what is selected.
  if (st.ok && changed("status", st.data)) renderStatus(st.data);
  if (inc.ok && changed("incidents", inc.data)) renderIncidents(inc.data);
  if (held.ok && changed("held", held.data)) renderHeld(held.data);
  if (props.ok && changed("proposals", [props.data, assetCodes])) renderProposals(props.data);
  if (view === "platform") await loadPlatform();
  const bad = all.find((r) => !r.ok);
  const u = $("updated");
  u.textContent = kinkoI18n.time(new Date()) +
    (bad ? t("msg.failed_suffix", { code: (bad.data && bad.data.code) || bad.status }) : "");
  u.className = bad ? "error" : "";
  return !bad;
}

// One refresh at a time: a call while one runs makes it run once more and waits for that.
let loading = null;
let reload = false;
function refresh() {
  if (loading) {
    reload = true;
    return loading;
  }
  loading = (async () => {
    let ok;
    do {
      reload = false;
      ok = await loadAll();
    } while (reload && token);
    return ok;
  })().finally(() => { loading = null; });
  return loading;
}

let pollTimer = null;
let pollDelay = POLL_MS;
function stopPolling() {
  if (pollTimer !== null) clearTimeout(pollTimer);
  pollTimer = null;
  document.body.dataset.polling = "off";
}
// Loads at once, then every POLL_MS.
function startPolling() {
  stopPolling();
  pollDelay = POLL_MS;
  document.body.dataset.polling = "on";
  const mine = epoch;
  const tick = async () => {
    pollTimer = null;
    const ok = await refresh();
    if (mine !== epoch || !token) return;
    // Failures back off (up to POLL_BACKOFF_MAX_MS); success returns to the normal pace.
    pollDelay = ok ? POLL_MS : Math.min(pollDelay * 2, POLL_BACKOFF_MAX_MS);
    pollTimer = setTimeout(tick, pollDelay);
  };
  pollTimer = setTimeout(tick, 0);
}

// Forgets everything the page showed or was typed, and stops polling.
function clearConsole() {
  epoch++;
  stopPolling();
  me = null;
  pendingSecond = null;
  assetCodes = [];
  rendered = {};
  $("who").textContent = "";
  for (const id of ["open-incidents", "asset-status", "held", "proposals", "incidents"]) $(id).replaceChildren();
  for (const id of ["held-table", "proposals-table", "incidents-table", "global-halt"]) $(id).hidden = true;
  for (const id of ["no-alerts", "no-held", "no-proposals", "no-incidents"]) $(id).hidden = false;
  for (const id of ["halt-asset", "resume-asset"]) {
    $(id).replaceChildren(el("option", t("asset.every"), { value: "" }));
  }
  for (const id of ["password", "second-code", "halt-reason", "resume-reason", "ask-text", "stepup-code", "stepup-recovery"]) $(id).value = "";
  $("updated").textContent = t("never");
  clearCustomer();
  platformData = null;
  for (const id of ["platform-assets", "platform-states", "platform-states-head"]) $(id).replaceChildren();
  $("lookup-query").value = "";
  $("updated").className = "";
  for (const d of ["ask", "stepup"]) if ($(d).open) $(d).close();
}

function signedOut(message, error, code) {
  setToken(null);
  clearConsole();
  say(message, error, code);
  show("signin");
}

async function enterConsole() {
  const r = await api("GET", "/me");
  if (!r.ok) {
    if (r.status === 401) return signedOut("", false);
    show("signin");
    return fail(r);
  }
  epoch++;
  me = { user_id: r.data.user_id, email: r.data.email };
  $("who").textContent = me.email;
  // Signing in takes either factor; acting takes a passkey (the engine verifies it).
  $("passkey-needed").hidden = (r.data.passkeys || []).length > 0;
  const probe = await api("GET", "/ops/incidents");
  if (!probe.ok) {
    // Not an admin (ROLE_REQUIRED) or no session usable here: nothing to show.
    const d = probe.data || {};
    await api("POST", "/auth/logout");
    return signedOut((d.code || "ERROR") + ": " + (d.message || t("msg.request_failed")), true, d.code);
  }
  show("console");
  showView(viewFromHash());
  startPolling();
}

// ---- sign-in ----

async function afterLogin(r) {
  if (!r.ok) return fail(r);
  // The password has done its job: it must not wait in the form.
  $("password").value = "";
  setToken(r.data.token);
  if (r.data.level === "password") {
    pendingSecond = r.data.second_factor || {};
    const m = pendingSecond.methods || [];
    $("second-passkey").hidden = !m.includes("webauthn");
    $("second-code-label").hidden = !m.includes("totp");
    $("second-totp").hidden = !m.includes("totp");
    say("");
    show("second");
    return;
  }
  // Admins always have a second factor; a full session straight from the password means none.
  say(t("msg.signed_in"));
  await enterConsole();
}

async function completeSecond(stepUp) {
  const r = await api("POST", "/auth/login/second-factor", { step_up: stepUp });
  if (!r.ok) return fail(r);
  setToken(r.data.token);
  pendingSecond = null;
  $("second-code").value = "";
  say(t("msg.signed_in"));
  await enterConsole();
}

$("login-form").onsubmit = async (e) => {
  e.preventDefault();
  const body = { email: $("email").value.trim(), password: $("password").value, device: "console: " + navigator.userAgent.slice(0, 50) };
  await afterLogin(await api("POST", "/auth/login", body));
};
$("second-form").onsubmit = async (e) => {
  e.preventDefault();
  if (!pendingSecond) return;
  await completeSecond({ challenge: pendingSecond.challenge, totp: $("second-code").value.trim() });
};
$("second-passkey").onclick = async () => {
  if (!pendingSecond) return;
  try { await completeSecond(await passkeyAnswer(pendingSecond)); } catch (e) { say(String(e), true, "WEBAUTHN_FAILED"); }
};
$("logout").onclick = async () => {
  await api("POST", "/auth/logout");
  signedOut(t("msg.signed_out"), false);
};

// ---- actions ----

async function review(w, approve) {
  const verb = approve ? "approve" : "reject";
  const reason = await askText(t(`review.${verb}_title`, { id: w.id, amount: w.amount, asset: w.asset }), t("controls.reason"));
  if (reason === null) return say(t("msg.cancelled"), true, "CANCELLED");
  const r = await withStepUp(t(`review.${verb}_what`, { id: w.id }), "POST",
    `/ops/withdrawals/${encodeURIComponent(w.id)}/review`, { approve, reason });
  if (!r.ok) fail(r);
  else if (r.data.status === "review") {
    say(t("review.still", { id: w.id, n: r.data.approvals.length, of: r.data.approvals_needed }));
  } else say(t("review.now", { id: w.id, status: r.data.status }));
  await refresh();
}

async function approveProposal(p) {
  const r = await withStepUp(t("proposal.approve_what", { id: p.id, change: describeChange(p) }), "POST",
    `/ops/proposals/${encodeURIComponent(p.id)}/approve`, {});
  if (!r.ok) fail(r);
  else say(t("proposal.done", { id: p.id, status: r.data.status, change: describeChange(r.data) }));
  await refresh();
  return r;
}

async function resolveIncident(i) {
  const resolution = await askText(t("incident.resolve_title", { id: i.id, kind: i.kind }), t("col.resolution"));
  if (resolution === null) return say(t("msg.cancelled"), true, "CANCELLED");
  const r = await withStepUp(t("incident.resolve_what", { id: i.id }), "POST",
    `/ops/incidents/${encodeURIComponent(i.id)}/resolve`, { resolution });
  if (!r.ok) fail(r);
  else say(t("incident.now", { id: i.id, status: r.data.status }));
  await refresh();
}

$("halt-form").onsubmit = async (e) => {
  e.preventDefault();
  const asset = $("halt-asset").value;
  const body = { reason: $("halt-reason").value.trim() };
  if (asset) body.asset = asset;
  const what = t("controls.halt_what", { asset: asset || t("asset.every") });
  const r = await withStepUp(what, "POST", "/ops/halt", body);
  if (!r.ok) fail(r);
  else {
    $("halt-reason").value = "";
    say(t("controls.halted", { asset: asset || t("asset.every") }));
  }
  await refresh();
};

$("resume-form").onsubmit = async (e) => {
  e.preventDefault();
  const asset = $("resume-asset").value;
  const body = { kind: "resume_withdrawals", reason: $("resume-reason").value.trim() };
  if (asset) body.asset = asset;
  const what = t("controls.resume_what", { asset: asset || t("asset.every") });
  const r = await withStepUp(what, "POST", "/ops/proposals", body);
  if (!r.ok) fail(r);
  else {
    $("resume-reason").value = "";
    say(t("proposal.made", { id: r.data.id }));
  }
  await refresh();
};

$("unfreeze-form").onsubmit = async (e) => {
  e.preventDefault();
  const user = $("unfreeze-user").value.trim();
  const body = { kind: "unfreeze_user", user_id: user, reason: $("unfreeze-reason").value.trim() };
  const r = await withStepUp(t("accounts.propose_what", { user }), "POST", "/ops/proposals", body);
  if (!r.ok) fail(r);
  else {
    $("unfreeze-user").value = "";
    $("unfreeze-reason").value = "";
    say(t("proposal.made", { id: r.data.id }));
  }
  await refresh();
};

// Signer ceremony: the admin signs the challenge the signer's operator printed; the page only
// shows the assertion (nothing is sent to kinko: the signer judges it).
$("ceremony-challenge").oninput = () => {
  const c = kinkoStepUp.parseSignerChallenge($("ceremony-challenge").value.trim());
  $("ceremony-digest").textContent = c ? c.digest : "—";
  $("ceremony-issued").textContent = c ? new Date(c.issuedMs).toISOString() : "—";
};

$("ceremony-form").onsubmit = async (e) => {
  e.preventDefault();
  const challenge = $("ceremony-challenge").value.trim();
  if (!kinkoStepUp.parseSignerChallenge(challenge)) {
    say(t("ceremony.invalid"), true, "CHALLENGE_INVALID");
    return;
  }
  try {
    const a = await kinkoStepUp.signerAssertion(challenge);
    $("ceremony-assertion").value = JSON.stringify(a, null, 2);
    say(t("ceremony.made"));
  } catch (err) {
    say("WEBAUTHN_FAILED: " + String(err), true, "WEBAUTHN_FAILED");
  }
};

$("ceremony-enrol").onclick = async () => {
  const r = await api("GET", "/ops/signer-admin");
  if (!r.ok) fail(r);
  else $("ceremony-record").value = r.data.map((a) => JSON.stringify(a, null, 2)).join("\n");
};

// ---- views: overview, customers, platform ----

const VIEWS = ["overview", "customers", "platform"];
let view = "overview";

function viewFromHash() {
  const h = location.hash.replace(/^#/, "");
  return VIEWS.includes(h) ? h : "overview";
}

function showView(name) {
  view = VIEWS.includes(name) ? name : "overview";
  for (const panel of document.querySelectorAll("[data-view-panel]")) {
    panel.hidden = panel.dataset.viewPanel !== view;
  }
  for (const b of document.querySelectorAll("#nav [data-view]")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  if (location.hash !== "#" + view) history.replaceState(null, "", "#" + view);
  document.body.dataset.view = view;
  if (view === "platform") loadPlatform();
  if (view === "customers") $("lookup-query").focus();
}

for (const b of document.querySelectorAll("#nav [data-view]")) {
  b.onclick = () => showView(b.dataset.view);
}
window.addEventListener("hashchange", () => { if (token && me) showView(viewFromHash()); });

// ---- customer lookup ----

/// The customer on the page (the lookup's answer), or null.
let customer = null;

function clearCustomer() {
  customer = null;
  $("customer").hidden = true;
  for (const id of ["customer-balances", "customer-logins", "customer-withdrawals", "customer-addresses", "customer-proposals"]) {
    $(id).replaceChildren();
  }
  for (const id of ["freeze-reason", "customer-unfreeze-reason"]) $(id).value = "";
}

// An amount cell: the locale's grouping, the raw decimal string kept in data-value.
function amountCell(field, value) {
  return el("td", kinkoI18n.amount(value), { "data-field": field, "data-value": value, class: "num" });
}

function fillTable(tbody, table, none, rows) {
  $(tbody).replaceChildren(...rows);
  $(table).hidden = rows.length === 0;
  $(none).hidden = rows.length > 0;
}

function renderCustomer(c) {
  customer = c;
  $("customer").hidden = false;
  $("customer").dataset.user = c.user_id;
  $("customer-email").textContent = c.email;
  $("customer-id").textContent = c.user_id;
  const st = $("customer-status");
  st.textContent = t("status." + c.status);
  st.dataset.status = c.status;
  st.className = "badge " + c.status;
  $("customer-status-reason").textContent = c.status_reason || "";
  $("customer-created").textContent = kinkoI18n.dateTime(c.created_at);
  $("customer-sessions").textContent = kinkoI18n.number(c.sessions);
  $("customer-roles").textContent = c.roles.length ? c.roles.join(", ") : t("none");
  $("factor-totp").textContent = c.factors.totp ? t("on") : t("off");
  $("factor-totp").dataset.value = String(c.factors.totp);
  $("factor-passkeys").textContent = kinkoI18n.number(c.factors.passkeys);
  $("factor-passkeys").dataset.value = String(c.factors.passkeys);
  $("factor-recovery").textContent = kinkoI18n.number(c.factors.recovery_codes_left);
  $("factor-recovery").dataset.value = String(c.factors.recovery_codes_left);

  $("customer-balances").replaceChildren(...c.balances.map((b) => {
    const tr = el("tr", undefined, { "data-asset": b.asset });
    tr.append(el("th", b.asset, { scope: "row" }), amountCell("available", b.available), amountCell("held", b.held));
    return tr;
  }));
  fillTable("customer-logins", "customer-logins-table", "customer-no-logins", c.recent_logins.map((l) => {
    const tr = el("tr");
    tr.append(cell("at", kinkoI18n.dateTime(l.at)), cell("ip", l.ip), cell("device", l.device),
      cell("level", t("level." + l.level) + (l.new_device ? t("login.new_device") : "")));
    return tr;
  }));
  fillTable("customer-withdrawals", "customer-withdrawals-table", "customer-no-withdrawals", c.withdrawals.map((w) => {
    const tr = el("tr", undefined, { "data-id": w.id, "data-status": w.status });
    const dest = el("td", undefined, { "data-field": "address" });
    dest.append(el("code", w.address));
    const amount = amountCell("amount", w.amount);
    amount.textContent += " " + w.asset;
    tr.append(cell("id", w.id), amount, dest, cell("status", t("wstatus." + w.status) + (w.reason ? ` (${w.reason})` : "")),
      cell("requested_at", kinkoI18n.dateTime(w.requested_at)));
    return tr;
  }));
  fillTable("customer-addresses", "customer-addresses-table", "customer-no-addresses", c.addresses.map((a) => {
    const tr = el("tr", undefined, { "data-id": a.id });
    const addr = el("td", undefined, { "data-field": "address" });
    addr.append(el("code", a.address));
    tr.append(cell("asset", a.asset), addr, cell("label", a.label), cell("usable_at", kinkoI18n.dateTime(a.usable_at)));
    return tr;
  }));

  const frozen = c.status !== "active";
  $("freeze-form").hidden = frozen;
  $("customer-unfreeze-form").hidden = !frozen;
  const items = c.proposals.map((p) => {
    const own = me && p.proposer === me.user_id;
    const li = el("li", undefined, { "data-id": p.id, "data-kind": p.kind, "data-status": p.status });
    li.append(el("span", t("proposal.line", { id: p.id, change: describeChange(p), user: p.proposer, reason: p.reason })));
    const b = button(t("review.approve"), "approve-proposal", p.id, t("proposal.approve_aria", { id: p.id }), async () => {
      const r = await approveProposal(p);
      if (r && r.ok) await lookUp(c.user_id, true);
    });
    if (own) {
      b.disabled = true;
      b.title = t("proposal.own");
      li.append(el("span", t("proposal.waiting"), { class: "meta" }));
    }
    li.prepend(b);
    return li;
  });
  $("customer-proposals").replaceChildren(...items);
  $("customer-no-proposals").hidden = items.length > 0;
}

// Looks a customer up (each lookup is recorded in the audit log).
async function lookUp(query, quiet) {
  const mine = epoch;
  const r = await api("POST", "/ops/customers/lookup", { query: String(query) });
  if (mine !== epoch) return;
  if (r.status === 401) return signedOut(t("msg.session_ended"), true);
  if (!r.ok) {
    clearCustomer();
    return fail(r);
  }
  renderCustomer(r.data);
  if (!quiet) say(t("customers.found", { email: r.data.email, id: r.data.user_id }));
}

$("lookup-form").onsubmit = async (e) => {
  e.preventDefault();
  await lookUp($("lookup-query").value.trim());
};

$("freeze-form").onsubmit = async (e) => {
  e.preventDefault();
  if (!customer) return;
  const id = customer.user_id;
  const r = await withStepUp(t("customer.freeze_what", { user: id }), "POST",
    `/ops/customers/${encodeURIComponent(id)}/freeze`, { reason: $("freeze-reason").value.trim() });
  if (!r.ok) return fail(r);
  $("freeze-reason").value = "";
  await lookUp(id, true);
  say(t("customer.frozen", { user: id }));
};

$("customer-unfreeze-form").onsubmit = async (e) => {
  e.preventDefault();
  if (!customer) return;
  const user = customer.user_id;
  const body = { kind: "unfreeze_user", user_id: user, reason: $("customer-unfreeze-reason").value.trim() };
  const r = await withStepUp(t("accounts.propose_what", { user }), "POST", "/ops/proposals", body);
  if (!r.ok) return fail(r);
  $("customer-unfreeze-reason").value = "";
  await lookUp(user, true);
  say(t("proposal.made", { id: r.data.id }));
  await refresh();
};

// ---- platform ----

let platformData = null;

function renderPlatform(p) {
  platformData = p;
  $("platform-committed").textContent = kinkoI18n.number(p.committed_sequence);
  $("platform-committed").dataset.value = String(p.committed_sequence);
  $("platform-applied").textContent = kinkoI18n.number(p.applied_sequence);
  $("platform-queue").textContent = kinkoI18n.number(p.queue_depth);
  $("platform-queue").dataset.value = String(p.queue_depth);
  $("platform-accepting").textContent = p.accepting_requests ? t("yes") : t("no");
  $("platform-incidents").textContent = kinkoI18n.number(p.open_incidents.length);
  $("platform-incidents").dataset.value = String(p.open_incidents.length);
  $("platform-updated").textContent = kinkoI18n.time(new Date());
  $("platform-assets").replaceChildren(...p.assets.map((a) => {
    const tr = el("tr", undefined, { "data-asset": a.asset });
    const node = a.node_hot !== null && a.node_hot !== undefined
      ? `${kinkoI18n.amount(a.node_hot)} / ${kinkoI18n.amount(a.node_cold)}`
      : (a.node_error ? t("platform.node_error", { error: a.node_error }) : t("platform.no_custody"));
    let share = a.hot_share_bps === null || a.hot_share_bps === undefined ? "—" : kinkoI18n.percent(a.hot_share_bps);
    if (a.hot_limit !== null && a.hot_limit !== undefined) {
      share += " / " + t("platform.cap", { share: kinkoI18n.percent(a.hot_cap_share_bps), cap: kinkoI18n.amount(a.hot_cap), limit: kinkoI18n.amount(a.hot_limit) });
    }
    const shareCell = cell("hot_share", share);
    if (a.hot_over_limit) {
      shareCell.classList.add("over");
      shareCell.append(el("strong", " " + t("platform.over_limit")));
    }
    const surplus = amountCell("custody_surplus", a.custody_surplus);
    if (a.custody_surplus.startsWith("-")) surplus.classList.add("over");
    tr.append(el("th", a.asset, { scope: "row" }), amountCell("liabilities", a.liabilities),
      amountCell("ledger_hot", a.ledger_hot), amountCell("ledger_cold", a.ledger_cold), surplus,
      cell("node", node), shareCell,
      cell("withdrawals", a.withdrawals_running ? t("platform.running") : t("platform.halted")));
    return tr;
  }));
  const states = p.assets.length ? p.assets[0].withdrawals.map((s) => s.status) : [];
  const head = el("tr");
  head.append(el("th", t("col.asset"), { scope: "col" }), ...states.map((s) => el("th", t("wstatus." + s), { scope: "col", class: "num" })));
  $("platform-states-head").replaceChildren(head);
  $("platform-states").replaceChildren(...p.assets.map((a) => {
    const tr = el("tr", undefined, { "data-asset": a.asset });
    tr.append(el("th", a.asset, { scope: "row" }),
      ...a.withdrawals.map((s) => el("td", kinkoI18n.number(s.count), { "data-field": s.status, "data-value": String(s.count), class: "num" })));
    return tr;
  }));
}

async function loadPlatform() {
  const mine = epoch;
  const r = await api("GET", "/ops/platform");
  if (mine !== epoch || !token) return;
  if (r.status === 401) return signedOut(t("msg.session_ended"), true);
  if (!r.ok) return fail(r);
  renderPlatform(r.data);
}

// ---- language ----

function rerender() {
  kinkoI18n.apply();
  rendered = {};
  if (customer) renderCustomer(customer);
  if (platformData) renderPlatform(platformData);
  if (token && me) refresh();
}

for (const b of document.querySelectorAll("[data-lang]")) {
  b.onclick = () => {
    kinkoI18n.setLang(b.dataset.lang);
    rerender();
  };
}

(async function start() {
  kinkoI18n.apply();
  document.body.dataset.polling = "off";
  if (token) await enterConsole();
  else show("signin");
})();
