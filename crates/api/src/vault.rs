//! Secrets of API keys: generation, sealing at rest, constant-time verification.
//!
//! A native key is `<id>.<secret>`; the engine keeps BLAKE3(secret). A Coinbase-style key has an
//! id, a base64 secret (HMAC key) and a passphrase; the engine keeps the secret sealed with
//! ChaCha20-Poly1305 under the master key (a file outside the data directory, or an environment
//! variable) and BLAKE3(passphrase). Secrets never appear in logs or errors.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use kinko_core::keys::{ApiKey, KeySecret, Permissions};
use kinko_core::UserId;
use std::path::Path;
use subtle::ConstantTimeEq;

/// The key that seals secrets at rest.
#[derive(Clone)]
pub struct Vault {
    cipher: ChaCha20Poly1305,
    /// Root of the keys derived for other purposes (password pepper, freeze links).
    derive_root: [u8; 32],
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source works");
    b
}

/// Domain-separated hash of a secret as the engine stores it.
pub fn secret_hash(secret: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(b"kinko api key secret hash v1 ...", secret).as_bytes()
}

impl Vault {
    pub fn from_key(key: [u8; 32]) -> Vault {
        Vault {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            derive_root: blake3::derive_key("kinko vault derived keys v1", &key),
        }
    }

    /// A key for one purpose, derived from the master key (BLAKE3 keyed by the derivation
    /// root over the purpose), so that no two purposes share key material.
    pub fn subkey(&self, purpose: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.derive_root, purpose.as_bytes()).as_bytes()
    }

    /// Loads the master key (64 hex characters) from `path`, creating it (mode 0600) when
    /// `create` and it does not exist.
    pub fn load_or_create(path: &Path, create: bool) -> anyhow::Result<Vault> {
        use anyhow::Context;
        if !path.exists() && create {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let key: [u8; 32] = random_bytes();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(path)
                .with_context(|| format!("cannot create master key file {}", path.display()))?;
            std::io::Write::write_all(&mut f, format!("{}\n", hex::encode(key)).as_bytes())?;
            f.sync_all()?;
            tracing::warn!(path = %path.display(), "created a new master key; keep it safe and outside the data directory");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read master key file {}", path.display()))?;
            let mode = meta.permissions().mode() & 0o777;
            // Readable by the owner and, as a deployment may choose (root:kinko 0640), its
            // group; never by everyone, never writable by anyone but the owner.
            if mode & 0o027 != 0 {
                anyhow::bail!(
                    "the master key file {} is open to other users (mode {mode:o}); \
                     make it readable by this user only: chmod 600 {}",
                    path.display(),
                    path.display()
                );
            }
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read master key file {}", path.display()))?;
        Vault::from_hex(text.trim()).with_context(|| format!("master key file {}", path.display()))
    }

    pub fn from_hex(text: &str) -> anyhow::Result<Vault> {
        let bytes =
            hex::decode(text).map_err(|_| anyhow::anyhow!("the master key must be 64 hex characters"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the master key must be 64 hex characters"))?;
        Ok(Vault::from_key(key))
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = random_bytes();
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(Nonce::from_slice(&nonce), plaintext)
                .expect("sealing cannot fail"),
        );
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(12);
        self.cipher.decrypt(Nonce::from_slice(nonce), ct).ok()
    }
}

/// A newly generated native key: the record for the engine and the token shown once.
pub struct NewNativeKey {
    pub record: ApiKey,
    /// `<id>.<secret>`, shown to its owner once.
    pub token: String,
}

pub fn new_native_key(user: UserId, label: &str, permissions: Permissions) -> NewNativeKey {
    let id = format!("kk{}", hex::encode(random_bytes::<12>()));
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    NewNativeKey {
        record: ApiKey {
            id: id.clone(),
            user,
            label: label.to_owned(),
            permissions,
            secret: KeySecret::Native {
                secret_hash: secret_hash(secret.as_bytes()),
            },
            created_ns: 0,
            revoked: false,
            ip_allowlist: Vec::new(),
            expires_ns: None,
        },
        token: format!("{id}.{secret}"),
    }
}

pub struct NewCoinbaseKey {
    pub record: ApiKey,
    pub key: String,
    /// Base64, as Coinbase hands it out.
    pub secret: String,
    pub passphrase: String,
}

pub fn new_coinbase_key(
    vault: &Vault,
    user: UserId,
    label: &str,
    permissions: Permissions,
) -> NewCoinbaseKey {
    let key = hex::encode(random_bytes::<16>());
    let secret = STANDARD.encode(random_bytes::<64>());
    let passphrase = hex::encode(random_bytes::<8>());
    NewCoinbaseKey {
        record: ApiKey {
            id: key.clone(),
            user,
            label: label.to_owned(),
            permissions,
            secret: KeySecret::Coinbase {
                sealed_secret: vault.seal(secret.as_bytes()),
                passphrase_hash: secret_hash(passphrase.as_bytes()),
            },
            created_ns: 0,
            revoked: false,
            ip_allowlist: Vec::new(),
            expires_ns: None,
        },
        key,
        secret,
        passphrase,
    }
}

/// Checks a native token against a key record, in constant time.
pub fn verify_native(record: &ApiKey, secret: &str) -> bool {
    match &record.secret {
        KeySecret::Native { secret_hash: h } => bool::from(secret_hash(secret.as_bytes()).ct_eq(h)),
        KeySecret::Coinbase { .. } => false,
    }
}

/// Checks a Coinbase-style signature: base64(HMAC-SHA256(base64decode(secret), prehash)),
/// and the passphrase, in constant time.
pub fn verify_coinbase(
    vault: &Vault,
    record: &ApiKey,
    passphrase: &str,
    prehash: &[u8],
    signature_b64: &str,
) -> bool {
    use hmac::{Hmac, Mac};
    let KeySecret::Coinbase {
        sealed_secret,
        passphrase_hash,
    } = &record.secret
    else {
        return false;
    };
    let pass_ok: bool = secret_hash(passphrase.as_bytes()).ct_eq(passphrase_hash).into();
    let Some(secret_b64) = vault.open(sealed_secret) else {
        tracing::error!(key = %record.id, "a sealed API secret does not open with this master key");
        return false;
    };
    let Ok(secret) = STANDARD.decode(&secret_b64) else {
        return false;
    };
    let Ok(sig) = STANDARD.decode(signature_b64.trim()) else {
        return false;
    };
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&secret).expect("HMAC takes any key length");
    mac.update(prehash);
    let sig_ok = mac.verify_slice(&sig).is_ok();
    pass_ok & sig_ok
}

impl kinko_engine::ports::SecretOpener for Vault {
    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        Vault::open(self, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_hashes_are_domain_separated_from_recovery_code_hashes() {
        let h = crate::totp::recovery_code_hash("abcd-efgh-jkmn");
        assert_ne!(secret_hash(b"abcdefghjkmn"), h);
    }

    #[cfg(unix)]
    #[test]
    fn a_master_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kinko-master.key");
        let created = Vault::load_or_create(&path, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = created.seal(b"x");
        let again = Vault::load_or_create(&path, false).unwrap();
        assert_eq!(again.open(&sealed).as_deref(), Some(&b"x"[..]));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let Err(err) = Vault::load_or_create(&path, false) else {
            panic!("a key file mode 644 was accepted")
        };
        let err = err.to_string();
        assert!(err.contains("chmod 600") && err.contains("mode 644"), "{err}");
        assert!(
            !err.contains(&std::fs::read_to_string(&path).unwrap()[..16]),
            "{err}"
        );
        // root:kinko 0640, as the README suggests, is accepted.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Vault::load_or_create(&path, false).is_ok());
    }

    #[test]
    fn native_keys_verify_only_their_secret() {
        let k = new_native_key(UserId(1), "bot", Permissions::ALL);
        let (_, secret) = k.token.split_once('.').unwrap();
        assert!(verify_native(&k.record, secret));
        assert!(!verify_native(&k.record, "wrong"));
        assert!(!k.record.id.contains('.'));
    }

    #[test]
    fn coinbase_signatures_verify() {
        use hmac::{Hmac, Mac};
        let v = Vault::from_key([7; 32]);
        let k = new_coinbase_key(&v, UserId(1), "ccxt", Permissions::ALL);
        let prehash = b"1700000000GET/accounts";
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&STANDARD.decode(&k.secret).unwrap()).unwrap();
        mac.update(prehash);
        let sig = STANDARD.encode(mac.finalize().into_bytes());
        assert!(verify_coinbase(&v, &k.record, &k.passphrase, prehash, &sig));
        assert!(!verify_coinbase(&v, &k.record, "nope", prehash, &sig));
        assert!(!verify_coinbase(
            &v,
            &k.record,
            &k.passphrase,
            b"1700000001GET/accounts",
            &sig
        ));
        assert!(!verify_coinbase(
            &Vault::from_key([8; 32]),
            &k.record,
            &k.passphrase,
            prehash,
            &sig
        ));
    }

    #[test]
    fn sealing_round_trips_and_detects_tampering() {
        let v = Vault::from_key([1; 32]);
        let mut s = v.seal(b"secret");
        assert_eq!(v.open(&s).unwrap(), b"secret");
        let last = s.len() - 1;
        s[last] ^= 1;
        assert!(v.open(&s).is_none());
    }
}
