// kinko operators' console: sign-in with a second factor, then the alerts (open incidents, what
// is halted), the review queue, halting and proposing to resume withdrawals, two-person
// proposals and incidents, and the signer ceremony (a passkey assertion over a challenge the
// signer's operator printed). Every action carries the admin's passkey assertion, bound to it by
// the server's STEP_UP_REQUIRED challenge (which offers admins the passkey only), asked for by
// the dialog of stepup.js (shared with the account page). An admin without a passkey is told
// to add one on the account page.
// Talks only to kinko's own /api/v1. Text from the server is only ever set with textContent.
"use strict";

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
  say((d.code || "ERROR") + ": " + (d.message || "request failed"), true, d.code);
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
  if (a === null || a === undefined) return "every asset";
  if (typeof a === "number") return assetCodes[a] || "asset #" + a;
  return String(a);
}

function setAssetOptions(select, codes) {
  const keep = select.value;
  const have = [...select.options].map((o) => o.value).slice(1);
  if (have.join(",") === codes.join(",")) return;
  select.replaceChildren(el("option", "every asset", { value: "" }));
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
    ul.append(el("li", `${a.asset}: withdrawals ${state}`, {
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
    art.append(el("h3", `Incident ${i.id}: ${i.kind}`));
    art.append(el("p", i.summary, { "data-field": "summary" }));
    const dl = el("dl");
    fact(dl, "asset", "Asset", i.asset || "none");
    fact(dl, "missing", "Missing", i.missing);
    fact(dl, "customer_share", "Customer funds", i.customer_share);
    fact(dl, "company_share", "Company funds", i.company_share);
    const tx = el("dd", undefined, { "data-field": "txids" });
    for (const t of i.txids) tx.append(el("code", t));
    if (!i.txids.length) tx.textContent = "none";
    dl.append(el("dt", "Transactions"), tx);
    fact(dl, "opened_at", "Opened at", i.opened_at);
    fact(dl, "opened_by", "Opened by", i.opened_by);
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
      actions.append(button("Resolve", "resolve", i.id, `Resolve incident ${i.id}`, () => resolveIncident(i)));
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
      cell("rule", w.rule || "none"), cell("decision", w.decision || ""), cell("reason", w.reason || ""),
      cell("approvals", `${w.approvals.length}/${w.approvals_needed}` + (mine ? " (you approved)" : "")),
      cell("requested_at", w.requested_at));
    const actions = el("td");
    if (w.status === "review") {
      actions.append(
        button("Approve", "approve", w.id, `Approve withdrawal ${w.id}`, () => review(w, true)),
        button("Reject", "reject", w.id, `Reject withdrawal ${w.id}`, () => review(w, false)),
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
    return "resume withdrawals of " + assetName(inner.asset);
  }
  if (p.kind === "set_roles" && c.SetRoles) {
    return `set the roles of user ${c.SetRoles.user} to ${(c.SetRoles.roles || []).join(", ") || "none"}`;
  }
  if (p.kind === "unfreeze_user" && c.UnfreezeUser) return `unfreeze user ${c.UnfreezeUser.user}`;
  if (p.kind === "set_risk_policy") return "replace the withdrawal risk policy";
  if (p.kind === "whitelist_address" && c.WhitelistAddress) {
    const w = c.WhitelistAddress;
    return `whitelist ${w.address} (${assetName(w.asset)}) for user ${w.user}, usable at once`;
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
    tr.append(cell("id", p.id), change, cell("proposer", own ? `you (user ${p.proposer})` : `user ${p.proposer}`),
      cell("reason", p.reason), cell("status", p.status),
      cell("approver", p.approver ? `user ${p.approver}` : ""), cell("created_at", p.created_at));
    const actions = el("td");
    if (p.status === "open") {
      const b = button("Approve", "approve-proposal", p.id, `Approve proposal ${p.id}`, () => approveProposal(p));
      if (own) {
        // The server refuses it anyway (OWN_PROPOSAL): a second admin must approve.
        b.disabled = true;
        b.title = "Your own proposal: another admin must approve it";
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
    signedOut("Your session ended: sign in again.", true);
    return false;
  }
  // Lists are rebuilt only when they changed: a refresh keeps the focus and what is selected.
  if (st.ok && changed("status", st.data)) renderStatus(st.data);
  if (inc.ok && changed("incidents", inc.data)) renderIncidents(inc.data);
  if (held.ok && changed("held", held.data)) renderHeld(held.data);
  if (props.ok && changed("proposals", [props.data, assetCodes])) renderProposals(props.data);
  const bad = all.find((r) => !r.ok);
  const u = $("updated");
  u.textContent = new Date().toLocaleTimeString() +
    (bad ? ` (failed: ${(bad.data && bad.data.code) || bad.status})` : "");
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
    $(id).replaceChildren(el("option", "every asset", { value: "" }));
  }
  for (const id of ["password", "second-code", "halt-reason", "resume-reason", "ask-text", "stepup-code", "stepup-recovery"]) $(id).value = "";
  $("updated").textContent = "never";
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
    return signedOut((d.code || "ERROR") + ": " + (d.message || "request failed"), true, d.code);
  }
  show("console");
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
  say("Signed in.");
  await enterConsole();
}

async function completeSecond(stepUp) {
  const r = await api("POST", "/auth/login/second-factor", { step_up: stepUp });
  if (!r.ok) return fail(r);
  setToken(r.data.token);
  pendingSecond = null;
  $("second-code").value = "";
  say("Signed in.");
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
  signedOut("Signed out.", false);
};

// ---- actions ----

async function review(w, approve) {
  const verb = approve ? "Approve" : "Reject";
  const reason = await askText(`${verb} withdrawal ${w.id} (${w.amount} ${w.asset})`, "Reason");
  if (reason === null) return say("CANCELLED: nothing was sent", true, "CANCELLED");
  const r = await withStepUp(`${verb.toLowerCase()} withdrawal ${w.id}`, "POST",
    `/ops/withdrawals/${encodeURIComponent(w.id)}/review`, { approve, reason });
  if (!r.ok) fail(r);
  else if (r.data.status === "review") {
    say(`Withdrawal ${w.id} approved by you: ${r.data.approvals.length} of ${r.data.approvals_needed} approvals, still in review.`);
  } else say(`Withdrawal ${w.id} is now ${r.data.status}.`);
  await refresh();
}

async function approveProposal(p) {
  const r = await withStepUp(`approve proposal ${p.id}: ${describeChange(p)}`, "POST",
    `/ops/proposals/${encodeURIComponent(p.id)}/approve`, {});
  if (!r.ok) fail(r);
  else say(`Proposal ${p.id} is ${r.data.status}: ${describeChange(r.data)}.`);
  await refresh();
}

async function resolveIncident(i) {
  const resolution = await askText(`Resolve incident ${i.id} (${i.kind})`, "Resolution");
  if (resolution === null) return say("CANCELLED: nothing was sent", true, "CANCELLED");
  const r = await withStepUp(`resolve incident ${i.id}`, "POST",
    `/ops/incidents/${encodeURIComponent(i.id)}/resolve`, { resolution });
  if (!r.ok) fail(r);
  else say(`Incident ${i.id} is ${r.data.status}.`);
  await refresh();
}

$("halt-form").onsubmit = async (e) => {
  e.preventDefault();
  const asset = $("halt-asset").value;
  const body = { reason: $("halt-reason").value.trim() };
  if (asset) body.asset = asset;
  const what = "halt withdrawals of " + (asset || "every asset");
  const r = await withStepUp(what, "POST", "/ops/halt", body);
  if (!r.ok) fail(r);
  else {
    $("halt-reason").value = "";
    say(`Withdrawals of ${asset || "every asset"} halted.`);
  }
  await refresh();
};

$("resume-form").onsubmit = async (e) => {
  e.preventDefault();
  const asset = $("resume-asset").value;
  const body = { kind: "resume_withdrawals", reason: $("resume-reason").value.trim() };
  if (asset) body.asset = asset;
  const what = "propose resuming withdrawals of " + (asset || "every asset");
  const r = await withStepUp(what, "POST", "/ops/proposals", body);
  if (!r.ok) fail(r);
  else {
    $("resume-reason").value = "";
    say(`Proposal ${r.data.id} made: another admin must approve it.`);
  }
  await refresh();
};

$("unfreeze-form").onsubmit = async (e) => {
  e.preventDefault();
  const user = $("unfreeze-user").value.trim();
  const body = { kind: "unfreeze_user", user_id: user, reason: $("unfreeze-reason").value.trim() };
  const r = await withStepUp(`propose unfreezing user ${user}`, "POST", "/ops/proposals", body);
  if (!r.ok) fail(r);
  else {
    $("unfreeze-user").value = "";
    $("unfreeze-reason").value = "";
    say(`Proposal ${r.data.id} made: another admin must approve it.`);
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
    say("CHALLENGE_INVALID: not a signer challenge", true, "CHALLENGE_INVALID");
    return;
  }
  try {
    const a = await kinkoStepUp.signerAssertion(challenge);
    $("ceremony-assertion").value = JSON.stringify(a, null, 2);
    say("Assertion made: hand it to the signer's operator.");
  } catch (err) {
    say("WEBAUTHN_FAILED: " + String(err), true, "WEBAUTHN_FAILED");
  }
};

$("ceremony-enrol").onclick = async () => {
  const r = await api("GET", "/ops/signer-admin");
  if (!r.ok) fail(r);
  else $("ceremony-record").value = r.data.map((a) => JSON.stringify(a, null, 2)).join("\n");
};

(async function start() {
  document.body.dataset.polling = "off";
  if (token) await enterConsole();
  else show("signin");
})();
