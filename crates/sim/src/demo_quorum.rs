//! How the demo makes its traders' withdrawal addresses usable at once: the way any
//! installation must, as a two-person proposal (`AdminChange::WhitelistAddress`) that one admin
//! proposes and a second approves, each with a passkey assertion the engine verifies itself.
//!
//! The demo's admins get TOTP (a person signs in to the console with it and adds their own
//! passkey on the account page), so for the seeding each admin first gets a setup passkey: an
//! Ed25519 key held in memory by this process only, enrolled as the admin's first factor, used
//! for the sign-in, the proposals and approvals, and removed again (with its own assertion)
//! before the admin's TOTP is enrolled and the demo serves anyone. No private key outlives the
//! seeding, and no TOTP step is spent on it.

use crate::demo::run;
use ed25519_dalek::Signer as _;
use kinko_api::AppState;
use kinko_core::admin::AdminChange;
use kinko_core::engine::{Command, Reply};
use kinko_core::identity::{
    challenge_bytes, Action, FactorRef, IdentityCommand, Passkey, ProofFactor, SessionLevel, StepUp, Via,
};
use kinko_core::{AssetId, UserId};
use sha2::{Digest, Sha256};

/// How long the seeding's admin sessions may live (they are closed when it is done).
const SESSION_NS: u64 = 600 * 1_000_000_000;

/// One admin's setup passkey and the session it signed in with.
struct SetupKey {
    user: UserId,
    key: ed25519_dalek::SigningKey,
    credential_id: Vec<u8>,
    count: u32,
    session: [u8; 32],
}

impl SetupKey {
    /// An assertion over the step-up challenge for `action`, as an authenticator at the engine's
    /// relying party's first origin would make it.
    fn proof(&mut self, g: &AppState, action: &Action) -> anyhow::Result<StepUp> {
        let rp = g
            .read
            .model()
            .engine
            .identity()
            .relying_party()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the engine has no relying party yet"))?;
        let origin = rp.origins.first().cloned().unwrap_or_default();
        let issued_ns = kinko_api::auth::now_ns();
        let nonce = kinko_api::vault::random_bytes::<16>();
        let challenge = challenge_bytes(issued_ns, &nonce, &action.digest());
        self.count += 1;
        let mut authenticator_data = Sha256::digest(rp.id.as_bytes()).to_vec();
        authenticator_data.push(0x05); // user present, user verified
        authenticator_data.extend_from_slice(&self.count.to_be_bytes());
        let client_data_json = serde_json::json!({
            "type": "webauthn.get",
            "challenge": b64url(&challenge),
            "origin": origin,
        })
        .to_string()
        .into_bytes();
        let signed = [&authenticator_data[..], &Sha256::digest(&client_data_json)[..]].concat();
        Ok(StepUp {
            action: action.digest(),
            issued_ns,
            nonce,
            factor: ProofFactor::Passkey {
                credential_id: self.credential_id.clone(),
                authenticator_data,
                client_data_json,
                signature: self.key.sign(&signed).to_bytes().to_vec(),
            },
        })
    }
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Whitelists each `(user, asset, address)` usable at once by a proposal of `admins[0]` that
/// `admins[1]` approves. The admins must have no factor yet: the setup passkey is their first
/// (so no TOTP step is spent on it), and they have none again when this returns.
pub(crate) async fn whitelist(
    g: &AppState,
    admins: [UserId; 2],
    wallets: &[(UserId, AssetId, String)],
) -> anyhow::Result<()> {
    if wallets.is_empty() {
        return Ok(());
    }
    let [first, second] = admins;
    let mut a = setup_key(g, first).await?;
    let mut b = setup_key(g, second).await?;
    for (user, asset, address) in wallets {
        let change = AdminChange::WhitelistAddress {
            user: *user,
            asset: *asset,
            address: address.clone(),
            label: "demo wallet".into(),
            cooling_ns: 0,
        };
        let action = Action::ProposeChange {
            user: a.user,
            change: change.digest(),
        };
        let proof = a.proof(g, &action)?;
        let id = match run(
            g,
            Command::ProposeChange {
                by: a.user,
                change: change.clone(),
                reason: "demo: the demo trader's wallet, usable at once".into(),
                via: Via::Session(a.session),
                proof,
            },
        )
        .await?
        {
            Reply::Proposal(p) => p.id,
            other => anyhow::bail!("unexpected reply to a demo proposal: {other:?}"),
        };
        let action = Action::ApproveChange {
            user: b.user,
            proposal: id,
            change: change.digest(),
        };
        let proof = b.proof(g, &action)?;
        run(
            g,
            Command::ApproveChange {
                id,
                by: b.user,
                via: Via::Session(b.session),
                proof,
            },
        )
        .await?;
    }
    for k in [a, b] {
        retire(g, k).await?;
    }
    Ok(())
}

/// Enrols a setup passkey as `user`'s first factor and signs in with it.
async fn setup_key(g: &AppState, user: UserId) -> anyhow::Result<SetupKey> {
    let key = ed25519_dalek::SigningKey::from_bytes(&kinko_api::vault::random_bytes::<32>());
    let credential_id = kinko_api::vault::random_bytes::<16>().to_vec();
    let public_key = [&[2u8][..], key.verifying_key().as_bytes()].concat();
    run(
        g,
        Command::Identity(IdentityCommand::EnrolPasskey {
            user,
            passkey: Passkey {
                credential_id: credential_id.clone(),
                public_key,
                sign_count: 0,
                label: "demo setup key".into(),
                created_ns: 0,
            },
            proof: None,
            recovery: Vec::new(),
        }),
    )
    .await?;
    let mut k = SetupKey {
        user,
        key,
        credential_id,
        count: 0,
        session: kinko_api::vault::random_bytes::<32>(),
    };
    let password_hash_digest = {
        let m = g.read.model();
        let u = m
            .engine
            .identity()
            .user(user)
            .ok_or_else(|| anyhow::anyhow!("demo admin {}", user.0))?;
        *blake3::hash(u.password_hash.as_bytes()).as_bytes()
    };
    let password_session = kinko_api::vault::random_bytes::<32>();
    let expires_ns = kinko_api::auth::now_ns() + SESSION_NS;
    run(
        g,
        Command::Identity(IdentityCommand::OpenSession {
            user,
            token_hash: password_session,
            level: SessionLevel::Password,
            expires_ns,
            device: "demo setup".into(),
            ip: "127.0.0.1".into(),
            password_hash_digest,
        }),
    )
    .await?;
    let proof = k.proof(
        g,
        &Action::Login {
            user,
            session: password_session,
        },
    )?;
    run(
        g,
        Command::Identity(IdentityCommand::CompleteLogin {
            token_hash: password_session,
            new_token_hash: k.session,
            expires_ns,
            proof,
        }),
    )
    .await?;
    Ok(k)
}

/// Removes the setup passkey (with its own assertion) and ends its session.
async fn retire(g: &AppState, mut k: SetupKey) -> anyhow::Result<()> {
    let action = Action::RemovePasskey {
        user: k.user,
        credential_id: k.credential_id.clone(),
    };
    let proof = k.proof(g, &action)?;
    run(
        g,
        Command::Identity(IdentityCommand::RemoveFactor {
            user: k.user,
            factor: FactorRef::Passkey(k.credential_id.clone()),
            proof,
        }),
    )
    .await?;
    run(
        g,
        Command::Identity(IdentityCommand::CloseSession {
            token_hash: k.session,
        }),
    )
    .await?;
    Ok(())
}
