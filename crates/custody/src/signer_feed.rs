//! The signer's own registry, fed from kinko's committed state: every second factor (passkey,
//! TOTP secret) and whitelisted withdrawal address, each with the user's approval, and the
//! factors a user removed, with their removal proof. One feed per signer: a Litecoin signer's
//! one asset, an Ethereum signer's ETH and tokens.

use crate::error::CustodyError;
use crate::service::refusal;
use kinko_core::{AssetId, UserId};
use kinko_engine::link::EngineLink;
use kinko_engine::ports::SecretOpener;
use kinko_signer_proto::client::SignerClient;
use kinko_signer_proto::protocol::{Request, Response, SecretBytes};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First pause before a registration the signer refused is tried again (doubling).
const REGISTRATION_RETRY: Duration = Duration::from_secs(30);
/// Longest pause between tries of a refused registration.
const REGISTRATION_RETRY_MAX: Duration = Duration::from_secs(3_600);

/// What one signer has been told this run.
pub struct SignerFeed {
    socket: PathBuf,
    link: EngineLink,
    /// Opens the sealed TOTP secrets the signer must learn (none: TOTP secrets are not sent).
    vault: Option<Arc<dyn SecretOpener>>,
    /// What the signer has been told, so that each registration goes once per run.
    registered: BTreeSet<String>,
    /// Registrations the signer refused: tried again after a growing pause (attempts, when).
    refused: BTreeMap<String, (u32, Instant)>,
}

impl std::fmt::Debug for SignerFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerFeed")
            .field("socket", &self.socket)
            .field("registered", &self.registered.len())
            .field("refused", &self.refused.len())
            .finish_non_exhaustive()
    }
}

impl SignerFeed {
    pub fn new(socket: PathBuf, link: EngineLink, vault: Option<Arc<dyn SecretOpener>>) -> SignerFeed {
        SignerFeed {
            socket,
            link,
            vault,
            registered: BTreeSet::new(),
            refused: BTreeMap::new(),
        }
    }

    /// Tells the signer every withdrawal address of `assets` and every second factor it does
    /// not know yet. The signer timestamps them itself and will not use them before its own
    /// waiting periods.
    pub fn register(&mut self, assets: &[AssetId]) -> Result<(), CustodyError> {
        use kinko_core::identity::Action;
        // Factors gone from committed state (removed, or a platform revocation) are forgotten
        // at the signer with the user's own removal proof; the signer refuses a forget without
        // one, so a factor revoked without the user's proof stays there (only its owner's
        // device can use it).
        let current: BTreeSet<String> = self.link.view(|e| {
            let mut keys = BTreeSet::new();
            for u in e.identity().users() {
                for p in &u.passkeys {
                    keys.insert(format!("passkey/{}/{}", u.id.0, hex_of(&p.credential_id)));
                }
                if let Some(t) = &u.totp {
                    keys.insert(format!("totp/{}/{}", u.id.0, t.created_ns));
                }
            }
            keys
        });
        let stale: Vec<String> = self
            .registered
            .iter()
            .filter(|k| (k.starts_with("passkey/") || k.starts_with("totp/")) && !current.contains(*k))
            .cloned()
            .collect();
        // Forgets first, then passkeys (a later factor or address is approved by one), then
        // TOTP secrets, then addresses.
        let mut todo: Vec<(String, Request)> = Vec::new();
        self.link.view(|e| {
            for key in &stale {
                let mut parts = key.split('/');
                let (kind, user, id) = (parts.next(), parts.next(), parts.next());
                let Some(user) = user.and_then(|u| u.parse::<u64>().ok()) else {
                    continue;
                };
                let action = match (kind, id) {
                    (Some("totp"), _) => Action::RemoveTotp { user: UserId(user) },
                    (Some("passkey"), Some(id)) => match unhex(id) {
                        Some(credential_id) => Action::RemovePasskey {
                            user: UserId(user),
                            credential_id,
                        },
                        None => continue,
                    },
                    _ => continue,
                };
                let digest = action.digest();
                let proof = e
                    .identity()
                    .user(UserId(user))
                    .and_then(|u| u.approvals.removals.iter().rev().find(|p| p.action == digest));
                if let Some(p) = proof {
                    todo.push((
                        format!("forget/{key}"),
                        Request::ForgetFactors {
                            user,
                            approval: Some(crate::to_signer::step_up(p)),
                        },
                    ));
                }
            }
            for u in e.identity().users() {
                for p in &u.passkeys {
                    let key = format!("passkey/{}/{}", u.id.0, hex_of(&p.credential_id));
                    if !self.registered.contains(&key) {
                        let approval = u
                            .approvals
                            .passkeys
                            .iter()
                            .find(|(c, _)| *c == p.credential_id)
                            .map(|(_, proof)| crate::to_signer::step_up(proof));
                        todo.push((
                            key,
                            Request::RegisterPasskey {
                                user: u.id.0,
                                credential_id: p.credential_id.clone(),
                                public_key: p.public_key.clone(),
                                approval,
                            },
                        ));
                    }
                }
            }
            for u in e.identity().users() {
                if let (Some(t), Some(vault)) = (&u.totp, &self.vault) {
                    let key = format!("totp/{}/{}", u.id.0, t.created_ns);
                    if self.registered.contains(&key) {
                        continue;
                    }
                    // The gateway seals the raw secret bytes.
                    let secret = vault.open(&t.sealed_secret);
                    if let Some(secret) = secret {
                        todo.push((
                            key,
                            Request::RegisterTotp {
                                user: u.id.0,
                                secret: SecretBytes(secret.into()),
                                approval: u.approvals.totp.as_ref().map(crate::to_signer::step_up),
                            },
                        ));
                    }
                }
            }
            for a in e
                .wallet()
                .withdrawal_addresses_all()
                .iter()
                .filter(|a| assets.contains(&a.asset))
            {
                if a.removed {
                    continue;
                }
                let key = format!("address/{}/{}", a.id.0, a.address);
                if !self.registered.contains(&key) {
                    todo.push((
                        key,
                        Request::RegisterAddress {
                            user: a.user.0,
                            address_id: a.id.0,
                            asset: a.asset.0,
                            destination: a.address.clone(),
                            label: a.label.clone(),
                            approval: a.approval.as_ref().map(crate::to_signer::step_up),
                        },
                    ));
                }
            }
        });
        // A stale factor without a removal proof is left at the signer.
        for key in &stale {
            if !todo
                .iter()
                .any(|(k, _)| k.strip_prefix("forget/") == Some(key.as_str()))
            {
                tracing::info!(what = %key_kind(key), "a factor removed without the user's proof stays at the signer");
                self.registered.remove(key);
            }
        }
        let now = Instant::now();
        todo.retain(|(k, _)| self.refused.get(k).is_none_or(|(_, at)| *at <= now));
        if todo.is_empty() {
            return Ok(());
        }
        let mut signer =
            SignerClient::connect(&self.socket).map_err(|source| CustodyError::SignerUnreachable {
                path: self.socket.clone(),
                source,
            })?;
        for (key, req) in todo {
            match signer.call(&req)? {
                Response::Ok => {
                    self.refused.remove(&key);
                    match key.strip_prefix("forget/") {
                        Some(factor) => {
                            self.registered.remove(factor);
                        }
                        None => {
                            self.registered.insert(key);
                        }
                    }
                }
                other => {
                    // Tried again after 30 s, doubling up to an hour: a young factor's
                    // approval matures, a burst passes; a forged one keeps being refused.
                    let entry = self.refused.entry(key.clone()).or_insert((0, now));
                    entry.0 = entry.0.saturating_add(1);
                    let pause = REGISTRATION_RETRY
                        .saturating_mul(1u32 << entry.0.saturating_sub(1).min(7))
                        .min(REGISTRATION_RETRY_MAX);
                    entry.1 = now + pause;
                    tracing::warn!(what = %key_kind(&key), response = ?refusal(&other),
                        retry_s = pause.as_secs(), "signer did not take a registration");
                }
            }
        }
        Ok(())
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn key_kind(key: &str) -> &str {
    key.split('/').next().unwrap_or("?")
}
