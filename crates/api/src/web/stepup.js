// kinko step-up, shared by the account page (app.js) and the operators' console (console.js):
// the dialog that asks for a second factor when the API answers STEP_UP_REQUIRED (an
// authenticator-app code, a passkey, or a recovery code where the server offers one), and the
// WebAuthn helpers (base64url, options in, credentials out). Loaded before the page's script;
// everything it offers is on `kinkoStepUp`. It needs the page's `#stepup` dialog with the
// `stepup-*` elements (what, code-label, code, recovery-label, recovery, totp, passkey, cancel).
"use strict";

const kinkoStepUp = (() => {
  const $ = (id) => document.getElementById(id);

  const b64u = {
    enc(buf) {
      const b = new Uint8Array(buf);
      let s = "";
      for (const x of b) s += String.fromCharCode(x);
      return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    },
    dec(s) {
      const t = s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4);
      const bin = atob(t);
      const out = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
      return out.buffer;
    },
  };

  // WebAuthn JSON (binary fields base64url) <-> browser objects.
  function creationOptions(o) {
    const p = structuredClone(o);
    p.challenge = b64u.dec(o.challenge);
    p.user.id = b64u.dec(o.user.id);
    p.excludeCredentials = (o.excludeCredentials || []).map((c) => ({ ...c, id: b64u.dec(c.id) }));
    return p;
  }
  function requestOptions(o) {
    const p = structuredClone(o);
    p.challenge = b64u.dec(o.challenge);
    p.allowCredentials = (o.allowCredentials || []).map((c) => ({ ...c, id: b64u.dec(c.id) }));
    return p;
  }
  function registrationJSON(c) {
    return {
      id: c.id, rawId: b64u.enc(c.rawId), type: c.type,
      response: {
        clientDataJSON: b64u.enc(c.response.clientDataJSON),
        attestationObject: b64u.enc(c.response.attestationObject),
      },
    };
  }
  function assertionJSON(c) {
    const r = c.response;
    return {
      id: c.id, rawId: b64u.enc(c.rawId), type: c.type,
      response: {
        clientDataJSON: b64u.enc(r.clientDataJSON),
        authenticatorData: b64u.enc(r.authenticatorData),
        signature: b64u.enc(r.signature),
        userHandle: r.userHandle ? b64u.enc(r.userHandle) : null,
      },
    };
  }

  // The passkey's answer to `stepUp` (a STEP_UP_REQUIRED `step_up` or a login's second factor).
  async function passkeyAnswer(stepUp) {
    const cred = await navigator.credentials.get({ publicKey: requestOptions(stepUp.webauthn) });
    return { challenge: stepUp.challenge, webauthn: assertionJSON(cred) };
  }

  // An admin's passkey assertion over a signer ceremony challenge (base64url of the step-up
  // challenge `kinko-signer … --print-challenge` printed): the assertion file the signer's
  // operator hands to `kinko-signer … --assertion FILE`.
  async function signerAssertion(challenge) {
    const cred = await navigator.credentials.get({
      publicKey: { challenge: b64u.dec(challenge), userVerification: "required", timeout: 120000 },
    });
    const r = cred.response;
    return {
      challenge,
      credential_id: b64u.enc(cred.rawId),
      authenticator_data: b64u.enc(r.authenticatorData),
      client_data_json: b64u.enc(r.clientDataJSON),
      signature: b64u.enc(r.signature),
    };
  }

  // What a signer challenge says: its issue time (ms since the epoch) and the digest (hex), for
  // the admin to compare with what the signer's operator printed; null if it is not one.
  function parseSignerChallenge(challenge) {
    let b;
    try { b = new Uint8Array(b64u.dec(challenge)); } catch (e) { return null; }
    if (b.length !== 60 || String.fromCharCode(...b.slice(0, 4)) !== "KSU1") return null;
    let ns = 0n;
    for (const x of b.slice(4, 12)) ns = (ns << 8n) | BigInt(x);
    const digest = Array.from(b.slice(28), (x) => x.toString(16).padStart(2, "0")).join("");
    return { issuedMs: Number(ns / 1000000n), digest };
  }

  // Empties the dialog's fields: a code must not wait there for the next question.
  function clearFields() {
    $("stepup-code").value = "";
    $("stepup-recovery").value = "";
  }

  // Asks for a second factor for `stepUp` (the STEP_UP_REQUIRED answer's `step_up`), offering
  // only the methods it names. Resolves to the `step_up` answer, `{ error }` when the passkey
  // failed, or null when cancelled.
  function askSecondFactor(what, stepUp) {
    const d = $("stepup");
    $("stepup-what").textContent = what;
    const m = stepUp.methods || [];
    $("stepup-code-label").hidden = !m.includes("totp");
    $("stepup-recovery-label").hidden = !m.includes("recovery_code");
    $("stepup-totp").hidden = !(m.includes("totp") || m.includes("recovery_code"));
    $("stepup-passkey").hidden = !m.includes("webauthn");
    clearFields();
    return new Promise((resolve) => {
      d.onclose = async () => {
        const how = d.returnValue;
        const code = $("stepup-code").value.trim();
        const recovery = $("stepup-recovery").value.trim();
        clearFields();
        if (how === "webauthn") {
          try { resolve(await passkeyAnswer(stepUp)); } catch (e) { resolve({ error: String(e) }); }
        } else if (how === "totp" && recovery) {
          resolve({ recovery_code: recovery });
        } else if (how === "totp") {
          resolve({ challenge: stepUp.challenge, totp: code });
        } else {
          resolve(null);
        }
      };
      // Escape closes the dialog without touching returnValue: clear the previous answer, or
      // Escape would repeat it (and confirm the action) instead of cancelling.
      d.returnValue = "";
      d.showModal();
    });
  }

  // Sends a sensitive request with the page's `api(method, path, body)`; on STEP_UP_REQUIRED
  // asks for the second factor and sends it again with the answer.
  async function withStepUp(api, what, method, path, body) {
    let r = await api(method, path, body);
    if (r.status === 403 && r.data && r.data.code === "STEP_UP_REQUIRED") {
      const answer = await askSecondFactor(what, r.data.step_up);
      if (!answer) return { ok: false, data: { code: "CANCELLED", message: "cancelled" } };
      if (answer.error) return { ok: false, data: { code: "WEBAUTHN_FAILED", message: answer.error } };
      r = await api(method, path, { ...body, step_up: answer });
    }
    return r;
  }

  return Object.freeze({
    creationOptions, registrationJSON, passkeyAnswer, withStepUp, signerAssertion, parseSignerChallenge,
  });
})();
