// kinko account page: sign-in with a second factor, enrolment, step-up confirmation, freeze.
// Also the account's sessions, API keys and password. Talks only to kinko's own /api/v1; keeps
// the session token in sessionStorage (never localStorage). Texts in English or Japanese
// (i18n.js).
"use strict";

const $ = (id) => document.getElementById(id);
const t = kinkoI18n.t;

let token = sessionStorage.getItem("kinko.token");
function setToken(t) {
  token = t;
  if (t) sessionStorage.setItem("kinko.token", t);
  else sessionStorage.removeItem("kinko.token");
}

function say(text, error) {
  const n = $("notice");
  n.textContent = text ? t(text) : "";
  n.className = error ? "error" : "";
}

async function api(method, path, body) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch("/api/v1" + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { code: "BAD_RESPONSE", message: text }; }
  return { status: r.status, ok: r.ok, data };
}

function show(...ids) {
  for (const s of ["signin", "second", "reset", "freeze", "account"]) $(s).hidden = !ids.includes(s);
}

// The step-up dialog and the WebAuthn helpers: stepup.js, shared with the console.
const { creationOptions, registrationJSON, passkeyAnswer } = kinkoStepUp;
// Sends a sensitive request; on STEP_UP_REQUIRED asks for the second factor and repeats it.
function withStepUp(what, method, path, body) {
  return kinkoStepUp.withStepUp(api, what, method, path, body);
}

function fail(r) {
  const d = r.data;
  say((d && (d.code + ": " + (t("code." + d.code, null, "") || d.message))) || t("request failed"), true);
}

let pendingSecond = null;

// Forgets what the page showed of the signed-in account (recovery codes and a TOTP secret above
// all) and what was typed, so whoever uses this tab next sees none of it.
function clearAccount() {
  $("who").textContent = "";
  $("facts").replaceChildren();
  $("addresses").replaceChildren();
  $("recovery-codes").textContent = "";
  $("recovery").hidden = true;
  $("totp-secret").textContent = "";
  $("totp-uri").href = "#";
  delete $("totp-form").dataset.enrolment;
  $("totp-form").hidden = true;
  for (const id of ["password", "second-code", "totp-code", "ap-code", "addr-address", "addr-label",
    "stepup-code", "stepup-recovery", "pw-current", "pw-new", "key-label", "key-ips"]) $(id).value = "";
  $("sessions").replaceChildren();
  $("security-log").replaceChildren();
  $("keys").replaceChildren();
  $("key-secret").textContent = "";
  $("key-secret-box").hidden = true;
  $("proof-facts").replaceChildren();
  clearProofLink();
  pendingSecond = null;
}

async function afterLogin(r) {
  if (!r.ok) return fail(r);
  // The password has done its job: it must not wait in the form for the next sign-in.
  $("password").value = "";
  setToken(r.data.token);
  if (r.data.level === "password") {
    pendingSecond = r.data.second_factor;
    if (pendingSecond && pendingSecond.reenrol_required) {
      say("Second factors were reset for everyone. Re-enrol one with a recovery code.");
      return loadAccount();
    }
    $("second-passkey").hidden = !(pendingSecond.methods || []).includes("webauthn");
    $("second-code").parentElement.hidden = !(pendingSecond.methods || []).includes("totp");
    $("second-totp").hidden = $("second-code").parentElement.hidden;
    show("second");
    return;
  }
  say("Signed in.");
  await loadAccount();
}

async function completeSecond(stepUp) {
  const r = await api("POST", "/auth/login/second-factor", { step_up: stepUp });
  if (!r.ok) return fail(r);
  setToken(r.data.token);
  say("Signed in.");
  await loadAccount();
}

function fact(dl, k, v) {
  const dt = document.createElement("dt");
  dt.textContent = t(k);
  const dd = document.createElement("dd");
  dd.textContent = t(v);
  dd.dataset.fact = k;
  dl.append(dt, dd);
}

async function loadAccount() {
  const r = await api("GET", "/me");
  if (!r.ok) {
    setToken(null);
    clearAccount();
    show("signin");
    if (r.status !== 401) fail(r);
    return;
  }
  const u = r.data;
  $("who").textContent = u.email;
  const dl = $("facts");
  dl.replaceChildren();
  fact(dl, "Status", u.status);
  fact(dl, "Authenticator app", u.totp ? "on" : "off");
  fact(dl, "Passkeys", String(u.passkeys.length));
  fact(dl, "Recovery codes left", String(u.recovery_codes_left));
  fact(dl, "Anti-phishing code", u.anti_phishing_code || "not set");
  fact(dl, "Withdrawals locked until", u.withdrawals_locked_until || "not locked");
  $("totp-begin").hidden = u.totp;
  show("account");
  loadSessions();
  loadKeys();
  loadSecurityLog(false);
  const a = await api("GET", "/withdrawal-addresses");
  const ul = $("addresses");
  ul.replaceChildren();
  if (a.ok) {
    for (const x of a.data) {
      const li = document.createElement("li");
      li.textContent = `${x.asset} ${x.address} (${x.label}) ${t("usable from")} ${x.usable_at}`;
      ul.append(li);
    }
  }
}

function showRecovery(codes) {
  if (codes && codes.length) {
    $("recovery-codes").textContent = codes.join("\n");
    $("recovery").hidden = false;
  }
}

function creds() {
  return { email: $("email").value.trim(), password: $("password").value };
}

$("login-form").onsubmit = async (e) => {
  e.preventDefault();
  await afterLogin(await api("POST", "/auth/login", { ...creds(), device: navigator.userAgent.slice(0, 60) }));
};
$("register").onclick = async () => {
  const r = await api("POST", "/auth/register", creds());
  if (!r.ok) return fail(r);
  await afterLogin(await api("POST", "/auth/login", { ...creds(), device: navigator.userAgent.slice(0, 60) }));
};
$("forgot").onclick = async () => {
  const r = await api("POST", "/auth/password-reset", { email: $("email").value.trim() });
  if (!r.ok) return fail(r);
  say("If an account uses this address, a reset link is on its way.");
};
$("second-form").onsubmit = async (e) => {
  e.preventDefault();
  await completeSecond({ challenge: pendingSecond.challenge, totp: $("second-code").value.trim() });
};
$("second-passkey").onclick = async () => {
  try { await completeSecond(await passkeyAnswer(pendingSecond)); } catch (e) { say(String(e), true); }
};
$("totp-begin").onclick = async () => {
  const r = await api("POST", "/me/totp");
  if (!r.ok) return fail(r);
  $("totp-secret").textContent = r.data.secret;
  $("totp-uri").href = r.data.otpauth_uri;
  $("totp-form").dataset.enrolment = r.data.enrolment;
  $("totp-form").hidden = false;
};
$("totp-form").onsubmit = async (e) => {
  e.preventDefault();
  const body = { enrolment: $("totp-form").dataset.enrolment, code: $("totp-code").value.trim() };
  const r = await withStepUp(t("add an authenticator app"), "POST", "/me/totp/confirm", body);
  if (!r.ok) return fail(r);
  $("totp-form").hidden = true;
  showRecovery(r.data.recovery_codes);
  say("Authenticator app added.");
  await loadAccount();
};
$("passkey-add").onclick = async () => {
  const o = await api("POST", "/me/passkeys/options");
  if (!o.ok) return fail(o);
  let cred;
  try {
    cred = await navigator.credentials.create({ publicKey: creationOptions(o.data.public_key) });
  } catch (e) {
    return say(String(e), true);
  }
  const body = { enrolment: o.data.enrolment, credential: registrationJSON(cred), label: "passkey" };
  const r = await withStepUp(t("add a passkey"), "POST", "/me/passkeys", body);
  if (!r.ok) return fail(r);
  showRecovery(r.data.recovery_codes);
  say("Passkey added.");
  await loadAccount();
};
$("ap-form").onsubmit = async (e) => {
  e.preventDefault();
  const r = await withStepUp(t("set the anti-phishing code"), "POST", "/me/anti-phishing", { code: $("ap-code").value });
  if (!r.ok) return fail(r);
  say("Anti-phishing code saved.");
  await loadAccount();
};
$("addr-form").onsubmit = async (e) => {
  e.preventDefault();
  const body = { asset: $("addr-asset").value.trim(), address: $("addr-address").value.trim(), label: $("addr-label").value };
  const r = await withStepUp(t("whitelist a withdrawal address"), "POST", "/withdrawal-addresses", body);
  if (!r.ok) return fail(r);
  say(t("Address whitelisted; usable from {time}.", { time: r.data.usable_at }));
  await loadAccount();
};
$("logout").onclick = async () => {
  await api("POST", "/auth/logout");
  setToken(null);
  clearAccount();
  say("Signed out.");
  show("signin");
};
$("reset-form").onsubmit = async (e) => {
  e.preventDefault();
  const reset = new URLSearchParams(location.hash.slice(1)).get("reset");
  const r = await api("POST", "/auth/password-reset/confirm", { token: reset, new_password: $("reset-password").value });
  if (!r.ok) return fail(r);
  history.replaceState(null, "", "/");
  say("Password changed. Sign in again; withdrawals stay locked for a while.");
  show("signin");
};
async function freezeNow() {
  const link = new URLSearchParams(location.search).get("t");
  const r = await api("POST", "/auth/freeze", { token: link || "" });
  if (!r.ok) return fail(r);
  $("freeze-text").textContent = t("Your account is frozen: withdrawals are halted and every session was ended. Our team will contact you.");
  $("freeze-button").hidden = true;
  setToken(null);
}
$("freeze-button").onclick = freezeNow;

// --- sessions, API keys, password -------------------------------------------------------

function cell(tr, v) {
  const td = document.createElement("td");
  if (v instanceof Node) td.append(v);
  else td.textContent = v;
  tr.append(td);
}
function small(text, onclick, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.onclick = onclick;
  return b;
}
const when = (iso) => (iso ? new Intl.DateTimeFormat(kinkoI18n.lang, { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso)) : "–");

async function loadSessions() {
  const r = await api("GET", "/me/sessions");
  const body = $("sessions");
  body.replaceChildren();
  if (!r.ok) return;
  for (const s of r.data) {
    const tr = document.createElement("tr");
    tr.dataset.current = String(s.current);
    cell(tr, (s.device || t("unknown device")) + (s.current ? ` (${t("this session")})` : ""));
    cell(tr, s.ip || "–");
    cell(tr, when(s.created_at));
    cell(tr, when(s.expires_at));
    cell(tr, s.current ? "" : small(t("End"), async () => {
      const x = await api("DELETE", "/me/sessions/" + s.id);
      if (!x.ok) return fail(x);
      say("Session ended.");
      loadSessions();
    }, t("End the session of {device}", { device: s.device || s.ip || s.id })));
    body.append(tr);
  }
}
// The security log from the audit trail, newest first, a page at a time.
let securityBefore = null;
function eventDetails(e) {
  const d = e.detail || {};
  const parts = [];
  if (d.device) parts.push(d.device);
  if (d.ip) parts.push(d.ip);
  if (d.new_device) parts.push(t("new device"));
  if (d.factor) parts.push(d.factor);
  if (d.old) parts.push(d.old);
  if (d.status) parts.push(t("status." + d.status, null, d.status));
  // Decimal strings as the API gives them ("1.00000000"), shown without trailing zeros.
  const trimmed = (s) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
  if (d.amount && d.asset) parts.push(`${trimmed(d.amount)} ${d.asset}`);
  else if (d.asset) parts.push(d.asset);
  if (d.address) parts.push(d.address);
  if (d.txid) parts.push(d.txid.slice(0, 16) + "…");
  if (d.reason) parts.push(d.reason);
  return parts.join(" · ");
}
async function loadSecurityLog(more) {
  const q = "/me/security-log?limit=20" + (more && securityBefore !== null ? "&before=" + securityBefore : "");
  const r = await api("GET", q);
  const body = $("security-log");
  if (!more) body.replaceChildren();
  if (!r.ok) return;
  for (const e of r.data.events) {
    const tr = document.createElement("tr");
    tr.dataset.kind = e.kind;
    cell(tr, when(e.at));
    cell(tr, t("event." + e.kind, null, e.kind));
    cell(tr, eventDetails(e));
    body.append(tr);
  }
  securityBefore = r.data.next_before ?? null;
  $("security-log-more").hidden = securityBefore === null;
  $("security-log-empty").hidden = body.children.length > 0;
}
$("security-log-more").onclick = () => loadSecurityLog(true);

$("sessions-end-others").onclick = async () => {
  const r = await withStepUp(t("end every other session"), "POST", "/me/sessions/revoke-others", {});
  if (!r.ok) return fail(r);
  say("Every other session was ended.");
  loadSessions();
};

async function loadKeys() {
  const r = await api("GET", "/me/api-keys");
  const body = $("keys");
  body.replaceChildren();
  if (!r.ok) return;
  for (const k of r.data) {
    const tr = document.createElement("tr");
    cell(tr, k.label || k.id);
    cell(tr, k.scopes.map((x) => t(x.charAt(0).toUpperCase() + x.slice(1))).join(", "));
    cell(tr, k.ip_allowlist.join(", ") || t("any"));
    cell(tr, when(k.expires_at));
    cell(tr, small(t("Revoke"), async () => {
      const x = await api("DELETE", "/me/api-keys/" + k.id);
      if (!x.ok) return fail(x);
      say("API key revoked.");
      loadKeys();
    }, t("Revoke key {label}", { label: k.label || k.id })));
    body.append(tr);
  }
}
$("key-form").onsubmit = async (e) => {
  e.preventDefault();
  const days = $("key-days").value.trim();
  const body = {
    label: $("key-label").value.trim(),
    scopes: { view: $("key-view").checked, trade: $("key-trade").checked, withdraw: $("key-withdraw").checked },
    ip_allowlist: $("key-ips").value.split(",").map((x) => x.trim()).filter(Boolean),
  };
  if (days) body.expires_in_days = /^[0-9]+$/.test(days) ? Number(days) : days;
  const r = await withStepUp(t("create an API key"), "POST", "/me/api-keys", body);
  if (!r.ok) return fail(r);
  $("key-secret").textContent = r.data.token;
  $("key-secret-box").hidden = false;
  $("key-label").value = "";
  say("API key created.");
  loadKeys();
};
$("password-form").onsubmit = async (e) => {
  e.preventDefault();
  const body = { current_password: $("pw-current").value, new_password: $("pw-new").value };
  const r = await withStepUp(t("change the password"), "POST", "/me/password", body);
  $("pw-current").value = "";
  $("pw-new").value = "";
  if (!r.ok) return fail(r);
  say("Password changed.");
  loadAccount();
};
// --- proof of liabilities ---------------------------------------------------------------

// Minor units (a decimal integer string) as a decimal with `places` places: string work only.
function units(s, places) {
  if (!places) return s;
  const p = s.padStart(places + 1, "0");
  return p.slice(0, p.length - places) + "." + p.slice(p.length - places);
}
function clearProofLink() {
  const a = $("proof-download");
  if (a.href && a.href.startsWith("blob:")) URL.revokeObjectURL(a.href);
  a.removeAttribute("href");
  a.hidden = true;
}
$("proof-form").onsubmit = async (e) => {
  e.preventDefault();
  const asset = $("proof-asset").value.trim().toUpperCase();
  const dl = $("proof-facts");
  dl.replaceChildren();
  clearProofLink();
  const r = await api("GET", "/account/proofs/" + encodeURIComponent(asset));
  if (!r.ok) return fail(r);
  const p = r.data;
  const root = p.root;
  fact(dl, "Asset", root.asset);
  fact(dl, "Your balance in the proof", units(p.balance, root.decimals));
  fact(dl, "Total of all customers", units(root.total, root.decimals));
  fact(dl, "Customers", String(root.leaves));
  fact(dl, "As of", when(root.time) + " (seq " + root.sequence + ")");
  fact(dl, "Root hash", root.root_hash);
  fact(dl, "Signed by", root.key + " " + root.public_key);
  const a = $("proof-download");
  a.href = URL.createObjectURL(new Blob([JSON.stringify(p, null, 2) + "\n"], { type: "application/json" }));
  a.download = "kinko-proof-" + root.asset + "-" + root.sequence + ".json";
  a.hidden = false;
};

$("lang-switch").onclick = () => kinkoI18n.setLang(kinkoI18n.lang === "ja" ? "en" : "ja", token);
kinkoI18n.apply();

(async function start() {
  if (location.pathname === "/freeze") {
    // One click: opening the link from the message freezes (a mail scanner that fetches the
    // link without running scripts does not).
    show("freeze");
    await freezeNow();
    return;
  }
  if (new URLSearchParams(location.hash.slice(1)).get("reset")) {
    show("reset");
    return;
  }
  if (token) await loadAccount();
  else show("signin");
})();
