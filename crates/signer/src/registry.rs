//! What the signer knows, rebuilt from its log at start and changed only by applying the lines
//! it has just appended: registered addresses, passkeys and TOTP secrets (each with the time the
//! signer learned it, by its own clock), what it signed (for `ALREADY_SIGNED` and the rolling
//! window), which proofs were used, and whether signing is halted.
//!
//! The state is always a fold of the log: [`Registry::apply`] is the one way it changes, at start
//! and live alike.

use crate::admins::{parse_admin, AdminRec};
use crate::log::{ApprovalUse, Entry, FactorUse, LogLine, SignedWhat};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use kinko_core::wallet::{AddressId, WithdrawalId};
use kinko_core::{AssetId, UserId};
use kinko_factors::webauthn::CredentialKey;
use kinko_signer_proto::protocol::{AdminChange, ReviewThresholds};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use zeroize::Zeroizing;

/// Shortest and longest TOTP secret accepted (RFC 4226 asks at least 128 bits; 160 recommended).
pub const TOTP_SECRET_BYTES_MIN: usize = 16;
pub const TOTP_SECRET_BYTES_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressRec {
    pub asset: AssetId,
    pub destination: String,
    pub learned_ns: u64,
    /// Approved by TOTP alone: withdrawals to it count against the TOTP budget.
    pub totp_grade: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyRec {
    pub key: CredentialKey,
    pub key_bytes: Vec<u8>,
    pub learned_ns: u64,
    /// Approved by a factor the signer held (else a first factor: `registration_maturity_s`).
    pub approved: bool,
    /// Usable for proofs from this time: a first factor after `registration_maturity_s`, an
    /// approved one after `credential_maturity_s` and not before the factor that approved it.
    pub mature_ns: u64,
}

pub struct TotpRec {
    pub secret: Zeroizing<Vec<u8>>,
    pub fingerprint: [u8; 32],
    pub learned_ns: u64,
    pub approved: bool,
    pub mature_ns: u64,
}

impl std::fmt::Debug for TotpRec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRec")
            .field("fingerprint", &hex::encode(self.fingerprint))
            .field("learned_ns", &self.learned_ns)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRec {
    pub txid: String,
    pub amount_sats: u64,
    pub time_ns: u64,
    /// Who asked for it and where it paid (the fan-in rule counts these).
    pub user: Option<UserId>,
    pub destination: Option<String>,
    /// Approved by TOTP alone (counts against the user's TOTP budget).
    pub totp_grade: bool,
    /// A token's withdrawal (an Ethereum signer): counted only against that token's limits.
    pub asset: Option<AssetId>,
}

/// The window registrations are counted in for `registrations_per_hour_max`.
pub const REGISTRATION_WINDOW_NS: u64 = 3_600 * 1_000_000_000;

#[derive(Debug, Default)]
pub struct Registry {
    pub addresses: BTreeMap<(UserId, AddressId), AddressRec>,
    pub passkeys: BTreeMap<(UserId, Vec<u8>), PasskeyRec>,
    pub totp: BTreeMap<UserId, TotpRec>,
    /// Withdrawals signed, by id (first signing).
    pub signed: BTreeMap<WithdrawalId, SignedRec>,
    /// Challenge nonces of the proofs behind signed withdrawals, with the withdrawal.
    pub used_nonces: BTreeMap<[u8; 16], WithdrawalId>,
    /// TOTP steps consumed, per user.
    pub used_totp_steps: BTreeSet<(UserId, u64)>,
    /// Passkey signature counters consumed (non-zero ones), per credential.
    pub used_counters: BTreeSet<(Vec<u8>, u32)>,
    pub halted: Option<String>,
    /// The log line where the current halt began (0: not halted).
    pub halt_seq: u64,
    /// Sweeps signed (counted for the status only).
    pub sweeps: u64,
    /// The last head cosigned of each witnessed log (`journal`, `audit`).
    pub witnessed: BTreeMap<String, WitnessRec>,
    /// Admins enrolled at the signer, by kinko user id ([`crate::admins`]).
    pub admins: BTreeMap<u64, AdminRec>,
    /// Admin assertions a ceremony or a clear needs (0 until admins are enrolled).
    pub quorum: u32,
    /// Review thresholds set by a ceremony (`None`: the configuration's).
    pub thresholds: Option<ReviewThresholds>,
    /// The hash of the last line that changed admins, quorum or thresholds (zeros: none).
    pub admin_head: [u8; 32],
    /// Users the signer ever held a factor of: never "new" again, whatever is forgotten.
    pub known_users: BTreeSet<UserId>,
    /// Times of the registrations of the last [`REGISTRATION_WINDOW_NS`] (by the latest one).
    pub registrations: VecDeque<u64>,
    /// Challenge nonces of the approvals behind registrations and forgets (each good once).
    pub used_approvals: BTreeSet<[u8; 16]>,
    /// Maturity of an approved factor and of a first one (the policy's, in ns).
    pub credential_maturity_ns: u64,
    pub registration_maturity_ns: u64,
    /// Ethereum: what each key signed at each nonce (docs/design/ethereum.md).
    pub eth: crate::eth::NonceBook,
}

/// A head the signer cosigned: what a later head must be consistent with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessRec {
    pub size: u64,
    pub root: [u8; 32],
    pub time_s: u64,
}

/// The fingerprint of a TOTP secret written to the log instead of the secret.
pub fn totp_fingerprint(secret: &[u8]) -> [u8; 32] {
    blake3::derive_key("kinko-signer totp fingerprint v1", secret)
}

fn totp_aad(user: UserId) -> Vec<u8> {
    let mut aad = b"kinko-signer totp v1".to_vec();
    aad.extend_from_slice(&user.0.to_be_bytes());
    aad
}

/// Why a TOTP secret could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the system random source failed")]
    Random,
    #[error("sealing failed")]
    Encrypt,
}

/// Why a log entry does not apply: the log does not fit this keystore, or it breaks an
/// invariant the signer keeps when writing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("address {} of user {user} registered twice", address_id.0)]
    AddressTwice { user: UserId, address_id: AddressId },
    #[error("passkey of user {0} has an unreadable key")]
    PasskeyUnreadable(UserId),
    #[error("passkey of user {0} registered twice")]
    PasskeyTwice(UserId),
    #[error("TOTP secret of user {0} cannot be opened with this keystore")]
    TotpSealed(UserId),
    #[error("TOTP secret of user {0} does not match its fingerprint")]
    TotpFingerprint(UserId),
    #[error("a signed withdrawal without an id")]
    SignedWithoutId,
    #[error("withdrawal {} re-signed with another transaction", .0.0)]
    ResignedOther(WithdrawalId),
    #[error("withdrawal {} signed twice", .0.0)]
    SignedTwice(WithdrawalId),
    #[error("a TOTP proof without a user")]
    TotpWithoutUser,
    #[error("the {0} head witnessed went backwards")]
    WitnessBackwards(String),
    #[error("an admin change that does not apply: {0}")]
    AdminChange(String),
    #[error("an Ethereum signature line that does not read: {0}")]
    EthSigned(String),
}

/// Seals a TOTP secret: a random 24-byte nonce, then XChaCha20-Poly1305 bound to the user.
pub fn seal_totp(key: &[u8; 32], user: UserId, secret: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
    let aead = XChaCha20Poly1305::new(key.into());
    let ct = aead
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: &totp_aad(user),
            },
        )
        .map_err(|_| SealError::Encrypt)?;
    Ok([&nonce[..], &ct[..]].concat())
}

pub fn open_totp(key: &[u8; 32], user: UserId, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < 24 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(24);
    let aead = XChaCha20Poly1305::new(key.into());
    aead.decrypt(
        XNonce::from_slice(nonce),
        Payload {
            msg: ct,
            aad: &totp_aad(user),
        },
    )
    .ok()
    .map(Zeroizing::new)
}

impl Registry {
    /// An empty registry whose factors mature as `policy` says.
    pub fn new(policy: &crate::config::PolicyConfig) -> Registry {
        Registry {
            credential_maturity_ns: policy.credential_maturity_s.saturating_mul(1_000_000_000),
            registration_maturity_ns: policy.registration_maturity_s.saturating_mul(1_000_000_000),
            ..Registry::default()
        }
    }

    /// When a factor learned at `time_ns` with `approval` matures.
    fn mature_at(&self, user: UserId, time_ns: u64, approval: Option<&ApprovalUse>) -> u64 {
        let first = time_ns.saturating_add(self.registration_maturity_ns);
        let Some(a) = approval else { return first };
        let approver = match &a.factor {
            FactorUse::Passkey { credential_id, .. } => self
                .passkeys
                .get(&(user, credential_id.clone()))
                .map(|p| p.mature_ns),
            FactorUse::Totp { .. } => self.totp.get(&user).map(|t| t.mature_ns),
        };
        match approver {
            Some(m) => time_ns.saturating_add(self.credential_maturity_ns).max(m),
            None => first,
        }
    }

    /// Applies one logged entry at its time. An error means the log does not fit this keystore
    /// or breaks an invariant the signer keeps when writing (it refuses to start).
    pub fn apply(&mut self, time_ns: u64, entry: &Entry, totp_key: &[u8; 32]) -> Result<(), ReplayError> {
        match entry {
            Entry::RegisteredAddress {
                user,
                address_id,
                asset,
                destination,
                totp_grade,
                approval,
            } => match self.addresses.get(&(*user, *address_id)) {
                Some(a) if a.destination == *destination && a.asset == *asset => {}
                Some(_) => {
                    return Err(ReplayError::AddressTwice {
                        user: *user,
                        address_id: *address_id,
                    })
                }
                None => {
                    self.addresses.insert(
                        (*user, *address_id),
                        AddressRec {
                            asset: *asset,
                            destination: destination.clone(),
                            learned_ns: time_ns,
                            totp_grade: *totp_grade,
                        },
                    );
                    self.registered(time_ns, approval.as_ref());
                }
            },
            Entry::RegisteredPasskey {
                user,
                credential_id,
                public_key,
                approval,
            } => {
                let key = CredentialKey::from_bytes(public_key)
                    .map_err(|_| ReplayError::PasskeyUnreadable(*user))?;
                match self.passkeys.get(&(*user, credential_id.clone())) {
                    Some(p) if p.key_bytes == *public_key => {}
                    Some(_) => return Err(ReplayError::PasskeyTwice(*user)),
                    None => {
                        let mature_ns = self.mature_at(*user, time_ns, approval.as_ref());
                        self.passkeys.insert(
                            (*user, credential_id.clone()),
                            PasskeyRec {
                                key,
                                key_bytes: public_key.clone(),
                                learned_ns: time_ns,
                                approved: approval.is_some(),
                                mature_ns,
                            },
                        );
                        self.known_users.insert(*user);
                        self.registered(time_ns, approval.as_ref());
                    }
                }
            }
            Entry::RegisteredTotp {
                user,
                sealed,
                fingerprint,
                approval,
            } => {
                let secret = open_totp(totp_key, *user, sealed).ok_or(ReplayError::TotpSealed(*user))?;
                if totp_fingerprint(&secret) != *fingerprint {
                    return Err(ReplayError::TotpFingerprint(*user));
                }
                let mature_ns = self.mature_at(*user, time_ns, approval.as_ref());
                self.totp.insert(
                    *user,
                    TotpRec {
                        secret,
                        fingerprint: *fingerprint,
                        learned_ns: time_ns,
                        approved: approval.is_some(),
                        mature_ns,
                    },
                );
                self.known_users.insert(*user);
                self.registered(time_ns, approval.as_ref());
            }
            Entry::ForgotFactors { user } => {
                self.totp.remove(user);
                self.passkeys.retain(|(u, _), _| u != user);
            }
            Entry::ForgotFactor {
                user,
                credential_id,
                totp,
                approval,
            } => {
                if *totp {
                    self.totp.remove(user);
                } else {
                    self.passkeys.remove(&(*user, credential_id.clone()));
                }
                self.used_approvals.insert(approval.nonce);
            }
            Entry::Signed {
                what,
                withdrawal,
                user,
                txid,
                amount_sats,
                resign,
                proof,
                destinations,
                totp_grade,
                asset,
                ..
            } => match what {
                SignedWhat::Sweep | SignedWhat::GasTopup | SignedWhat::ColdSweep | SignedWhat::Refill => {
                    self.sweeps = self.sweeps.saturating_add(1)
                }
                SignedWhat::Withdrawal => {
                    let id = withdrawal.ok_or(ReplayError::SignedWithoutId)?;
                    if *resign {
                        if self.signed.get(&id).map(|s| &s.txid) != Some(txid) {
                            return Err(ReplayError::ResignedOther(id));
                        }
                        return Ok(());
                    }
                    if self.signed.contains_key(&id) {
                        return Err(ReplayError::SignedTwice(id));
                    }
                    self.signed.insert(
                        id,
                        SignedRec {
                            txid: txid.clone(),
                            amount_sats: *amount_sats,
                            time_ns,
                            user: *user,
                            destination: destinations.first().cloned(),
                            totp_grade: *totp_grade,
                            asset: *asset,
                        },
                    );
                    if let Some(p) = proof {
                        self.used_nonces.insert(p.nonce, id);
                        match &p.factor {
                            FactorUse::Totp { step } => {
                                let user = user.ok_or(ReplayError::TotpWithoutUser)?;
                                self.used_totp_steps.insert((user, *step));
                            }
                            FactorUse::Passkey {
                                credential_id,
                                sign_count,
                            } => {
                                if *sign_count != 0 {
                                    self.used_counters.insert((credential_id.clone(), *sign_count));
                                }
                            }
                        }
                    }
                }
            },
            Entry::Halted { reason } => {
                if self.halted.is_none() {
                    self.halted = Some(reason.clone());
                }
            }
            Entry::Cleared { .. } => self.halted = None,
            Entry::Witnessed {
                log,
                size,
                root,
                time_s,
                ..
            } => {
                // Heads only move forward: the signer refuses any other before logging one.
                if self.witnessed.get(log).is_some_and(|w| w.size > *size) {
                    return Err(ReplayError::WitnessBackwards(log.clone()));
                }
                self.witnessed.insert(
                    log.clone(),
                    WitnessRec {
                        size: *size,
                        root: *root,
                        time_s: *time_s,
                    },
                );
            }
            Entry::HaltRequested { reason, source } => {
                if self.halted.is_none() {
                    self.halted = Some(format!("{source}: {reason}"));
                }
            }
            Entry::AdminChanged { change, .. } => self.apply_admin_change(change)?,
            Entry::EthSigned {
                key,
                nonce,
                token,
                destination,
                amount,
                max_fee_per_gas,
                max_priority_fee_per_gas,
                unsigned_hash,
                tx_hash: _,
            } => {
                let bad = |what: &str| ReplayError::EthSigned(format!("{what} at nonce {nonce}"));
                let addr = |s: &str| kinko_chain::eth::EthAddress::parse(s).map_err(|_| bad("an address"));
                let num = |s: &str| s.parse::<u128>().map_err(|_| bad("a number"));
                let payment = match token {
                    None => crate::eth::Payment::Ether,
                    Some(t) => crate::eth::Payment::Token(addr(t)?),
                };
                self.eth.record(
                    addr(key)?,
                    *nonce,
                    crate::eth::SignedAt {
                        intent: crate::eth::Intent {
                            payment,
                            destination: addr(destination)?,
                            amount: num(amount)?,
                        },
                        max_fee_per_gas: num(max_fee_per_gas)?,
                        max_priority_fee_per_gas: num(max_priority_fee_per_gas)?,
                        unsigned_hash: *unsigned_hash,
                    },
                );
            }
            Entry::Alerted { .. }
            | Entry::Started { .. }
            | Entry::Request { .. }
            | Entry::Refused { .. }
            | Entry::SignedLiabilitiesRoot { .. }
            | Entry::PeerRefused { .. } => {}
        }
        Ok(())
    }

    /// Applies a logged line: the entry, then the heads ceremonies bind (the admin head, the
    /// line where a halt began). The one way the registry changes.
    pub fn apply_line(&mut self, line: &LogLine, totp_key: &[u8; 32]) -> Result<(), ReplayError> {
        let was_halted = self.halted.is_some();
        self.apply(line.time_ns, &line.entry, totp_key)?;
        match (&line.entry, was_halted, self.halted.is_some()) {
            (Entry::AdminChanged { .. }, _, _) => self.admin_head = line.hash,
            (_, false, true) => self.halt_seq = line.seq,
            (_, _, false) => self.halt_seq = 0,
            _ => {}
        }
        Ok(())
    }

    fn apply_admin_change(&mut self, change: &AdminChange) -> Result<(), ReplayError> {
        let bad = |why: String| ReplayError::AdminChange(why);
        match change {
            AdminChange::Add { admin } => {
                let rec = parse_admin(admin).map_err(bad)?;
                if self.admins.insert(admin.id, rec).is_some() {
                    return Err(bad(format!("user {} enrolled twice", admin.id)));
                }
            }
            AdminChange::Remove { id } => {
                self.admins
                    .remove(id)
                    .ok_or_else(|| bad(format!("user {id} removed but not enrolled")))?;
            }
            AdminChange::Quorum { quorum } => self.quorum = *quorum,
            AdminChange::Thresholds { thresholds } => self.thresholds = Some(*thresholds),
        }
        Ok(())
    }

    /// The admin assertions a ceremony or a resume needs: the quorum set, and never fewer than
    /// one while admins are enrolled (admins enrolled before any quorum was set need the
    /// default quorum, or all of them if fewer).
    pub fn quorum(&self) -> u32 {
        let n = u32::try_from(self.admins.len()).unwrap_or(u32::MAX);
        match self.quorum {
            0 => n.min(crate::admins::QUORUM_DEFAULT),
            q => q,
        }
    }

    /// Distinct users other than `user` whose withdrawals to `destination` were signed after
    /// `since_ns` (the fan-in rule).
    pub fn fan_in(&self, destination: &str, user: UserId, since_ns: u64) -> usize {
        self.signed
            .values()
            .filter(|s| s.time_ns > since_ns && s.destination.as_deref() == Some(destination))
            .filter_map(|s| s.user)
            .filter(|u| *u != user)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Counts a registration at `time_ns` and consumes its approval.
    fn registered(&mut self, time_ns: u64, approval: Option<&ApprovalUse>) {
        self.registrations.push_back(time_ns);
        let since = time_ns.saturating_sub(REGISTRATION_WINDOW_NS);
        while self.registrations.front().is_some_and(|t| *t <= since) {
            self.registrations.pop_front();
        }
        if let Some(a) = approval {
            self.used_approvals.insert(a.nonce);
        }
    }

    /// Registrations logged after `since_ns` (within the last window).
    pub fn registrations_since(&self, since_ns: u64) -> u64 {
        self.registrations.iter().filter(|t| **t > since_ns).count() as u64
    }

    /// Whether the signer holds a passkey of `user`.
    pub fn has_passkey(&self, user: UserId) -> bool {
        self.passkeys
            .range((user, Vec::new())..)
            .next()
            .is_some_and(|((u, _), _)| *u == user)
    }

    /// Satoshis of `user`'s withdrawals approved by TOTP alone, first signed after `since_ns`.
    pub fn totp_spent_since(&self, user: UserId, since_ns: u64) -> u64 {
        self.signed
            .values()
            .filter(|s| s.asset.is_none() && s.totp_grade && s.user == Some(user) && s.time_ns > since_ns)
            .fold(0u64, |sum, s| sum.saturating_add(s.amount_sats))
    }

    /// Satoshis of withdrawals first signed after `since_ns` (entries from a clock that later
    /// went back count too: the window errs on the side of refusing).
    pub fn signed_since(&self, since_ns: u64) -> u64 {
        self.signed
            .values()
            .filter(|s| s.asset.is_none() && s.time_ns > since_ns)
            .fold(0u64, |sum, s| sum.saturating_add(s.amount_sats))
    }

    /// An Ethereum signer's token: its minor units first signed after `since_ns`.
    pub fn token_signed_since(&self, asset: AssetId, since_ns: u64) -> u64 {
        self.signed
            .values()
            .filter(|s| s.asset == Some(asset) && s.time_ns > since_ns)
            .fold(0u64, |sum, s| sum.saturating_add(s.amount_sats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_sealing() {
        let key = [9u8; 32];
        let sealed = seal_totp(&key, UserId(4), b"12345678901234567890").unwrap();
        assert!(!sealed.windows(20).any(|w| w == b"12345678901234567890"));
        assert_eq!(
            open_totp(&key, UserId(4), &sealed).as_deref().map(|v| &v[..]),
            Some(&b"12345678901234567890"[..])
        );
        assert!(open_totp(&key, UserId(5), &sealed).is_none());
        assert!(open_totp(&[8u8; 32], UserId(4), &sealed).is_none());
        assert!(open_totp(&key, UserId(4), &sealed[..10]).is_none());
    }

    #[test]
    fn window_sums_recent_signings() {
        let mut r = Registry::default();
        for (i, t) in [(1u64, 100u64), (2, 200), (3, 300)] {
            r.apply(
                t,
                &Entry::Signed {
                    what: SignedWhat::Withdrawal,
                    withdrawal: Some(WithdrawalId(i)),
                    user: Some(UserId(1)),
                    txid: format!("{i}"),
                    amount_sats: 10 * i,
                    fee_sats: 1,
                    destinations: vec![],
                    resign: false,
                    proof: None,
                    totp_grade: i == 2,
                    asset: None,
                },
                &[0; 32],
            )
            .unwrap();
        }
        assert_eq!(r.signed_since(0), 60);
        assert_eq!(r.signed_since(150), 50);
        assert_eq!(r.signed_since(300), 0);
        assert_eq!(r.totp_spent_since(UserId(1), 0), 20);
        assert_eq!(r.totp_spent_since(UserId(2), 0), 0);
    }
}
