//! The console's signer ceremony section in a real headless Chromium against a real gateway: an
//! admin with a passkey made by the tab's virtual authenticator shows their admin record for
//! `kinko-signer init --admin` (the passkey's public values, as the engine holds them), pastes
//! a challenge as `kinko-signer … --print-challenge` prints it, sees its digest, and gets an
//! assertion file that verifies with `kinko_factors::webauthn` (what the signer runs) against
//! that record's key, over exactly that challenge.

use crate::browser::Browser;
use crate::console::{click, console_sign_in, enrol, eval, fill, notice, set_roles, text, wait_for};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kinko_api::webauthn::{self, AssertionResponse, AuthenticatorAssertion, CredentialKey, RelyingParty};
use kinko_core::identity::challenge_bytes;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_signs_a_signer_ceremony_challenge_with_their_passkey() {
    let s = crate::harness::TestServer::start(0).await;
    let mut admin = s.register("admin-ceremony@kinko.test").await;
    set_roles(&s, &admin).await;
    let mut b = Browser::launch().await.unwrap_or_else(|e| {
        panic!("chromium is needed for the console test: run scripts/install-test-deps ({e})")
    });
    let page = b.new_page().await.unwrap();
    b.add_virtual_authenticator(&page).await.unwrap();
    enrol(&mut b, &page, &s, &mut admin, false).await;
    console_sign_in(&mut b, &page, &s, &admin).await;

    // The admin record, as the signer reads it.
    click(&mut b, &page, "#ceremony-enrol").await;
    let record = wait_for(
        &mut b,
        &page,
        "document.getElementById('ceremony-record').value",
        "the admin record",
    )
    .await;
    let record: Value = serde_json::from_str(record.as_str().unwrap()).unwrap();
    assert_eq!(record["id"], json!(admin.id.0));
    assert_eq!(record["email"], json!(admin.email));
    let credential_id = hex::decode(record["credential_id"].as_str().unwrap()).unwrap();
    let key = CredentialKey::from_bytes(&hex::decode(record["public_key"].as_str().unwrap()).unwrap())
        .expect("the record's key is one the signer reads");

    // Something that is no signer challenge is refused on the page.
    fill(&mut b, &page, "#ceremony-challenge", "not-a-challenge").await;
    click(&mut b, &page, "#ceremony-sign").await;
    notice(&mut b, &page, "CHALLENGE_INVALID").await;

    // A ceremony challenge: the page shows its digest, the passkey signs it.
    let digest: [u8; 32] = std::array::from_fn(|i| i as u8 + 7);
    let nonce = [9u8; 16];
    let issued_ns = 1_800_000_000_000_000_000;
    let challenge = challenge_bytes(issued_ns, &nonce, &digest);
    let challenge_text = URL_SAFE_NO_PAD.encode(challenge);
    fill(&mut b, &page, "#ceremony-challenge", &challenge_text).await;
    eval(
        &mut b,
        &page,
        "document.getElementById('ceremony-challenge').dispatchEvent(new Event('input'))",
    )
    .await;
    assert_eq!(
        text(&mut b, &page, "#ceremony-digest").await,
        json!(hex::encode(digest))
    );
    click(&mut b, &page, "#ceremony-sign").await;
    notice(&mut b, &page, "Assertion made").await;
    let file = wait_for(
        &mut b,
        &page,
        "document.getElementById('ceremony-assertion').value",
        "the assertion file",
    )
    .await;
    let file: Value = serde_json::from_str(file.as_str().unwrap()).unwrap();
    assert_eq!(file["challenge"], json!(challenge_text));
    let field = |name: &str| file[name].as_str().unwrap().to_owned();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(field("credential_id")).unwrap(),
        credential_id
    );
    let rp = RelyingParty {
        id: "localhost".into(),
        name: "kinko".into(),
        origins: vec![s.origin.clone()],
    };
    let resp = AssertionResponse {
        id: field("credential_id"),
        raw_id: field("credential_id"),
        type_: "public-key".into(),
        response: AuthenticatorAssertion {
            client_data_json: field("client_data_json"),
            authenticator_data: field("authenticator_data"),
            signature: field("signature"),
            user_handle: None,
        },
    };
    webauthn::verify_assertion(&rp, &challenge, &key, 0, &resp).expect("the signer's check accepts it");
    // Over another challenge it does not verify.
    let other = challenge_bytes(issued_ns, &nonce, &[0u8; 32]);
    assert!(webauthn::verify_assertion(&rp, &other, &key, 0, &resp).is_err());

    b.close_page(page).await.unwrap();
    drop(b);
    s.stop().await;
}
