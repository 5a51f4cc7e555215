//! A real browser: passkey registration and sign-in run in headless Chromium (with a CDP
//! virtual authenticator, through the client in `cdp.rs`) against `kinko_api::webauthn`.

pub use crate::cdp::{Browser, Page};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use kinko_api::webauthn::{
    creation_options, request_options, verify_assertion, verify_registration, AssertionResponse,
    CredentialKey, RegistrationResponse, RelyingParty, WebauthnError,
};
use serde_json::{json, Value};

/// The test page: base64url ↔ ArrayBuffer, and the two ceremonies returning the credential in
/// the `PublicKeyCredential.toJSON()` shape (written out here rather than relying on toJSON).
const PASSKEY_PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>kinko passkeys</title></head>
<body>
<h1>kinko passkeys</h1>
<script>
function fromB64url(s) {
  s = s.replace(/-/g, "+").replace(/_/g, "/");
  while (s.length % 4) s += "=";
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}
function toB64url(buf) {
  const bytes = new Uint8Array(buf);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function descriptors(list) {
  return (list || []).map(d => ({ ...d, id: fromB64url(d.id) }));
}
async function kinkoRegister(o) {
  const publicKey = {
    ...o,
    challenge: fromB64url(o.challenge),
    user: { ...o.user, id: fromB64url(o.user.id) },
    excludeCredentials: descriptors(o.excludeCredentials),
  };
  const c = await navigator.credentials.create({ publicKey });
  return {
    id: c.id, rawId: toB64url(c.rawId), type: c.type,
    response: {
      clientDataJSON: toB64url(c.response.clientDataJSON),
      attestationObject: toB64url(c.response.attestationObject),
    },
  };
}
async function kinkoSignIn(o) {
  const publicKey = {
    ...o,
    challenge: fromB64url(o.challenge),
    allowCredentials: descriptors(o.allowCredentials),
  };
  const c = await navigator.credentials.get({ publicKey });
  return {
    id: c.id, rawId: toB64url(c.rawId), type: c.type,
    response: {
      clientDataJSON: toB64url(c.response.clientDataJSON),
      authenticatorData: toB64url(c.response.authenticatorData),
      signature: toB64url(c.response.signature),
      userHandle: c.response.userHandle ? toB64url(c.response.userHandle) : null,
    },
  };
}
</script>
</body>
</html>
"#;

/// Serves the test page on 127.0.0.1; the page is opened as `http://localhost:PORT` because
/// WebAuthn refuses IP-address origins (and `localhost` is a secure context without TLS).
async fn serve_page() -> (u16, tokio::task::JoinHandle<()>) {
    let app = Router::new().route("/", get(|| async { Html(PASSKEY_PAGE) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, server)
}

fn challenge() -> Vec<u8> {
    let mut c = vec![0u8; 32];
    getrandom::fill(&mut c).unwrap();
    c
}

/// A browser on the test page with a virtual authenticator, and the relying party it talks to.
async fn passkey_browser() -> (Browser, Page, RelyingParty, tokio::task::JoinHandle<()>) {
    let (port, server) = serve_page().await;
    let origin = format!("http://localhost:{port}");
    let rp = RelyingParty {
        id: "localhost".into(),
        name: "kinko test".into(),
        origins: vec![origin.clone()],
    };
    let mut b = Browser::launch()
        .await
        .expect("chromium is needed for the browser tests: run scripts/install-test-deps");
    let page = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&page).await.unwrap();
    b.navigate(&page, &format!("{origin}/")).await.unwrap();
    assert_eq!(b.eval(&page, "location.origin").await.unwrap(), json!(origin));
    assert_eq!(
        b.eval(&page, "window.isSecureContext").await.unwrap(),
        json!(true)
    );
    (b, page, rp, server)
}

async fn register(b: &mut Browser, page: &Page, options: &Value) -> Result<RegistrationResponse, String> {
    let response = b.eval(page, &format!("kinkoRegister({options})")).await?;
    Ok(serde_json::from_value(response).unwrap())
}

async fn sign_in(b: &mut Browser, page: &Page, options: &Value) -> AssertionResponse {
    let response = b.eval(page, &format!("kinkoSignIn({options})")).await.unwrap();
    serde_json::from_value(response).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_register_and_sign_in_es256() {
    let (mut b, page, rp, server) = passkey_browser().await;
    let user = b"user-handle-0001";

    // Registration: the options go to the browser as they are, the response comes back.
    let c1 = challenge();
    let options = creation_options(&rp, user, "alice@example.com", &c1, &[]);
    let reg = register(&mut b, &page, &options).await.unwrap();
    let cred = verify_registration(&rp, &c1, &reg).unwrap();
    assert!(matches!(cred.key, CredentialKey::Es256 { .. }));
    assert!(cred.user_verified);
    assert_eq!(
        verify_registration(&rp, &challenge(), &reg),
        Err(WebauthnError::ChallengeMismatch)
    );
    // The engine stores the key as opaque bytes.
    let key = CredentialKey::from_bytes(&cred.key.to_bytes()).unwrap();

    // The browser refuses a second registration of an excluded credential.
    let again = creation_options(
        &rp,
        user,
        "alice@example.com",
        &challenge(),
        std::slice::from_ref(&cred.credential_id),
    );
    let refused = register(&mut b, &page, &again).await.unwrap_err();
    assert!(refused.contains("InvalidStateError"), "{refused}");

    // Sign-in with the credential named.
    let ca = challenge();
    let options = request_options(&rp, &ca, std::slice::from_ref(&cred.credential_id));
    let asr = sign_in(&mut b, &page, &options).await;
    assert_eq!(asr.credential_id().unwrap(), cred.credential_id);
    let ok = verify_assertion(&rp, &ca, &key, cred.sign_count, &asr).unwrap();
    assert_eq!(ok.credential_id, cred.credential_id);
    assert!(ok.user_verified);
    assert!(ok.sign_count > cred.sign_count);

    // The same assertion for another challenge, another origin, or replayed.
    let cb = challenge();
    assert_eq!(
        verify_assertion(&rp, &cb, &key, cred.sign_count, &asr),
        Err(WebauthnError::ChallengeMismatch)
    );
    let port = rp.origins[0].rsplit(':').next().unwrap();
    let port: u16 = port.parse().unwrap();
    let other_port = if port == u16::MAX { port - 1 } else { port + 1 };
    let other = RelyingParty {
        origins: vec![format!("http://localhost:{other_port}")],
        ..rp.clone()
    };
    assert_eq!(
        verify_assertion(&other, &ca, &key, cred.sign_count, &asr),
        Err(WebauthnError::OriginMismatch)
    );
    let other = RelyingParty {
        id: "example.com".into(),
        ..rp.clone()
    };
    assert_eq!(
        verify_assertion(&other, &ca, &key, cred.sign_count, &asr),
        Err(WebauthnError::RpIdMismatch)
    );
    assert_eq!(
        verify_assertion(&rp, &ca, &key, ok.sign_count, &asr),
        Err(WebauthnError::CounterNotIncreased)
    );
    // A registration response is not a sign-in.
    let mut swapped = asr.clone();
    swapped.response.client_data_json = reg.response.client_data_json.clone();
    assert_eq!(
        verify_assertion(&rp, &c1, &key, cred.sign_count, &swapped),
        Err(WebauthnError::TypeMismatch)
    );

    // Sign-in with a discoverable credential: no allow list, the user handle comes back.
    let cc = challenge();
    let options = request_options(&rp, &cc, &[]);
    let asr = sign_in(&mut b, &page, &options).await;
    assert_eq!(asr.user_handle().unwrap(), Some(user.to_vec()));
    let next = verify_assertion(&rp, &cc, &key, ok.sign_count, &asr).unwrap();
    assert!(next.sign_count > ok.sign_count);

    let shots = tempfile::tempdir().unwrap();
    let png = shots.path().join("passkeys.png");
    b.screenshot(&page, &png).await.unwrap();
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
    b.close_page(page).await.unwrap();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_register_and_sign_in_ed25519() {
    let (mut b, page, rp, server) = passkey_browser().await;
    let c1 = challenge();
    let mut options = creation_options(&rp, b"user-handle-0002", "bob", &c1, &[]);
    // Only EdDSA offered, so the authenticator must make an Ed25519 key.
    options["pubKeyCredParams"] = json!([{ "type": "public-key", "alg": -8 }]);
    let reg = register(&mut b, &page, &options).await.unwrap();
    let cred = verify_registration(&rp, &c1, &reg).unwrap();
    assert!(matches!(cred.key, CredentialKey::Ed25519 { .. }));

    let ca = challenge();
    let asr = sign_in(
        &mut b,
        &page,
        &request_options(&rp, &ca, std::slice::from_ref(&cred.credential_id)),
    )
    .await;
    let ok = verify_assertion(&rp, &ca, &cred.key, cred.sign_count, &asr).unwrap();
    assert!(ok.sign_count > cred.sign_count);
    assert_eq!(
        verify_assertion(&rp, &challenge(), &cred.key, cred.sign_count, &asr),
        Err(WebauthnError::ChallengeMismatch)
    );
    server.abort();
}
