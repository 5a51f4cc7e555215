//! Admins enrolled at the signer, and what only a quorum of them may do.
//!
//! The signer keeps its own list of admins (kinko user id, name, email for its alerts, one
//! passkey each) in its log, with a quorum and its own review thresholds. The first admins come
//! from `kinko-signer init`; after that every change is a ceremony ([`ceremony_digest`]): the
//! exact change and the log's admin head (the hash of the last line that changed admins or
//! thresholds, so an approval applies once), approved by passkey assertions of a quorum of
//! enrolled admins and by the keystore's MAC ([`admin_mac`], the operator at the signer's
//! machine). Resuming signing after a halt ([`clear_digest`]) needs a quorum likewise, bound to
//! the log line where the halt began.
//!
//! Assertions use the step-up challenge form (`"KSU1"`, issued time, nonce, digest), verified
//! with `kinko_factors::webauthn` against the admin's key held here, never the host's.

use crate::config::Config;
use crate::policy::{Code, Refusal};
use kinko_core::identity::{ProofFactor, StepUp};
use kinko_factors::webauthn::{self, CredentialKey};
use kinko_signer_proto::protocol::{Admin, AdminAssertion, AdminChange, ReviewThresholds};
use std::collections::{BTreeMap, BTreeSet};
use subtle::ConstantTimeEq;

const NS: u64 = 1_000_000_000;
/// The BLAKE3 derive-key context of ceremony digests.
pub const CEREMONY_CONTEXT: &str = "kinko-signer admin ceremony v1";
/// The BLAKE3 derive-key context of clear digests.
pub const CLEAR_CONTEXT: &str = "kinko-signer clear ceremony v1";
/// The quorum `kinko-signer init` sets when none is given.
pub const QUORUM_DEFAULT: u32 = 2;
/// Most admins enrolled at once.
pub const ADMINS_MAX: usize = 32;
/// Longest admin name and email.
pub const NAME_LEN_MAX: usize = 64;
pub const EMAIL_LEN_MAX: usize = 254;
/// How long an admin's assertion over a ceremony or clear digest stays good.
pub const CEREMONY_MAX_AGE_S: u64 = 3_600;
/// How far in the future (by the signer's clock) an assertion's issue time may be.
pub const ASSERTION_FUTURE_NS: u64 = 60 * NS;

/// An enrolled admin with the parsed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminRec {
    pub admin: Admin,
    pub key: CredentialKey,
}

/// The digest admins approve for `change`, at the signer whose hot account is `signer` and
/// whose admin head is `head`.
pub fn ceremony_digest(signer: &str, head: &[u8; 32], change: &AdminChange) -> [u8; 32] {
    let json = serde_json::to_vec(change).expect("an admin change always serializes");
    let mut h = blake3::Hasher::new_derive_key(CEREMONY_CONTEXT);
    h.update(&(signer.len() as u64).to_be_bytes());
    h.update(signer.as_bytes());
    h.update(head);
    h.update(&json);
    *h.finalize().as_bytes()
}

/// The digest admins approve to resume signing after the halt that began at log line
/// `halt_seq`, with this reason.
pub fn clear_digest(signer: &str, halt_seq: u64, reason: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CLEAR_CONTEXT);
    h.update(&(signer.len() as u64).to_be_bytes());
    h.update(signer.as_bytes());
    h.update(&halt_seq.to_be_bytes());
    h.update(reason.as_bytes());
    *h.finalize().as_bytes()
}

/// The keystore's MAC over a ceremony digest (`kinko-signer admin` computes it with the
/// passphrase; the signer checks it with its own copy of the key).
pub fn admin_mac(clear_key: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(clear_key);
    h.update(b"kinko-signer admin change v1\0");
    h.update(digest);
    *h.finalize().as_bytes()
}

/// Whether a name, email or reason is printable text of at most `max` bytes, not blank.
pub fn text_ok(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

/// Checks an admin record before it is enrolled: its text, its passkey.
pub fn parse_admin(a: &Admin) -> Result<AdminRec, String> {
    if a.id == 0 {
        return Err("an admin's id is kinko's user id (not 0)".into());
    }
    if !text_ok(&a.name, NAME_LEN_MAX) {
        return Err(format!(
            "an admin's name must be 1 to {NAME_LEN_MAX} printable bytes"
        ));
    }
    if !text_ok(&a.email, EMAIL_LEN_MAX) || !a.email.contains('@') {
        return Err("an admin's email must be an address".into());
    }
    if a.credential_id.is_empty() || a.credential_id.len() > webauthn::CREDENTIAL_ID_BYTES_MAX {
        return Err("an admin's credential id is empty or too long".into());
    }
    let key = CredentialKey::from_bytes(&a.public_key)
        .map_err(|_| "an admin's public key is not a valid ES256 or Ed25519 key".to_string())?;
    Ok(AdminRec {
        admin: a.clone(),
        key,
    })
}

/// Checks that `change` can apply to these admins and quorum.
pub fn check_change(
    admins: &BTreeMap<u64, AdminRec>,
    quorum: u32,
    change: &AdminChange,
) -> Result<(), String> {
    let n = admins.len();
    match change {
        AdminChange::Add { admin } => {
            parse_admin(admin)?;
            if admins.contains_key(&admin.id) {
                return Err(format!("user {} is an admin already", admin.id));
            }
            if admins
                .values()
                .any(|a| a.admin.credential_id == admin.credential_id)
            {
                return Err("another admin has that passkey".into());
            }
            if n >= ADMINS_MAX {
                return Err(format!("at most {ADMINS_MAX} admins"));
            }
        }
        AdminChange::Remove { id } => {
            if !admins.contains_key(id) {
                return Err(format!("user {id} is not an admin"));
            }
            if (n - 1) < quorum as usize {
                return Err(format!(
                    "removing user {id} would leave fewer admins than the quorum of {quorum}"
                ));
            }
        }
        AdminChange::Quorum { quorum } => {
            if *quorum == 0 || *quorum as usize > n {
                return Err(format!("the quorum must be between 1 and the {n} admins"));
            }
        }
        AdminChange::Thresholds { thresholds } => check_thresholds(thresholds)?,
    }
    Ok(())
}

/// Thresholds the signer can enforce.
pub fn check_thresholds(t: &ReviewThresholds) -> Result<(), String> {
    if t.approvals == 0 || t.approvals as usize > ADMINS_MAX {
        return Err(format!("approvals must be between 1 and {ADMINS_MAX}"));
    }
    if t.fan_in_window_s == 0 {
        return Err("fan_in_window_s must be positive".into());
    }
    Ok(())
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Why one admin's assertion does not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssertionFault {
    /// Over another digest (another change, another withdrawal).
    OtherDigest,
    /// Issued too long ago, or in the future.
    Stale,
    /// Not a passkey assertion with the admin's own credential.
    NotTheirPasskey,
    /// The signature does not verify.
    BadSignature,
}

impl AssertionFault {
    pub fn text(self) -> &'static str {
        match self {
            AssertionFault::OtherDigest => "is over another digest",
            AssertionFault::Stale => "was issued too long ago (or in the future)",
            AssertionFault::NotTheirPasskey => "is not made with that admin's enrolled passkey",
            AssertionFault::BadSignature => "does not verify",
        }
    }
}

/// Verifies one admin's assertion over `digest`, fresh within `max_age_ns` of `now_ns`.
pub fn verify_assertion(
    rec: &AdminRec,
    config: &Config,
    now_ns: u64,
    max_age_ns: u64,
    digest: &[u8; 32],
    proof: &StepUp,
) -> Result<(), AssertionFault> {
    if !bool::from(proof.action.ct_eq(digest)) {
        return Err(AssertionFault::OtherDigest);
    }
    if proof.issued_ns > now_ns.saturating_add(ASSERTION_FUTURE_NS)
        || now_ns.saturating_sub(proof.issued_ns) > max_age_ns
    {
        return Err(AssertionFault::Stale);
    }
    let ProofFactor::Passkey { credential_id, .. } = &proof.factor else {
        return Err(AssertionFault::NotTheirPasskey);
    };
    if *credential_id != rec.admin.credential_id {
        return Err(AssertionFault::NotTheirPasskey);
    }
    crate::policy::verify_passkey_key(config, &rec.key, proof)
        .map(|_| ())
        .map_err(|_| AssertionFault::BadSignature)
}

/// Checks that at least `quorum` distinct enrolled admins approved `digest` and returns them.
/// Assertions by unknown users, repeats and faulty ones do not count (each named in the
/// refusal).
pub fn verify_quorum(
    admins: &BTreeMap<u64, AdminRec>,
    quorum: u32,
    config: &Config,
    now_ns: u64,
    digest: &[u8; 32],
    assertions: &[AdminAssertion],
) -> Result<Vec<u64>, Refusal> {
    let mut ok = BTreeSet::new();
    let mut faults = Vec::new();
    for a in assertions.iter().take(ADMINS_MAX * 2) {
        let Some(rec) = admins.get(&a.admin) else {
            faults.push(format!("user {} is not an enrolled admin", a.admin));
            continue;
        };
        if ok.contains(&a.admin) {
            faults.push(format!("admin {} counted once", a.admin));
            continue;
        }
        let proof = crate::wire::step_up(&a.proof);
        match verify_assertion(rec, config, now_ns, CEREMONY_MAX_AGE_S * NS, digest, &proof) {
            Ok(()) => {
                ok.insert(a.admin);
            }
            Err(f) => faults.push(format!("admin {}'s assertion {}", a.admin, f.text())),
        }
    }
    if ok.len() < quorum as usize {
        let mut reason = format!(
            "{} valid admin assertion(s) where the quorum is {quorum}",
            ok.len()
        );
        if !faults.is_empty() {
            reason.push_str(": ");
            reason.push_str(&faults.join("; "));
        }
        return Err(Refusal {
            code: Code::QuorumMissing,
            reason,
        });
    }
    Ok(ok.into_iter().collect())
}

/// The challenge an admin's authenticator signs for `digest`: the step-up form, base64url.
pub fn challenge_text(digest: &[u8; 32], issued_ns: u64, nonce: &[u8; 16]) -> String {
    b64(&kinko_core::identity::challenge_bytes(issued_ns, nonce, digest))
}

/// What the operators' console hands an admin after a ceremony assertion (all base64url).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionFile {
    pub challenge: String,
    pub credential_id: String,
    pub authenticator_data: String,
    pub client_data_json: String,
    pub signature: String,
}

/// Turns an assertion file into the protocol's assertion, naming the admin whose enrolled
/// passkey made it.
pub fn assertion_from_file(f: &AssertionFile, admins: &[Admin]) -> Result<AdminAssertion, String> {
    use base64::Engine as _;
    let d = |what: &str, s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim().trim_end_matches('='))
            .map_err(|_| format!("{what} is not base64url"))
    };
    let challenge = d("challenge", &f.challenge)?;
    let (issued_ns, nonce, action) = kinko_core::identity::parse_challenge(&challenge)
        .ok_or("the challenge is not a kinko step-up challenge")?;
    let credential_id = d("credential_id", &f.credential_id)?;
    let admin = admins
        .iter()
        .find(|a| a.credential_id == credential_id)
        .ok_or("the assertion's passkey is not an enrolled admin's")?;
    Ok(AdminAssertion {
        admin: admin.id,
        proof: kinko_signer_proto::protocol::StepUp {
            action,
            issued_ns,
            nonce,
            factor: kinko_signer_proto::protocol::ProofFactor::Passkey {
                credential_id,
                authenticator_data: d("authenticator_data", &f.authenticator_data)?,
                client_data_json: d("client_data_json", &f.client_data_json)?,
                signature: d("signature", &f.signature)?,
            },
        },
    })
}

/// Why the first admins could not be enrolled.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("the log already has lines; later admins are added by an admin ceremony")]
    LogNotEmpty,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
}

/// Enrols the first admins and the quorum in a new, empty signer log (`kinko-signer init`):
/// the only enrolment without a quorum, done on the signer's machine before it first serves.
pub fn enrol_first(
    log: &std::path::Path,
    first: &[Admin],
    quorum: u32,
    now_ns: u64,
) -> Result<(), EnrolError> {
    let mut changes = Vec::new();
    let mut admins = BTreeMap::new();
    for a in first {
        let change = AdminChange::Add { admin: a.clone() };
        check_change(&admins, 0, &change).map_err(EnrolError::Invalid)?;
        admins.insert(a.id, parse_admin(a).map_err(EnrolError::Invalid)?);
        changes.push(change);
    }
    let change = AdminChange::Quorum { quorum };
    check_change(&admins, 0, &change).map_err(EnrolError::Invalid)?;
    changes.push(change);
    let mut opened = crate::log::Log::open(log)?;
    if !opened.lines.is_empty() {
        return Err(EnrolError::LogNotEmpty);
    }
    for change in changes {
        opened.log.append(
            now_ns,
            crate::log::Entry::AdminChanged {
                change,
                approvers: Vec::new(),
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(id: u64) -> Admin {
        Admin {
            id,
            name: format!("admin {id}"),
            email: format!("a{id}@example.com"),
            credential_id: vec![id as u8; 16],
            // The Ed25519 base point: a valid key.
            public_key: CredentialKey::Ed25519 {
                key: std::array::from_fn(|i| if i == 0 { 0x58 } else { 0x66 }),
            }
            .to_bytes(),
        }
    }

    #[test]
    fn digests_bind_everything_they_name() {
        let change = AdminChange::Quorum { quorum: 2 };
        let d = ceremony_digest("hot", &[0; 32], &change);
        assert_ne!(d, ceremony_digest("hot", &[1; 32], &change));
        assert_ne!(d, ceremony_digest("other", &[0; 32], &change));
        assert_ne!(
            d,
            ceremony_digest("hot", &[0; 32], &AdminChange::Quorum { quorum: 3 })
        );
        let c = clear_digest("hot", 5, "checked");
        assert_ne!(c, clear_digest("hot", 6, "checked"));
        assert_ne!(c, clear_digest("hot", 5, "checked!"));
        assert_ne!(c, clear_digest("cold", 5, "checked"));
        assert_ne!(admin_mac(&[1; 32], &d), admin_mac(&[2; 32], &d));
    }

    #[test]
    fn changes_that_cannot_apply_are_refused() {
        let mut admins = BTreeMap::new();
        for id in [1, 2] {
            admins.insert(id, parse_admin(&admin(id)).unwrap());
        }
        let bad = [
            AdminChange::Add { admin: admin(1) },
            AdminChange::Add {
                admin: Admin { id: 3, ..admin(1) },
            },
            AdminChange::Add {
                admin: Admin {
                    email: "nobody".into(),
                    ..admin(3)
                },
            },
            AdminChange::Add {
                admin: Admin {
                    public_key: vec![1, 2, 3],
                    ..admin(3)
                },
            },
            AdminChange::Remove { id: 9 },
            AdminChange::Remove { id: 1 },
            AdminChange::Quorum { quorum: 0 },
            AdminChange::Quorum { quorum: 3 },
        ];
        for change in bad {
            assert!(check_change(&admins, 2, &change).is_err(), "{change:?}");
        }
        assert!(check_change(&admins, 2, &AdminChange::Add { admin: admin(3) }).is_ok());
        assert!(check_change(&admins, 1, &AdminChange::Remove { id: 1 }).is_ok());
    }
}
