// kinko customer pages (markets, trade, wallet): the session, calls to /api/v1, the sign-in
// dialog, the header and formatting. Loaded after i18n.js, dec.js and stepup.js; everything is
// on `kinko`.
//
// The session token lives in this tab's sessionStorage (never localStorage: it ends with the
// tab). A call that finds the session gone says so and opens the sign-in dialog over the page;
// the page's forms stay as they were, so nothing typed is lost, and the call is made again
// after sign-in.
"use strict";

const kinko = (() => {
  const $ = (id) => document.getElementById(id);
  const { t } = kinkoI18n;
  let token = sessionStorage.getItem("kinko.token");
  let waiting = null; // the open sign-in: a promise resolving once signed in
  let onSignedIn = () => {};
  const sessionListeners = [];
  // `f` runs after every sign-in through the dialog (a page's WebSocket authenticates again).
  function onSession(f) {
    sessionListeners.push(f);
  }

  function setToken(v) {
    token = v;
    if (v) sessionStorage.setItem("kinko.token", v);
    else sessionStorage.removeItem("kinko.token");
  }
  const signedIn = () => !!token;

  function say(text, error) {
    const n = $("notice");
    if (!n) return;
    n.textContent = text || "";
    n.className = error ? "error" : "";
  }

  // The API's refusal in words: the code's sentence in the page's language, then the server's.
  function refusal(r) {
    const d = r.data || {};
    const words = t("code." + d.code, null, "");
    return words ? `${words} (${d.code})` : `${d.code || r.status}: ${d.message || ""}`;
  }
  function fail(r) {
    say(refusal(r), true);
  }

  async function raw(method, path, body) {
    const headers = {};
    if (token) headers["Authorization"] = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch("/api/v1" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      return { status: 0, ok: false, data: { code: "NETWORK", message: String(e) } };
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { code: "BAD_RESPONSE", message: text }; }
    return { status: res.status, ok: res.ok, data };
  }

  // A call to /api/v1; a private call without a live session signs in first and is repeated.
  async function api(method, path, body, { open = false } = {}) {
    if (!open && !token) await signIn(false);
    let r = await raw(method, path, body);
    if (!open && r.status === 401) {
      setToken(null);
      await signIn(true);
      r = await raw(method, path, body);
    }
    return r;
  }

  function withStepUp(what, method, path, body) {
    return kinkoStepUp.withStepUp((m, p, b) => api(m, p, b), what, method, path, body);
  }

  // --- the sign-in dialog ----------------------------------------------------------------

  let second = null;
  function signInView(which) {
    $("si-password-step").hidden = which !== "password";
    $("si-second-step").hidden = which !== "second";
  }
  function signIn(lost) {
    if (waiting) return waiting;
    const d = $("signin-dialog");
    $("si-lost").hidden = !lost;
    $("si-error").textContent = "";
    signInView("password");
    waiting = new Promise((resolve) => {
      onSignedIn = () => {
        waiting = null;
        $("si-password").value = "";
        $("si-code").value = "";
        d.close();
        renderWho();
        for (const f of sessionListeners) f();
        resolve();
      };
    });
    if (!d.open) d.showModal();
    $("si-email").focus();
    return waiting;
  }
  function siError(r) {
    $("si-error").textContent = r.data ? refusal(r) : String(r);
  }
  async function afterLogin(r) {
    if (!r.ok) return siError(r);
    $("si-password").value = "";
    setToken(r.data.token);
    if (r.data.level === "password") {
      second = r.data.second_factor || {};
      const m = second.methods || [];
      $("si-code-label").hidden = !m.includes("totp");
      $("si-totp").hidden = !m.includes("totp");
      $("si-passkey").hidden = !m.includes("webauthn");
      signInView("second");
      return;
    }
    onSignedIn();
  }
  async function completeSecond(stepUp) {
    const r = await raw("POST", "/auth/login/second-factor", { step_up: stepUp });
    if (!r.ok) return siError(r);
    setToken(r.data.token);
    onSignedIn();
  }
  function creds() {
    return { email: $("si-email").value.trim(), password: $("si-password").value };
  }
  const device = () => navigator.userAgent.slice(0, 60);

  function wireSignIn() {
    $("si-form").onsubmit = async (e) => {
      e.preventDefault();
      await afterLogin(await raw("POST", "/auth/login", { ...creds(), device: device() }));
    };
    $("si-register").onclick = async () => {
      if (!$("si-form").reportValidity()) return;
      const r = await raw("POST", "/auth/register", creds());
      if (!r.ok) return siError(r);
      await afterLogin(await raw("POST", "/auth/login", { ...creds(), device: device() }));
    };
    $("si-second-form").onsubmit = async (e) => {
      e.preventDefault();
      await completeSecond({ challenge: second.challenge, totp: $("si-code").value.trim() });
    };
    $("si-passkey").onclick = async () => {
      try { await completeSecond(await kinkoStepUp.passkeyAnswer(second)); } catch (e) { siError(String(e)); }
    };
    // The dialog cannot be dismissed while a call waits for it: Escape does nothing.
    $("signin-dialog").addEventListener("cancel", (e) => e.preventDefault());
  }

  // --- the header ------------------------------------------------------------------------

  async function renderWho() {
    const who = $("who");
    const out = $("signout");
    if (!token) { who.textContent = ""; out.hidden = true; $("signin-open").hidden = false; return; }
    $("signin-open").hidden = true;
    out.hidden = false;
    const r = await raw("GET", "/me");
    who.textContent = r.ok ? r.data.email : "";
  }
  function wireHeader() {
    for (const a of document.querySelectorAll("nav a")) {
      if (location.pathname === a.getAttribute("href") || location.pathname.startsWith(a.dataset.prefix || "\u0000")) {
        a.setAttribute("aria-current", "page");
      }
    }
    $("lang-switch").onclick = () => kinkoI18n.setLang(kinkoI18n.lang === "ja" ? "en" : "ja", token);
    $("signout").onclick = async () => {
      await raw("POST", "/auth/logout");
      setToken(null);
      location.reload();
    };
    $("signin-open").onclick = async () => { await signIn(false); location.reload(); };
    renderWho();
  }

  // --- formatting -------------------------------------------------------------------------

  // A decimal string grouped by thousands (both languages group by 3 with ","), padded to
  // `minPlaces`.
  function num(s, minPlaces = 0) {
    if (s === null || s === undefined || s === "") return "–";
    return kinkoDec.group(s, minPlaces);
  }
  // Basis points as a percentage with two places ("+1.25%"), integers only.
  function pct(bps, signed = false) {
    if (bps === null || bps === undefined) return "–";
    const sign = bps > 0 ? (signed ? "+" : "") : bps < 0 ? "−" : "";
    const a = Math.abs(bps);
    return `${sign}${Math.trunc(a / 100)}.${String(a % 100).padStart(2, "0")}%`;
  }
  function date(iso) {
    if (!iso) return "–";
    return new Intl.DateTimeFormat(kinkoI18n.lang, { dateStyle: "medium", timeStyle: "medium" }).format(new Date(iso));
  }
  function time(iso) {
    return new Intl.DateTimeFormat(kinkoI18n.lang, { timeStyle: "medium" }).format(new Date(iso));
  }
  // Table rows from a list: each row a list of cell texts or nodes.
  // Rows of a table; a cell is aligned as numbers where its column's header is (`th.num`).
  function rows(tbody, list, cells) {
    tbody.replaceChildren();
    const head = tbody.closest("table")?.tHead?.rows[0];
    for (const x of list) {
      const tr = document.createElement("tr");
      for (const c of cells(x)) {
        const td = document.createElement("td");
        if (head && head.cells[tr.cells.length]?.classList.contains("num")) td.className = "num";
        if (c instanceof Node) td.append(c);
        else td.textContent = c;
        tr.append(td);
      }
      tbody.append(tr);
    }
  }
  function button(text, onclick, label) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    if (label) b.setAttribute("aria-label", label);
    b.onclick = onclick;
    return b;
  }

  function start() {
    kinkoI18n.apply();
    wireSignIn();
    wireHeader();
  }

  return Object.freeze({
    $, api, raw, withStepUp, onSession, say, fail, refusal, signIn, signedIn, token: () => token, setToken,
    num, pct, date, time, rows, button, start,
  });
})();
