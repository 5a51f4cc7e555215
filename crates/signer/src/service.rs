//! The signer itself, without sockets: it answers one [`Request`] at a time, logs every
//! decision before it answers, and keeps its registry as the fold of its log.

use crate::admins;
use crate::alerts::Alerts;
use crate::clock::Clock;
use crate::config::Config;
use crate::eth::{EthKeys, Intent, Payment};
use crate::keystore::{Role, Unlocked};
use crate::log::{Entry, Log, LogError, SignedWhat};
use crate::policy::{self, ApprovalOk, ApprovalRule, Code, ColdScripts, Hot, Refusal};
use crate::registry::{
    seal_totp, totp_fingerprint, Registry, ReplayError, TOTP_SECRET_BYTES_MAX, TOTP_SECRET_BYTES_MIN,
};
use crate::wire::Withdrawal;
use kinko_audit::witness::{origin_of, Cosignature, LOG_JOURNAL};
use kinko_chain::eth::{Branch, EthAddress};
use kinko_core::identity::Action;
use kinko_core::wallet::{AddressId, WithdrawalId};
use kinko_core::{AssetId, UserId};
use kinko_factors::webauthn::{CredentialKey, CREDENTIAL_ID_BYTES_MAX};
use kinko_signer_proto::protocol::{
    self as proto, AdminAssertion, AdminChange, JournalHead, Request, Response, REASON_LEN_MAX,
};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// How long a clear challenge stays good.
pub const CLEAR_CHALLENGE_TTL_NS: u64 = 300 * 1_000_000_000;
/// Outstanding clear challenges kept (a newer one pushes out the oldest).
pub const CLEAR_CHALLENGES_MAX: usize = 4;
/// A witnessed head equal to the last one logged is logged again (with its fresh
/// cosignature) only this long after it; in between it is cosigned without a log line.
pub const WITNESS_RELOG_S: u64 = 3600;
/// At most one burst alert per this long (the refusals themselves are logged).
pub const BURST_ALERT_EVERY_NS: u64 = 600 * 1_000_000_000;

/// The MAC `kinko-signer clear` sends: BLAKE3 keyed by the keystore's clear key over a context,
/// the challenge nonce and the reason.
pub fn clear_mac(clear_key: &[u8; 32], nonce: &[u8; 32], reason: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(clear_key);
    h.update(b"kinko-signer clear v1\0");
    h.update(nonce);
    h.update(reason.as_bytes());
    *h.finalize().as_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("log line {line} cannot be replayed: {reason}; refusing to start")]
    Replay {
        line: u64,
        #[source]
        reason: ReplayError,
    },
    #[error("the keystore is for {keystore}, the configuration for {config}")]
    Mismatch { keystore: String, config: String },
    #[error("socket {path}: {reason}")]
    Socket {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("alert outbox {path}: {source}")]
    Alerts {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Ethereum keys: {0}")]
    Eth(String),
    #[error("socket {path}: {source}")]
    SocketIo {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct Signer {
    config: Config,
    keys: Unlocked,
    clock: Arc<dyn Clock>,
    log: Log,
    reg: Registry,
    clear_challenges: Vec<([u8; 32], u64)>,
    cold_scripts: ColdScripts,
    alerts: Alerts,
    last_burst_alert_ns: Option<u64>,
    /// The newest cluster epoch a signing request came with (0: none yet).
    newest_epoch: u64,
    /// An Ethereum signer's hot account keys and hot address (`[eth]` configured).
    eth: Option<(EthKeys, EthAddress)>,
}

/// An Ethereum transaction checked and signed, not yet logged.
struct EthDone {
    /// The signing key's address.
    key: EthAddress,
    intent: Intent,
    checked: crate::eth::Checked,
    tx: crate::eth::SignedTx,
    raw_unsigned: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("hot", &self.keys.watch_key().to_string())
            .field("log_seq", &self.log.seq())
            .field("halted", &self.reg.halted)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Opens the log, rebuilds the registry from it, and logs the start.
    pub fn open(config: Config, keys: Unlocked, clock: Arc<dyn Clock>) -> Result<Signer, StartError> {
        if keys.network() != config.network || keys.role() != Role::Hot {
            return Err(StartError::Mismatch {
                keystore: format!("{} ({})", keys.network().name(), keys.role().name()),
                config: format!("{} (hot)", config.network.name()),
            });
        }
        let opened = Log::open(&config.log)?;
        let totp_key = keys.totp_key();
        let mut reg = Registry::new(&config.policy);
        for line in &opened.lines {
            reg.apply_line(line, &totp_key)
                .map_err(|reason| StartError::Replay {
                    line: line.seq,
                    reason,
                })?;
        }
        let eth = match &config.eth {
            None => None,
            Some(e) => {
                let k = EthKeys::new(&keys.master()).map_err(|r| StartError::Eth(r.reason))?;
                let hot = k.address(Branch::Hot, 0).map_err(|r| StartError::Eth(r.reason))?;
                reg.eth.set_start(hot, e.start_nonce);
                Some((k, hot))
            }
        };
        let name = format!("{} {}", config.network.name(), config.asset);
        let alerts = Alerts::open(config.alerts.clone(), &name).map_err(|source| StartError::Alerts {
            path: config.alerts.outbox.clone(),
            source,
        })?;
        let mut s = Signer {
            config,
            keys,
            clock,
            log: opened.log,
            reg,
            clear_challenges: Vec::new(),
            cold_scripts: ColdScripts::default(),
            alerts,
            last_burst_alert_ns: None,
            newest_epoch: 0,
            eth,
        };
        s.append(Entry::Started {
            version: env!("CARGO_PKG_VERSION").into(),
            network: s.config.network.name().into(),
            asset: s.config.asset.to_string(),
            hot: s.keys.watch_key().to_string(),
            pid: std::process::id(),
            repaired_tail_bytes: opened.repaired_tail_bytes,
        })?;
        Ok(s)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn halted(&self) -> Option<&str> {
        self.reg.halted.as_deref()
    }
    pub fn registry(&self) -> &Registry {
        &self.reg
    }

    /// Raises an alert through the signer's own channel (durable in its outbox on return; a
    /// failure to write it is reported on stderr and does not change the decision).
    pub fn alert(&self, kind: &str, detail: &str) {
        let admins: Vec<String> = self
            .reg
            .admins
            .values()
            .map(|a| a.admin.email.clone())
            .filter(|e| !e.is_empty())
            .collect();
        if let Err(e) = self.alerts.raise_to(self.clock.now_ns(), kind, detail, &admins) {
            eprintln!("kinko-signer: alert {kind} could not be written to the outbox: {e}");
        }
    }

    /// Whether alerts reach anybody (a webhook, or SMTP recipients).
    pub fn alerts_notify(&self) -> bool {
        self.alerts.config().notifies()
    }

    /// Appends an entry and applies it to the registry.
    fn append(&mut self, entry: Entry) -> Result<(), LogError> {
        let now = self.clock.now_ns();
        let line = self.log.append(now, entry)?;
        self.reg
            .apply_line(&line, &self.keys.totp_key())
            .expect("an entry the signer decided on applies to its own registry");
        Ok(())
    }

    fn log_unavailable(e: &LogError) -> Response {
        Response::Refused {
            code: Code::LogUnavailable.as_str().into(),
            reason: format!("the signer's log cannot be written ({e}); nothing was done"),
            halted: true,
        }
    }

    /// Logs a refusal (and a halt for tampering) and builds the answer.
    fn refused(&mut self, request: &str, withdrawal: Option<WithdrawalId>, r: Refusal) -> Response {
        let tamper = r.code.tamper();
        let was_halted = self.reg.halted.is_some();
        let mut res = self.append(Entry::Refused {
            request: request.into(),
            withdrawal,
            code: r.code.as_str().into(),
            reason: r.reason.clone(),
            tamper,
        });
        if tamper && res.is_ok() && self.reg.halted.is_none() {
            res = self.append(Entry::Halted {
                reason: format!("{}: {}", r.code.as_str(), r.reason),
            });
        }
        if r.code.alerted() && res.is_ok() {
            res = self.log_alert(
                &format!("refused_{request}"),
                format!("{}: {}", r.code.as_str(), r.reason),
            );
        }
        let kind = match request {
            "sign_withdrawal"
            | "sign_sweep"
            | "sign_eth_withdrawal"
            | "sign_eth_sweep"
            | "sign_eth_gas_topup"
            | "sign_eth_cold_sweep"
            | "sign_eth_refill" => "signature_refused",
            "sign_liabilities_root" => "liabilities_root_refused",
            "clear" => "clear_refused",
            _ => "registration_refused",
        };
        // A young factor's registration waits (the custody service retries); a burst is
        // alerted once per BURST_ALERT_EVERY_NS by the caller; while halted, the halt was
        // alerted once and the refusals it causes are only logged.
        let quiet = (kind == "registration_refused"
            && matches!(r.code, Code::FactorImmature | Code::RegistrationRate))
            || (was_halted && r.code == Code::SignerHalted);
        if !quiet {
            let w = withdrawal
                .map(|w| format!(" withdrawal {}", w.0))
                .unwrap_or_default();
            self.alert(kind, &format!("{request}{w}: {} — {}", r.code.as_str(), r.reason));
        }
        if !was_halted && self.reg.halted.is_some() {
            self.alert(
                "halted",
                &format!("signing halted: {}: {}", r.code.as_str(), r.reason),
            );
        }
        if let Err(e) = res {
            return Self::log_unavailable(&e);
        }
        Response::Refused {
            code: r.code.as_str().into(),
            reason: r.reason,
            halted: self.reg.halted.is_some(),
        }
    }

    /// Refuses a registration above `registrations_per_hour_max` (alerting the burst).
    fn rate_limited(&mut self, kind: &str) -> Option<Response> {
        let now = self.clock.now_ns();
        let max = self.config.policy.registrations_per_hour_max;
        let n = self
            .reg
            .registrations_since(now.saturating_sub(crate::registry::REGISTRATION_WINDOW_NS));
        if n < max {
            return None;
        }
        if self
            .last_burst_alert_ns
            .is_none_or(|t| now.saturating_sub(t) >= BURST_ALERT_EVERY_NS)
        {
            self.last_burst_alert_ns = Some(now);
            self.alert(
                "registration_burst",
                &format!(
                    "{n} registrations in the last hour reached the limit of {max}; further ones are refused"
                ),
            );
        }
        Some(self.refused(
            kind,
            None,
            Refusal {
                code: Code::RegistrationRate,
                reason: format!("{n} registrations in the last hour; the limit is {max}"),
            },
        ))
    }

    /// Checks a registration's approval; the (logged, alerted) refusal answer if it does not
    /// hold.
    fn approved(
        &mut self,
        kind: &str,
        user: UserId,
        action: &Action,
        approval: Option<&proto::StepUp>,
        rule: ApprovalRule,
    ) -> Result<ApprovalOk, Box<Response>> {
        let approval = approval.map(crate::wire::step_up);
        let now = self.clock.now_ns();
        policy::check_approval(
            &self.reg,
            &self.config,
            now,
            user,
            action,
            approval.as_ref(),
            rule,
        )
        .map_err(|r| Box::new(self.refused(kind, None, r)))
    }

    fn ok_or_unavailable(&mut self, entry: Entry) -> Response {
        match self.append(entry) {
            Ok(()) => Response::Ok,
            Err(e) => Self::log_unavailable(&e),
        }
    }

    /// A connection from a uid that is not allowed.
    pub fn peer_refused(&mut self, uid: u32) {
        // A failure to log this is not a decision about money; the connection is closed anyway.
        let _ = self.append(Entry::PeerRefused { uid });
    }

    /// Answers one request from a peer with this uid.
    pub fn handle(&mut self, req: Request, peer_uid: u32) -> Response {
        match req {
            Request::Hello => Response::Hello {
                network: self.config.network.name().into(),
                asset: self.config.asset.to_string(),
                asset_id: self.config.asset_id.0,
                hot: self.keys.watch_key().to_string(),
                cold: self
                    .config
                    .cold
                    .as_ref()
                    .map(|c| c.keys.iter().map(|k| k.to_string()).collect())
                    .unwrap_or_default(),
                threshold: self.config.cold.as_ref().map_or(0, |c| c.threshold as u32),
                halted: self.reg.halted.clone(),
            },
            Request::Status => {
                let p = &self.config.policy;
                let since = self
                    .clock
                    .now_ns()
                    .saturating_sub(p.window_s.saturating_mul(1_000_000_000));
                Response::Status {
                    halted: self.reg.halted.clone(),
                    signed_in_window: self.reg.signed_since(since),
                    window_max: p.window_max_sats,
                    window_s: p.window_s,
                    per_tx_max: p.per_tx_max_sats,
                    fee_max: p.fee_max_sats,
                    log_seq: self.log.seq(),
                }
            }
            Request::RegisterAddress {
                user,
                address_id,
                asset,
                destination,
                label,
                approval,
            } => self.register_address(
                UserId(user),
                AddressId(address_id),
                AssetId(asset),
                destination,
                &label,
                approval.as_ref(),
            ),
            Request::RegisterPasskey {
                user,
                credential_id,
                public_key,
                approval,
            } => self.register_passkey(UserId(user), credential_id, public_key, approval.as_ref()),
            Request::RegisterTotp {
                user,
                secret,
                approval,
            } => self.register_totp(UserId(user), secret.expose(), approval.as_ref()),
            Request::ForgetFactors { user, approval } => self.forget(UserId(user), approval.as_ref()),
            Request::SignWithdrawal {
                withdrawal,
                psbt,
                journal,
            } => self.sign_withdrawal(&Withdrawal::from(&*withdrawal), &psbt, journal, peer_uid),
            Request::SignSweep { psbt, journal } => self.sign_sweep(&psbt, journal, peer_uid),
            Request::WitnessHead { log } => match origin_of(&log) {
                None => Response::Error {
                    code: "BAD_REQUEST".into(),
                    message: format!("unknown log {log:?} (journal or audit)"),
                },
                Some(_) => {
                    let (size, root) = self
                        .reg
                        .witnessed
                        .get(&log)
                        .map_or((0, [0; 32]), |w| (w.size, w.root));
                    Response::WitnessHead { log, size, root }
                }
            },
            Request::Witness {
                log,
                size,
                root,
                proof,
            } => self.witness(&log, size, root, &proof),
            Request::ClearChallenge => {
                let mut nonce = [0u8; 32];
                if getrandom::fill(&mut nonce).is_err() {
                    return Response::Error {
                        code: "RANDOM_UNAVAILABLE".into(),
                        message: "the system random source failed".into(),
                    };
                }
                let expires = self.clock.now_ns().saturating_add(CLEAR_CHALLENGE_TTL_NS);
                if self.clear_challenges.len() >= CLEAR_CHALLENGES_MAX {
                    self.clear_challenges.remove(0);
                }
                self.clear_challenges.push((nonce, expires));
                Response::Challenge { nonce }
            }
            Request::Clear {
                nonce,
                reason,
                mac,
                assertions,
            } => self.clear(nonce, &reason, mac, &assertions),
            Request::Halt { reason, source } => self.halt(&reason, &source),
            Request::ProveControl {
                asset,
                sequence,
                nonce,
            } => self.prove_control(&asset, sequence, &nonce),
            Request::SignLiabilitiesRoot {
                asset,
                decimals,
                sequence,
                time,
                leaves,
                root_hash,
                total,
                journal,
            } => {
                let root = kinko_verify::Root {
                    asset,
                    decimals,
                    sequence,
                    time,
                    leaves,
                    root_hash,
                    total,
                    key: kinko_verify::KEY_WITNESS.into(),
                    public_key: String::new(),
                    signature: String::new(),
                };
                self.sign_liabilities_root(root, journal)
            }
            Request::Admins => Response::Admins {
                admins: self.reg.admins.values().map(|a| a.admin.clone()).collect(),
                quorum: self.reg.quorum(),
                thresholds: self
                    .reg
                    .thresholds
                    .unwrap_or_else(|| self.config.review.thresholds()),
                head: self.reg.admin_head,
                halt_seq: self.reg.halt_seq,
            },
            Request::AdminChange {
                change,
                assertions,
                mac,
            } => self.admin_change(change, &assertions, mac),
            Request::SignEthWithdrawal {
                withdrawal,
                raw_unsigned,
                journal,
            } => self.sign_eth_withdrawal(&Withdrawal::from(&*withdrawal), &raw_unsigned, journal, peer_uid),
            Request::SignEthSweep {
                index,
                raw_unsigned,
                journal,
            } => self.sign_eth_internal(SignedWhat::Sweep, index, &raw_unsigned, journal, peer_uid),
            Request::SignEthGasTopup {
                index,
                raw_unsigned,
                journal,
            } => self.sign_eth_internal(SignedWhat::GasTopup, index, &raw_unsigned, journal, peer_uid),
            Request::SignEthColdSweep {
                raw_unsigned,
                journal,
            } => self.sign_eth_internal(SignedWhat::ColdSweep, 0, &raw_unsigned, journal, peer_uid),
            Request::SignEthRefill {
                raw_unsigned,
                journal,
            } => self.sign_eth_internal(SignedWhat::Refill, 0, &raw_unsigned, journal, peer_uid),
        }
    }

    /// Raises an alert to the signer's admins. Until the signer's own alert channel delivers
    /// them, an alert is a line of the signer's log ([`Entry::Alerted`]), which the channel
    /// reads.
    fn log_alert(&mut self, kind: &str, detail: String) -> Result<(), LogError> {
        self.append(Entry::Alerted {
            alert: kind.into(),
            detail,
        })
    }

    /// The signer's identity in ceremony digests: its hot account's watch key.
    pub fn identity(&self) -> String {
        self.keys.watch_key().to_string()
    }

    /// A halt forwarded by kinko (or asked for by anyone on the socket): applied at once.
    fn halt(&mut self, reason: &str, source: &str) -> Response {
        if !admins::text_ok(reason, REASON_LEN_MAX) || !admins::text_ok(source, 64) {
            return self.refused(
                "halt",
                None,
                Refusal {
                    code: Code::HaltInvalid,
                    reason: "a halt needs a printable reason and source".into(),
                },
            );
        }
        let was = self.reg.halted.is_some();
        let res = self
            .append(Entry::HaltRequested {
                reason: reason.into(),
                source: source.into(),
            })
            .and_then(|()| {
                if was {
                    Ok(())
                } else {
                    self.log_alert("halted", format!("{source}: {reason}"))
                }
            });
        match res {
            Ok(()) => {
                if !was {
                    self.alert("halted", &format!("{source}: {reason}"));
                }
                Response::Ok
            }
            Err(e) => Self::log_unavailable(&e),
        }
    }

    /// An admin ceremony: the keystore's MAC and, once admins are enrolled, a quorum of their
    /// assertions over the ceremony digest.
    fn admin_change(
        &mut self,
        change: AdminChange,
        assertions: &[AdminAssertion],
        mac: [u8; 32],
    ) -> Response {
        const KIND: &str = "admin_change";
        let digest = admins::ceremony_digest(&self.identity(), &self.reg.admin_head, &change);
        let want = admins::admin_mac(&self.keys.clear_key(), &digest);
        if !bool::from(want.ct_eq(&mac)) {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::AdminMacInvalid,
                    reason: "the keystore MAC over the ceremony digest is wrong (or the admin head moved)"
                        .into(),
                },
            );
        }
        if let Err(why) = admins::check_change(&self.reg.admins, self.reg.quorum(), &change) {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::AdminChangeInvalid,
                    reason: why,
                },
            );
        }
        let approvers = if self.reg.admins.is_empty() {
            Vec::new()
        } else {
            let now = self.clock.now_ns();
            match admins::verify_quorum(
                &self.reg.admins,
                self.reg.quorum(),
                &self.config,
                now,
                &digest,
                assertions,
            ) {
                Ok(a) => a,
                Err(r) => return self.refused(KIND, None, r),
            }
        };
        let detail = format!(
            "{} approved by admins {approvers:?}",
            serde_json::to_string(&change).unwrap_or_default()
        );
        let res = self
            .append(Entry::AdminChanged { change, approvers })
            .and_then(|()| self.log_alert("admin_change", detail.clone()));
        match res {
            Ok(()) => {
                self.alert("admin_change", &detail);
                Response::Ok
            }
            Err(e) => Self::log_unavailable(&e),
        }
    }

    fn register_address(
        &mut self,
        user: UserId,
        address_id: AddressId,
        asset: AssetId,
        destination: String,
        label: &str,
        approval: Option<&proto::StepUp>,
    ) -> Response {
        const KIND: &str = "register_address";
        let token = self.config.eth.as_ref().is_some_and(|e| e.token(asset).is_some());
        if asset != self.config.asset_id && !token {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::AssetWrong,
                    reason: format!("asset {asset} is not this signer's ({})", self.config.asset_id),
                },
            );
        }
        let valid = match &self.config.eth {
            // An Ethereum signer keeps the EIP-55 form (what kinko whitelists).
            Some(e) if asset == self.config.asset_id || e.token(asset).is_some() => {
                kinko_chain::eth::EthAddress::parse(&destination)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => kinko_chain::script_for(self.config.network, &destination)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = valid {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::AddressInvalid,
                    reason: format!("not an address of {}: {e}", self.config.network.name()),
                },
            );
        }
        match self.reg.addresses.get(&(user, address_id)) {
            Some(a) if a.destination == destination => return Response::Ok,
            Some(a) => {
                let reason = format!(
                    "address {} of user {user} is {} here; asked to register {destination}",
                    address_id.0, a.destination
                );
                return self.refused(
                    KIND,
                    None,
                    Refusal {
                        code: Code::AddressConflict,
                        reason,
                    },
                );
            }
            None => {}
        }
        if let Some(r) = self.rate_limited(KIND) {
            return r;
        }
        // The user approved exactly this address with a factor the signer holds: a passkey
        // if it holds one (TOTP would be the weaker factor), else its TOTP secret, and then the
        // address is TOTP-grade.
        let action = Action::AddWithdrawalAddress {
            user,
            asset,
            address: destination.clone(),
            label: label.to_owned(),
        };
        let rule = |allow_totp| ApprovalRule {
            allow_totp,
            mature: false,
        };
        let ok = if self.reg.has_passkey(user) {
            self.approved(KIND, user, &action, approval, rule(false))
        } else if self.reg.totp.contains_key(&user) {
            self.approved(KIND, user, &action, approval, rule(true))
        } else {
            Err(Box::new(self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::RegistrationUnapproved,
                    reason: format!("user {user}: the signer holds no factor of this user to verify the address's approval with"),
                },
            )))
        };
        let ok = match ok {
            Ok(ok) => ok,
            Err(r) => return *r,
        };
        self.ok_or_unavailable(Entry::RegisteredAddress {
            user,
            address_id,
            asset,
            destination,
            totp_grade: ok.totp,
            approval: Some(ok.used),
        })
    }

    fn register_passkey(
        &mut self,
        user: UserId,
        credential_id: Vec<u8>,
        public_key: Vec<u8>,
        approval: Option<&proto::StepUp>,
    ) -> Response {
        const KIND: &str = "register_passkey";
        if credential_id.is_empty() || credential_id.len() > CREDENTIAL_ID_BYTES_MAX {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::FactorInvalid,
                    reason: "credential id is empty or too long".into(),
                },
            );
        }
        if CredentialKey::from_bytes(&public_key).is_err() {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::FactorInvalid,
                    reason: "public key is not a valid ES256 or Ed25519 credential key".into(),
                },
            );
        }
        match self.reg.passkeys.get(&(user, credential_id.clone())) {
            Some(p) if p.key_bytes == public_key => return Response::Ok,
            Some(_) => {
                return self.refused(
                    KIND,
                    None,
                    Refusal {
                        code: Code::FactorConflict,
                        reason: format!(
                            "passkey {} of user {user} has another key here",
                            hex::encode(&credential_id)
                        ),
                    },
                )
            }
            None => {}
        }
        if let Some(r) = self.rate_limited(KIND) {
            return r;
        }
        // A later passkey needs an assertion of a mature passkey over exactly this key; the
        // first one is taken without, matures slowly, and is announced.
        let approval = if self.reg.has_passkey(user) {
            let action = Action::EnrolPasskeyKey {
                user,
                credential_id: credential_id.clone(),
                public_key: public_key.clone(),
            };
            // A young approver is fine: the new key matures no earlier than its approver.
            let young = ApprovalRule {
                allow_totp: false,
                mature: false,
            };
            match self.approved(KIND, user, &action, approval, young) {
                Ok(ok) => Some(ok.used),
                Err(r) => return *r,
            }
        } else {
            None
        };
        let first = approval.is_none();
        let r = self.ok_or_unavailable(Entry::RegisteredPasskey {
            user,
            credential_id: credential_id.clone(),
            public_key,
            approval,
        });
        if first && r == Response::Ok {
            self.alert(
                "first_factor",
                &format!(
                    "user {user}: first passkey {} registered without an approval; usable for withdrawals in {} s",
                    hex::encode(&credential_id),
                    self.config.policy.registration_maturity_s
                ),
            );
        }
        r
    }

    fn register_totp(&mut self, user: UserId, secret: &[u8], approval: Option<&proto::StepUp>) -> Response {
        const KIND: &str = "register_totp";
        if !(TOTP_SECRET_BYTES_MIN..=TOTP_SECRET_BYTES_MAX).contains(&secret.len()) {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::FactorInvalid,
                    reason: format!(
                        "a TOTP secret must be {TOTP_SECRET_BYTES_MIN} to {TOTP_SECRET_BYTES_MAX} bytes"
                    ),
                },
            );
        }
        let fingerprint = totp_fingerprint(secret);
        match self.reg.totp.get(&user) {
            Some(t) if bool::from(t.fingerprint.ct_eq(&fingerprint)) => return Response::Ok,
            // Whoever holds the exchange's host can mint codes of any secret it planted: a
            // secret is never replaced here (an approved forget removes the old one first).
            Some(_) => {
                return self.refused(
                    KIND,
                    None,
                    Refusal {
                        code: Code::RegistrationUnapproved,
                        reason: format!("user {user} has another TOTP secret here; it is never replaced"),
                    },
                )
            }
            None => {}
        }
        if let Some(r) = self.rate_limited(KIND) {
            return r;
        }
        let approval = if self.reg.has_passkey(user) {
            let young = ApprovalRule {
                allow_totp: false,
                mature: false,
            };
            match self.approved(KIND, user, &Action::EnrolTotp { user }, approval, young) {
                Ok(ok) => Some(ok.used),
                Err(r) => return *r,
            }
        } else if self.reg.known_users.contains(&user) {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::RegistrationUnapproved,
                    reason: format!(
                        "user {user} had factors here; a new TOTP secret needs a passkey's approval"
                    ),
                },
            );
        } else {
            None
        };
        let sealed = match seal_totp(&self.keys.totp_key(), user, secret) {
            Ok(s) => s,
            Err(e) => {
                return Response::Error {
                    code: "RANDOM_UNAVAILABLE".into(),
                    message: e.to_string(),
                }
            }
        };
        let first = approval.is_none();
        let r = self.ok_or_unavailable(Entry::RegisteredTotp {
            user,
            sealed,
            fingerprint,
            approval,
        });
        if first && r == Response::Ok {
            self.alert(
                "first_factor",
                &format!(
                    "user {user}: first TOTP secret registered without an approval; usable in {} s, within the TOTP budget",
                    self.config.policy.registration_maturity_s
                ),
            );
        }
        r
    }

    /// Forgets the one factor the user's approval removes (a mature passkey's assertion over
    /// `RemoveTotp` / `RemovePasskey`); a user is never made "new" again.
    fn forget(&mut self, user: UserId, approval: Option<&proto::StepUp>) -> Response {
        const KIND: &str = "forget_factors";
        let digest = approval.map(|a| a.action);
        let totp = Action::RemoveTotp { user };
        let mut target: Option<(Action, Vec<u8>, bool)> =
            (digest == Some(totp.digest())).then(|| (totp, Vec::new(), true));
        if target.is_none() {
            target = self
                .reg
                .passkeys
                .range((user, Vec::new())..)
                .take_while(|((u, _), _)| *u == user)
                .map(|((_, c), _)| Action::RemovePasskey {
                    user,
                    credential_id: c.clone(),
                })
                .find(|a| Some(a.digest()) == digest)
                .map(|a| {
                    let Action::RemovePasskey { credential_id, .. } = &a else {
                        unreachable!()
                    };
                    let c = credential_id.clone();
                    (a, c, false)
                });
        }
        let Some((action, credential_id, is_totp)) = target else {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::RegistrationUnapproved,
                    reason: format!(
                        "user {user}: forgetting needs the user's passkey approval of removing a factor the signer holds"
                    ),
                },
            );
        };
        let mature = ApprovalRule {
            allow_totp: false,
            mature: true,
        };
        let ok = match self.approved(KIND, user, &action, approval, mature) {
            Ok(ok) => ok,
            Err(r) => return *r,
        };
        self.ok_or_unavailable(Entry::ForgotFactor {
            user,
            credential_id,
            totp: is_totp,
            approval: ok.used,
        })
    }

    /// Whether `(size, root)` of `log` may follow what the signer last cosigned of it: never a
    /// smaller size; for the journal, the same hash at the same sequence; for the audit log, a
    /// consistency proof from the last cosigned tree.
    fn witness_check(
        &self,
        log: &str,
        size: u64,
        root: &[u8; 32],
        proof: &[[u8; 32]],
    ) -> Result<(), Refusal> {
        let Some(origin) = origin_of(log) else {
            return Err(Refusal {
                code: Code::WitnessInvalid,
                reason: format!("unknown log {log:?} (journal or audit)"),
            });
        };
        let forked = |reason: String| Refusal {
            code: Code::HistoryForked,
            reason: format!("{origin}: {reason}"),
        };
        let (last_size, last_root) = self
            .reg
            .witnessed
            .get(log)
            .map_or((0, None), |w| (w.size, Some(w.root)));
        if size < last_size {
            return Err(forked(format!(
                "size {size} is below the {last_size} cosigned before (history was cut or rewritten)"
            )));
        }
        if log == LOG_JOURNAL {
            if !proof.is_empty() {
                return Err(Refusal {
                    code: Code::WitnessInvalid,
                    reason: "a journal head carries no proof".into(),
                });
            }
            if size == last_size && last_root.is_some_and(|r| r != *root) {
                return Err(forked(format!(
                    "record {size} has hash {} here, {} when it was cosigned",
                    hex::encode(root),
                    hex::encode(last_root.unwrap_or_default())
                )));
            }
            return Ok(());
        }
        let old_root = last_root.unwrap_or(kinko_audit::EMPTY_ROOT);
        if !kinko_audit::verify_consistency(last_size, size, &old_root, root, proof) {
            return Err(forked(format!(
                "the tree of {size} entries is not consistent with the tree of {last_size} cosigned                  before (entries below {last_size} were changed)"
            )));
        }
        Ok(())
    }

    /// Cosigns `(log, size, root)` at the signer's time and logs it when it is new (or the
    /// same head's last line is [`WITNESS_RELOG_S`] old).
    fn witness_record(&mut self, log: &str, size: u64, root: [u8; 32]) -> Result<Cosignature, LogError> {
        let time_s = self.clock.now_ns() / 1_000_000_000;
        let c = Cosignature::sign(log, size, &root, time_s, &self.keys.witness_key())
            .expect("witness_check accepted the log name");
        let fresh = match self.reg.witnessed.get(log) {
            Some(w) => w.size != size || w.root != root || time_s >= w.time_s.saturating_add(WITNESS_RELOG_S),
            None => true,
        };
        if fresh {
            self.append(Entry::Witnessed {
                log: c.log.clone(),
                size,
                root,
                time_s,
                key_id: c.key_id.clone(),
                signature: c.signature.clone(),
            })?;
        }
        Ok(c)
    }

    fn witness(&mut self, log: &str, size: u64, root: [u8; 32], proof: &[[u8; 32]]) -> Response {
        if let Err(r) = self.witness_check(log, size, &root, proof) {
            return self.refused("witness", None, r);
        }
        match self.witness_record(log, size, root) {
            Ok(c) => Response::Cosigned {
                log: c.log,
                size: c.size,
                root: c.root,
                time_s: c.time_s,
                key_id: c.key_id,
                signature: c.signature,
            },
            Err(e) => Self::log_unavailable(&e),
        }
    }

    /// The journal head a signing request carries: refused (a fork halts) before anything is
    /// checked or signed, recorded otherwise.
    fn witness_journal(&mut self, head: Option<JournalHead>) -> Result<(), Result<Refusal, LogError>> {
        let Some(h) = head else { return Ok(()) };
        if let Some(epoch) = h.epoch {
            if epoch < self.newest_epoch {
                return Err(Ok(Refusal {
                    code: Code::StaleEpoch,
                    reason: format!(
                        "the request comes from cluster epoch {epoch}, older than epoch {} this signer has seen: a deposed primary",
                        self.newest_epoch
                    ),
                }));
            }
            self.newest_epoch = epoch;
        }
        self.witness_check(LOG_JOURNAL, h.seq, &h.hash, &[]).map_err(Ok)?;
        self.witness_record(LOG_JOURNAL, h.seq, h.hash).map_err(Err)?;
        Ok(())
    }

    fn hot(&self) -> Hot<'_> {
        Hot {
            net: self.config.network,
            key: self.keys.watch_key(),
        }
    }

    /// Proof of control of the hot key: only the fixed message form, for this signer's asset.
    fn prove_control(&self, asset: &str, sequence: u64, nonce: &[u8; 32]) -> Response {
        if asset != self.config.asset.as_str() {
            return Response::Error {
                code: "WRONG_ASSET".into(),
                message: format!("this signer holds {}, not {asset}", self.config.asset),
            };
        }
        let message = match kinko_chain::control::control_message(asset, sequence, nonce) {
            Ok(m) => m,
            Err(e) => {
                return Response::Error {
                    code: "BAD_REQUEST".into(),
                    message: e.to_string(),
                }
            }
        };
        let key = self.keys.watch_key();
        match crate::sign::sign_control(&self.keys.master(), &key.path, &message) {
            Ok(signature) => Response::ControlProof {
                message,
                key: key.to_string(),
                signature,
            },
            Err(e) => Response::Error {
                code: "SIGN_FAILED".into(),
                message: e.to_string(),
            },
        }
    }

    /// A proof-of-liabilities root, signed with the witness key over exactly its statement
    /// (`kinko_verify::Root::statement`, key `witness`), only for a sequence at or below the
    /// journal head the signer cosigned: `journal`, the head at exactly that sequence, is
    /// witnessed first when it is newer than the last cosigned head (and checked against it
    /// when it is the same sequence); an older head cannot be judged and is not witnessed.
    /// Nothing is signed while signing is halted (`SIGNER_HALTED`).
    fn sign_liabilities_root(
        &mut self,
        mut root: kinko_verify::Root,
        journal: Option<JournalHead>,
    ) -> Response {
        const KIND: &str = "sign_liabilities_root";
        let bad = |message: String| Response::Error {
            code: "BAD_REQUEST".into(),
            message,
        };
        if let Err(e) = check_root_fields(&root) {
            return bad(e.to_string());
        }
        // A halted signer vouches for nothing: after a fork, the host's state is not the history
        // the signer saw, even below its head.
        if let Some(why) = self.reg.halted.clone() {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::SignerHalted,
                    reason: format!("signing is halted ({why}); no root is signed until it is cleared"),
                },
            );
        }
        if let Some(h) = journal {
            if h.seq != root.sequence {
                return bad(format!(
                    "the journal head is at sequence {}, the root at {}: it must be the root's",
                    h.seq, root.sequence
                ));
            }
            let last = self.reg.witnessed.get(LOG_JOURNAL).map_or(0, |w| w.size);
            if h.seq >= last {
                match self.witness_journal(Some(h)) {
                    Ok(()) => {}
                    Err(Ok(r)) => return self.refused(KIND, None, r),
                    Err(Err(e)) => return Self::log_unavailable(&e),
                }
            }
        }
        let head = self.reg.witnessed.get(LOG_JOURNAL).map_or(0, |w| w.size);
        if root.sequence > head {
            return self.refused(
                KIND,
                None,
                Refusal {
                    code: Code::RootNotWitnessed,
                    reason: format!(
                        "the {} root is at sequence {}, beyond the journal head {head} this signer cosigned",
                        root.asset, root.sequence
                    ),
                },
            );
        }
        let key = self.keys.witness_key();
        if let Err(e) = kinko_verify::tree::sign_root(&mut root, kinko_verify::KEY_WITNESS, &key) {
            return bad(e.to_string());
        }
        let entry = Entry::SignedLiabilitiesRoot {
            asset: root.asset.clone(),
            decimals: root.decimals,
            sequence: root.sequence,
            time: root.time.clone(),
            leaves: root.leaves,
            root_hash: root.root_hash.clone(),
            total: root.total.clone(),
            signature: root.signature.clone(),
        };
        if let Err(e) = self.append(entry) {
            return Self::log_unavailable(&e);
        }
        Response::LiabilitiesRootSigned {
            key: root.key,
            public_key: root.public_key,
            signature: root.signature,
        }
    }

    /// Signs every input with the hot key; all of them must take a signature.
    fn sign_psbt(&self, psbt: &mut bitcoin::psbt::Psbt) -> Result<(), Refusal> {
        let master = self.keys.master();
        match crate::sign::sign(psbt, &master) {
            Ok(n) if n == psbt.inputs.len() => Ok(()),
            Ok(n) => Err(Refusal {
                code: Code::SignFailed,
                reason: format!("only {n} of {} inputs could be signed", psbt.inputs.len()),
            }),
            Err(e) => Err(Refusal {
                code: Code::SignFailed,
                reason: format!("signing failed: {e}"),
            }),
        }
    }

    /// Logs a signing request before anything is checked: what was asked (the withdrawal, if
    /// any) and the txid of the PSBT if it could be read.
    fn log_sign_request(
        &mut self,
        kind: &str,
        peer_uid: u32,
        w: Option<&Withdrawal>,
        txid: Option<String>,
    ) -> Result<(), LogError> {
        let request = Entry::Request {
            request: kind.into(),
            peer_uid,
            withdrawal: w.map(|w| w.id),
            user: w.map(|w| w.user),
            amount_sats: w.and_then(|w| u64::try_from(w.amount.0).ok()),
            destination: w.map(|w| w.address.clone()),
            txid,
        };
        self.append(request)
    }

    /// The txid of a PSBT that could be read.
    fn psbt_txid(parsed: &Result<bitcoin::psbt::Psbt, Refusal>) -> Option<String> {
        parsed
            .as_ref()
            .ok()
            .map(|p| p.unsigned_tx.compute_txid().to_string())
    }

    /// Logs what was signed, then answers with the signed PSBT.
    fn signed_or_unavailable(&mut self, signed: Entry, psbt: &bitcoin::psbt::Psbt) -> Response {
        match self.append(signed) {
            Ok(()) => Response::Signed {
                psbt: kinko_chain::psbt::to_base64(psbt),
            },
            Err(e) => Self::log_unavailable(&e),
        }
    }

    fn sign_withdrawal(
        &mut self,
        w: &Withdrawal,
        psbt_text: &str,
        journal: Option<JournalHead>,
        peer_uid: u32,
    ) -> Response {
        const KIND: &str = "sign_withdrawal";
        let parsed = policy::parse_psbt(psbt_text);
        if let Err(e) = self.log_sign_request(KIND, peer_uid, Some(w), Self::psbt_txid(&parsed)) {
            return Self::log_unavailable(&e);
        }
        match self.witness_journal(journal) {
            Ok(()) => {}
            Err(Ok(r)) => return self.refused(KIND, Some(w.id), r),
            Err(Err(e)) => return Self::log_unavailable(&e),
        }
        let mut psbt = match parsed {
            Ok(p) => p,
            Err(r) => {
                // Halted or not, a PSBT that cannot be read is refused as such... after the halt.
                let r = match &self.reg.halted {
                    Some(why) => Refusal {
                        code: Code::SignerHalted,
                        reason: format!("signing is halted: {why}"),
                    },
                    None => r,
                };
                return self.refused(KIND, Some(w.id), r);
            }
        };
        let now = self.clock.now_ns();
        let approved = match policy::check_withdrawal(&self.reg, &self.config, self.hot(), now, w, &psbt) {
            Ok(a) => a,
            Err(r) => return self.refused(KIND, Some(w.id), r),
        };
        if let Err(r) = self.sign_psbt(&mut psbt) {
            return self.refused(KIND, Some(w.id), r);
        }
        let signed = Entry::Signed {
            what: SignedWhat::Withdrawal,
            withdrawal: Some(w.id),
            user: Some(w.user),
            txid: approved.txid,
            amount_sats: approved.amount_sats,
            fee_sats: approved.fee_sats,
            destinations: vec![approved.destination],
            resign: approved.resign,
            proof: approved.proof,
            totp_grade: approved.totp_grade,
            asset: None,
        };
        self.signed_or_unavailable(signed, &psbt)
    }

    /// The Ethereum half of this signer: its `[eth]` and hot address (`ASSET_WRONG`: none).
    fn eth_ready(&self) -> Result<(crate::config::EthConfig, EthAddress), Refusal> {
        match (&self.config.eth, &self.eth) {
            (Some(c), Some((_, hot))) => Ok((c.clone(), *hot)),
            _ => Err(Refusal {
                code: Code::AssetWrong,
                reason: "this signer is not an Ethereum signer ([eth] is not configured)".into(),
            }),
        }
    }

    fn eth_keys(&self) -> Result<&EthKeys, Refusal> {
        self.eth.as_ref().map(|(k, _)| k).ok_or_else(|| Refusal {
            code: Code::AssetWrong,
            reason: "this signer is not an Ethereum signer ([eth] is not configured)".into(),
        })
    }

    /// Logs an Ethereum signing request before anything is checked, and witnesses the journal
    /// head it came with.
    fn eth_request(
        &mut self,
        kind: &'static str,
        peer_uid: u32,
        w: Option<&Withdrawal>,
        raw_unsigned: &[u8],
        journal: Option<JournalHead>,
    ) -> Result<(), Box<Response>> {
        let txid = Some(hex::encode(kinko_chain::eth::keccak256(raw_unsigned)));
        if let Err(e) = self.log_sign_request(kind, peer_uid, w, txid) {
            return Err(Box::new(Self::log_unavailable(&e)));
        }
        match self.witness_journal(journal) {
            Ok(()) => Ok(()),
            Err(Ok(r)) => Err(Box::new(self.refused(kind, w.map(|w| w.id), r))),
            Err(Err(e)) => Err(Box::new(Self::log_unavailable(&e))),
        }
    }

    /// Logs an Ethereum signature (`EthSigned`, unless it is a retry of the very bytes signed
    /// before), then `signed`, and only then answers with the signed transaction.
    fn eth_signed_or_unavailable(&mut self, done: EthDone, signed: Entry) -> Response {
        if !done.checked.resign {
            let at = crate::eth::signed_at(&done.intent, &done.checked.tx, &done.raw_unsigned);
            let entry = crate::eth::signed_entry(done.key, &at, done.checked.tx.nonce, &done.tx);
            if let Err(e) = self.append(entry) {
                return Self::log_unavailable(&e);
            }
        }
        match self.append(signed) {
            Ok(()) => Response::EthSigned {
                raw: done.tx.raw,
                hash: done.tx.hash,
            },
            Err(e) => Self::log_unavailable(&e),
        }
    }

    /// An Ethereum withdrawal (docs/design/ethereum.md): logged as asked, the journal head
    /// witnessed, checks 1–5b as for Litecoin, then the signer's own reading of the raw
    /// transaction (`eth::check_tx`), the limits, the signature logged (`EthSigned`, then
    /// `Signed`), and only then answered.
    fn sign_eth_withdrawal(
        &mut self,
        w: &Withdrawal,
        raw_unsigned: &[u8],
        journal: Option<JournalHead>,
        peer_uid: u32,
    ) -> Response {
        const KIND: &str = "sign_eth_withdrawal";
        if let Err(r) = self.eth_request(KIND, peer_uid, Some(w), raw_unsigned, journal) {
            return *r;
        }
        let (done, auth, txid, asset) = match self.check_eth_withdrawal(w, raw_unsigned) {
            Ok(a) => a,
            Err(r) => return self.refused(KIND, Some(w.id), r),
        };
        let signed = Entry::Signed {
            what: SignedWhat::Withdrawal,
            withdrawal: Some(w.id),
            user: Some(w.user),
            txid,
            amount_sats: u64::try_from(w.amount.0).unwrap_or(u64::MAX),
            fee_sats: u64::try_from(done.checked.fee_max_wei).unwrap_or(u64::MAX),
            destinations: vec![w.address.clone()],
            resign: auth.resign,
            proof: auth.proof,
            totp_grade: auth.totp_grade && !auth.resign,
            asset,
        };
        self.eth_signed_or_unavailable(done, signed)
    }

    /// The transaction id step 2 compares: the one recorded for `w` when these bytes replace,
    /// at its nonce, a transaction paying exactly `w` (a fee bump of a signed withdrawal is a
    /// re-signature of it); otherwise the hash of these bytes.
    fn eth_step2_txid(
        &self,
        w: &Withdrawal,
        hot: &EthAddress,
        intent: Option<&Intent>,
        raw: &[u8],
    ) -> String {
        let own = hex::encode(kinko_chain::eth::keccak256(raw));
        let (Some(rec), Some(intent)) = (self.reg.signed.get(&w.id), intent) else {
            return own;
        };
        let same = crate::eth::decode(raw)
            .ok()
            .and_then(|tx| self.reg.eth.at(hot, tx.nonce))
            .is_some_and(|prev| prev.intent == *intent);
        if same {
            rec.txid.clone()
        } else {
            own
        }
    }

    /// Every check of an Ethereum withdrawal, in order, and its signature: what is logged.
    fn check_eth_withdrawal(
        &self,
        w: &Withdrawal,
        raw: &[u8],
    ) -> Result<(EthDone, policy::Authorised, String, Option<AssetId>), Refusal> {
        let eth = self.eth_ready();
        let token = eth.as_ref().ok().and_then(|(c, _)| c.token(w.asset).cloned());
        let asset_ok = eth.is_ok() && (w.asset == self.config.asset_id || token.is_some());
        let destination = EthAddress::parse(&w.address);
        let intent = destination.as_ref().ok().map(|d| Intent {
            payment: token
                .as_ref()
                .map_or(Payment::Ether, |t| Payment::Token(t.contract)),
            destination: *d,
            amount: w.amount.0,
        });
        let hot = eth.as_ref().map(|(_, h)| *h).unwrap_or(EthAddress([0; 20]));
        let txid = self.eth_step2_txid(w, &hot, intent.as_ref(), raw);
        let now = self.clock.now_ns();
        let auth = policy::check_authorisation(&self.reg, &self.config, now, w, &txid, asset_ok)?;
        let (cfg, hot) = eth?;
        // 6. The signer's own reading of the transaction.
        let intent = intent.ok_or_else(|| Refusal {
            code: Code::AddressInvalid,
            reason: format!("the withdrawal's destination {:?} is not an address", w.address),
        })?;
        let checked = crate::eth::check_tx(&cfg.policy, &self.reg.eth, &hot, &intent, raw)?;
        // 7. Limits, in the asset's minor unit (a token's own ones).
        let Ok(amount) = u64::try_from(w.amount.0) else {
            return Err(Refusal {
                code: Code::LimitTx,
                reason: format!("{} is above every per-transaction limit", w.amount),
            });
        };
        match &token {
            None => policy::check_limits(&self.reg, &self.config, now, w, &auth, amount)?,
            Some(t) => policy::check_token_limits(&self.reg, &self.config, now, t, &auth, amount)?,
        }
        let tx = self.eth_keys()?.sign(Branch::Hot, 0, &checked.tx)?;
        let done = EthDone {
            key: hot,
            intent,
            checked,
            tx,
            raw_unsigned: raw.to_vec(),
        };
        Ok((done, auth, txid, token.map(|t| t.asset_id)))
    }

    /// A sweep of deposit address `index` to hot, a gas top-up of it from hot, a hot → cold
    /// transfer or a refill's `execute` on the cold contract: logged as asked, the journal
    /// witnessed, not while halted, then the signer's own reading of the transaction, the
    /// signature logged (`EthSigned`, then `Signed`) and answered.
    fn sign_eth_internal(
        &mut self,
        what: SignedWhat,
        index: u32,
        raw: &[u8],
        journal: Option<JournalHead>,
        peer_uid: u32,
    ) -> Response {
        let kind = match what {
            SignedWhat::GasTopup => "sign_eth_gas_topup",
            SignedWhat::ColdSweep => "sign_eth_cold_sweep",
            SignedWhat::Refill => "sign_eth_refill",
            _ => "sign_eth_sweep",
        };
        if let Err(r) = self.eth_request(kind, peer_uid, None, raw, journal) {
            return *r;
        }
        let done = match self.check_eth_internal(what, index, raw) {
            Ok(d) => d,
            Err(r) => return self.refused(kind, None, r),
        };
        let asset = match done.intent.payment {
            Payment::Ether => None,
            Payment::Token(c) => self
                .config
                .eth
                .as_ref()
                .and_then(|e| e.tokens.iter().find(|t| t.contract == c))
                .map(|t| t.asset_id),
        };
        let signed = Entry::Signed {
            what,
            withdrawal: None,
            user: None,
            txid: hex::encode(kinko_chain::eth::keccak256(raw)),
            amount_sats: u64::try_from(done.intent.amount).unwrap_or(u64::MAX),
            fee_sats: u64::try_from(done.checked.fee_max_wei).unwrap_or(u64::MAX),
            destinations: vec![done.intent.destination.checksummed()],
            resign: done.checked.resign,
            proof: None,
            totp_grade: false,
            asset,
        };
        self.eth_signed_or_unavailable(done, signed)
    }

    fn check_eth_internal(&self, what: SignedWhat, index: u32, raw: &[u8]) -> Result<EthDone, Refusal> {
        if let Some(why) = &self.reg.halted {
            return Err(Refusal {
                code: Code::SignerHalted,
                reason: format!("signing is halted: {why}"),
            });
        }
        let (cfg, hot) = self.eth_ready()?;
        let keys = self.eth_keys()?;
        let tx = crate::eth::decode(raw)?;
        // The cold contract is the signer's own configuration, never the request's word.
        let cold = || {
            cfg.cold_contract.ok_or_else(|| Refusal {
                code: Code::SweepUnconfigured,
                reason: "no [eth] cold_contract is configured".into(),
            })
        };
        let (key, branch, at, intent, checked) = match what {
            SignedWhat::ColdSweep => {
                let intent = crate::eth::sweep_intent(cold()?, &tx);
                let checked = crate::eth::check_tx(&cfg.policy, &self.reg.eth, &hot, &intent, raw)?;
                (hot, Branch::Hot, 0, intent, checked)
            }
            SignedWhat::Refill => {
                let (intent, checked) =
                    crate::eth::check_refill(&cfg.policy, &self.reg.eth, cold()?, hot, raw)?;
                (hot, Branch::Hot, 0, intent, checked)
            }
            SignedWhat::GasTopup => {
                let deposit = keys.address(Branch::Deposit, index)?;
                let intent = crate::eth::topup_intent(&cfg.policy, deposit, &tx)?;
                let checked = crate::eth::check_tx(&cfg.policy, &self.reg.eth, &hot, &intent, raw)?;
                (hot, Branch::Hot, 0, intent, checked)
            }
            _ => {
                let deposit = keys.address(Branch::Deposit, index)?;
                let intent = crate::eth::sweep_intent(hot, &tx);
                let checked = crate::eth::check_tx(&cfg.policy, &self.reg.eth, &deposit, &intent, raw)?;
                (deposit, Branch::Deposit, index, intent, checked)
            }
        };
        let tx = keys.sign(branch, at, &checked.tx)?;
        Ok(EthDone {
            key,
            intent,
            checked,
            tx,
            raw_unsigned: raw.to_vec(),
        })
    }

    fn sign_sweep(&mut self, psbt_text: &str, journal: Option<JournalHead>, peer_uid: u32) -> Response {
        const KIND: &str = "sign_sweep";
        let parsed = policy::parse_psbt(psbt_text);
        if let Err(e) = self.log_sign_request(KIND, peer_uid, None, Self::psbt_txid(&parsed)) {
            return Self::log_unavailable(&e);
        }
        match self.witness_journal(journal) {
            Ok(()) => {}
            Err(Ok(r)) => return self.refused(KIND, None, r),
            Err(Err(e)) => return Self::log_unavailable(&e),
        }
        let mut psbt = match parsed {
            Ok(p) => p,
            Err(r) => return self.refused(KIND, None, r),
        };
        let hot = Hot {
            net: self.config.network,
            key: self.keys.watch_key(),
        };
        let approved = match policy::check_sweep(&self.reg, &self.config, hot, &mut self.cold_scripts, &psbt)
        {
            Ok(a) => a,
            Err(r) => return self.refused(KIND, None, r),
        };
        if let Err(r) = self.sign_psbt(&mut psbt) {
            return self.refused(KIND, None, r);
        }
        let signed = Entry::Signed {
            what: SignedWhat::Sweep,
            withdrawal: None,
            user: None,
            txid: approved.txid,
            amount_sats: approved.to_cold_sats,
            fee_sats: approved.fee_sats,
            destinations: approved.destinations,
            resign: false,
            proof: None,
            totp_grade: false,
            asset: None,
        };
        self.signed_or_unavailable(signed, &psbt)
    }

    fn clear(
        &mut self,
        nonce: [u8; 32],
        reason: &str,
        mac: [u8; 32],
        assertions: &[AdminAssertion],
    ) -> Response {
        let now = self.clock.now_ns();
        let found = self
            .clear_challenges
            .iter()
            .position(|(n, expires)| bool::from(n.ct_eq(&nonce)) && *expires > now);
        // A challenge is good for one attempt.
        self.clear_challenges
            .retain(|(n, expires)| !bool::from(n.ct_eq(&nonce)) && *expires > now);
        let reason_ok = !reason.trim().is_empty()
            && reason.len() <= REASON_LEN_MAX
            && !reason.chars().any(char::is_control);
        let want = clear_mac(&self.keys.clear_key(), &nonce, reason);
        if found.is_none() || !reason_ok || !bool::from(want.ct_eq(&mac)) {
            return self.refused(
                "clear",
                None,
                Refusal {
                    code: Code::ClearInvalid,
                    reason: "unknown or expired challenge, an empty or overlong reason, or a wrong MAC"
                        .into(),
                },
            );
        }
        // Once admins are enrolled, the keystore alone does not resume signing: a quorum of
        // them approves resuming from this very halt.
        let approvers = if self.reg.admins.is_empty() {
            Vec::new()
        } else {
            let digest = admins::clear_digest(&self.identity(), self.reg.halt_seq, reason);
            match admins::verify_quorum(
                &self.reg.admins,
                self.reg.quorum(),
                &self.config,
                now,
                &digest,
                assertions,
            ) {
                Ok(a) => a,
                Err(r) => return self.refused("clear", None, r),
            }
        };
        let detail = format!("signing cleared: {reason} (approved by admins {approvers:?})");
        let res = self
            .append(Entry::Cleared {
                reason: reason.into(),
                approvers,
            })
            .and_then(|()| self.log_alert("resumed", detail.clone()));
        match res {
            Ok(()) => {
                self.alert("resumed", &detail);
                Response::Ok
            }
            Err(e) => Self::log_unavailable(&e),
        }
    }
}

/// A root's statement fields as the verifier reads them: the asset, time and key text, a root
/// hash of 64 lower-case hex digits and a total that is a plain decimal integer.
fn check_root_fields(root: &kinko_verify::Root) -> Result<(), kinko_verify::VerifyError> {
    root.statement()?;
    kinko_verify::from_hex::<32>("root_hash", &root.root_hash)?;
    kinko_verify::parse_amount("total", &root.total)?;
    Ok(())
}
