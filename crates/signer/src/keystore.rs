//! The encrypted keystore: one BIP39 seed, sealed with XChaCha20-Poly1305 under a key stretched
//! from a passphrase by argon2id.
//!
//! File (JSON, mode 0600, written once, atomically, never overwritten):
//! `{version: 1, kind: "kinko-signer keystore", network, role: "hot"|"cold",
//!   kdf: {alg: "argon2id", m_kib, t, p, salt}, nonce, ciphertext, watch_key}`
//! with hex `salt`, `nonce` (24 bytes) and `ciphertext`. The associated data of the AEAD is the
//! JSON of every field but `nonce` and `ciphertext`, so none of them can be changed unnoticed.
//! `watch_key` is the account's public key with its origin (`[fp/84h/1h/0h]tpub…` for hot,
//! `[fp/48h/1h/0h/2h]tpub…` for cold), readable without the passphrase.
//!
//! The secret is the 32 bytes of entropy of a 24-word BIP39 mnemonic; the BIP32 master key is
//! `Xpriv::new_master(network, mnemonic.to_seed(""))`. Secrets live in [`Zeroizing`] buffers
//! and are never printed except the mnemonic, once, by `kinko-signer init`.

use bitcoin::bip32::{DerivationPath, Fingerprint, Xpriv};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use kinko_chain::keys::{cold_account_path, hot_account_path, try_watch_key, WatchKey};
use kinko_chain::Network;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{BufRead, Read as _, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::Zeroizing;

pub const VERSION: u32 = 1;
pub const KIND: &str = "kinko-signer keystore";
/// Set to `1` to create keystores with (and accept) a KDF far below the floor. Tests only.
pub const KDF_TEST_FAST_ENV: &str = "KINKO_SIGNER_KDF_TEST_FAST";
/// The passphrase, if given through the environment.
pub const PASSPHRASE_ENV: &str = "KINKO_SIGNER_PASSPHRASE";
/// Shortest passphrase `create` accepts.
pub const PASSPHRASE_LEN_MIN: usize = 8;
/// Longest passphrase read.
pub const PASSPHRASE_LEN_MAX: usize = 1024;
/// Largest keystore file read.
const FILE_BYTES_MAX: u64 = 64 * 1024;
const SALT_BYTES: usize = 16;
const ENTROPY_BYTES: usize = 32;

/// What the key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The signer's hot wallet: account `m/84'/coin'/0'` (P2WPKH).
    Hot,
    /// A cold keyholder's share: account `m/48'/coin'/0'/2'` (P2WSH multisig).
    Cold,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Hot => "hot",
            Role::Cold => "cold",
        }
    }
    pub fn from_name(s: &str) -> Option<Role> {
        match s {
            "hot" => Some(Role::Hot),
            "cold" => Some(Role::Cold),
            _ => None,
        }
    }
    pub fn account_path(self, net: Network) -> DerivationPath {
        match self {
            Role::Hot => hot_account_path(net),
            Role::Cold => cold_account_path(net),
        }
    }
}

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl KdfParams {
    /// What `create` uses: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 65_536,
        t: 3,
        p: 1,
    };
    /// The test setting (only with [`KDF_TEST_FAST_ENV`]).
    pub const TEST_FAST: KdfParams = KdfParams {
        m_kib: 256,
        t: 1,
        p: 1,
    };
    /// The least `open` accepts without the test setting (OWASP's argon2id minimum).
    pub const FLOOR: KdfParams = KdfParams {
        m_kib: 19_456,
        t: 2,
        p: 1,
    };
    /// The most `open` will spend (a crafted file must not exhaust the machine).
    const CEILING: KdfParams = KdfParams {
        m_kib: 4 * 1024 * 1024,
        t: 64,
        p: 16,
    };

    /// [`KdfParams::TEST_FAST`] when [`KDF_TEST_FAST_ENV`] is `1`, else the default.
    pub fn from_env() -> KdfParams {
        if weak_kdf_allowed() {
            KdfParams::TEST_FAST
        } else {
            KdfParams::DEFAULT
        }
    }

    fn below_floor(self) -> bool {
        self.m_kib < Self::FLOOR.m_kib || self.t < Self::FLOOR.t
    }

    fn above_ceiling(self) -> bool {
        self.m_kib > Self::CEILING.m_kib
            || self.t > Self::CEILING.t
            || self.p > Self::CEILING.p
            || self.p == 0
    }
}

/// Whether [`KDF_TEST_FAST_ENV`] is set to `1`.
pub fn weak_kdf_allowed() -> bool {
    std::env::var(KDF_TEST_FAST_ENV).is_ok_and(|v| v == "1")
}

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("keystore {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("keystore {0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("keystore {path} is not a kinko-signer keystore: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("wrong passphrase or damaged keystore")]
    WrongPassphrase,
    #[error("keystore KDF parameters are below the floor (m_kib ≥ {}, t ≥ {})", KdfParams::FLOOR.m_kib, KdfParams::FLOOR.t)]
    WeakKdf,
    #[error("passphrase must be {PASSPHRASE_LEN_MIN} to {PASSPHRASE_LEN_MAX} bytes")]
    PassphraseLength,
    #[error("no passphrase given ({PASSPHRASE_ENV}, --passphrase-file or one line on standard input)")]
    NoPassphrase,
    #[error("key derivation failed: {0}")]
    Derivation(String),
    #[error("the system random source failed")]
    Random,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfFile {
    alg: String,
    m_kib: u32,
    t: u32,
    p: u32,
    salt: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeystoreFile {
    version: u32,
    kind: String,
    network: String,
    role: Role,
    kdf: KdfFile,
    nonce: String,
    ciphertext: String,
    watch_key: String,
}

/// The header the AEAD authenticates: every field but the nonce and the ciphertext.
#[derive(Serialize)]
struct Header<'a> {
    version: u32,
    kind: &'a str,
    network: &'a str,
    role: Role,
    kdf: &'a KdfFile,
    watch_key: &'a str,
}

impl KeystoreFile {
    fn aad(&self) -> Vec<u8> {
        serde_json::to_vec(&Header {
            version: self.version,
            kind: &self.kind,
            network: &self.network,
            role: self.role,
            kdf: &self.kdf,
            watch_key: &self.watch_key,
        })
        .expect("a header of strings and integers serializes")
    }
}

/// The public parts of a keystore (readable without the passphrase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keystore {
    pub path: PathBuf,
    pub network: Network,
    pub role: Role,
    pub watch_key: WatchKey,
    pub kdf: KdfParams,
}

/// An opened keystore: the seed, in memory only, wiped on drop.
pub struct Unlocked {
    entropy: Zeroizing<[u8; ENTROPY_BYTES]>,
    seed: Zeroizing<[u8; 64]>,
    network: Network,
    role: Role,
    watch_key: WatchKey,
}

impl fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unlocked")
            .field("network", &self.network)
            .field("role", &self.role)
            .field("watch_key", &self.watch_key.to_string())
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> Result<[u8; N], KeystoreError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| KeystoreError::Random)?;
    Ok(b)
}

fn stretch(passphrase: &[u8], salt: &[u8], kdf: KdfParams) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|e| KeystoreError::Derivation(format!("argon2 parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase, salt, &mut *key)
        .map_err(|e| KeystoreError::Derivation(format!("argon2: {e}")))?;
    Ok(key)
}

impl Unlocked {
    fn from_entropy(
        entropy: Zeroizing<[u8; ENTROPY_BYTES]>,
        network: Network,
        role: Role,
    ) -> Result<Unlocked, KeystoreError> {
        let mnemonic = bip39::Mnemonic::from_entropy(&entropy[..])
            .map_err(|e| KeystoreError::Derivation(format!("mnemonic: {e}")))?;
        let seed = Zeroizing::new(mnemonic.to_seed(""));
        let master = Xpriv::new_master(network.key_kind(), &seed[..])
            .map_err(|e| KeystoreError::Derivation(format!("master key: {e}")))?;
        let wk = try_watch_key(&master, &role.account_path(network))
            .map_err(|e| KeystoreError::Derivation(format!("account key: {e}")))?;
        Ok(Unlocked {
            entropy,
            seed,
            network,
            role,
            watch_key: wk,
        })
    }

    /// The BIP32 master key. Keep it only as long as one signing needs it.
    pub fn master(&self) -> Xpriv {
        Xpriv::new_master(self.network.key_kind(), &self.seed[..])
            .expect("the seed made a master key when opened")
    }

    /// The master key's fingerprint (what PSBT derivations name).
    pub fn fingerprint(&self) -> Fingerprint {
        self.watch_key.fingerprint
    }

    pub fn watch_key(&self) -> &WatchKey {
        &self.watch_key
    }
    pub fn network(&self) -> Network {
        self.network
    }
    pub fn role(&self) -> Role {
        self.role
    }

    fn derived(&self, context: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(context, &self.entropy[..]))
    }

    /// The key whose MAC clears a halt (only someone who can open the keystore has it).
    pub fn clear_key(&self) -> Zeroizing<[u8; 32]> {
        self.derived("kinko-signer clear key v1")
    }

    /// The key TOTP secrets are sealed under in the signer's log.
    pub fn totp_key(&self) -> Zeroizing<[u8; 32]> {
        self.derived("kinko-signer totp seal v1")
    }

    /// The witness key (Ed25519) the signer cosigns kinko's journal and audit heads with;
    /// derived from the seed, so it never leaves the keystore and survives a restore.
    pub fn witness_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.derived("kinko-signer witness key v1"))
    }
}

/// Writes `bytes` to `path` atomically, mode 0600, refusing to replace an existing file.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let io = |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        return Err(KeystoreError::Exists(path.to_owned()));
    }
    let dir = folder_of(path);
    let name = path.file_name().ok_or_else(|| KeystoreError::Format {
        path: path.to_owned(),
        reason: "no file name".into(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        hex::encode(random::<6>()?)
    ));
    let res = (|| {
        create_private(&tmp, bytes)?;
        // A hard link never replaces an existing file: create-if-absent, atomically.
        std::fs::hard_link(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&tmp);
    res.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeystoreError::Exists(path.to_owned())
        } else {
            io(e)
        }
    })
}

/// The folder `path` is in (`.` for a bare file name).
pub fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Creates `path`, which must not exist yet, with mode 0600 and writes `bytes` to it, synced to
/// disk. The keystore and `kinko-signer offline-sign` write their temporaries this way before
/// moving them into place.
pub fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn read_file(path: &Path) -> Result<KeystoreFile, KeystoreError> {
    let io = |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > FILE_BYTES_MAX {
        return Err(KeystoreError::Format {
            path: path.to_owned(),
            reason: "file is too large".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let f: KeystoreFile = serde_json::from_slice(&bytes).map_err(|e| KeystoreError::Format {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if f.version != VERSION || f.kind != KIND || f.kdf.alg != "argon2id" {
        return Err(KeystoreError::Format {
            path: path.to_owned(),
            reason: "unknown version, kind or KDF".into(),
        });
    }
    Ok(f)
}

impl Keystore {
    /// Creates a new keystore with the KDF of [`KdfParams::from_env`]. Returns it and the
    /// mnemonic, to be shown to the operator once.
    pub fn create(
        path: &Path,
        network: Network,
        role: Role,
        passphrase: &str,
    ) -> Result<(Keystore, Zeroizing<String>), KeystoreError> {
        Keystore::create_with(path, network, role, passphrase, KdfParams::from_env())
    }

    pub fn create_with(
        path: &Path,
        network: Network,
        role: Role,
        passphrase: &str,
        kdf: KdfParams,
    ) -> Result<(Keystore, Zeroizing<String>), KeystoreError> {
        if passphrase.len() < PASSPHRASE_LEN_MIN || passphrase.len() > PASSPHRASE_LEN_MAX {
            return Err(KeystoreError::PassphraseLength);
        }
        if path.exists() {
            return Err(KeystoreError::Exists(path.to_owned()));
        }
        let entropy = Zeroizing::new(random::<ENTROPY_BYTES>()?);
        let mnemonic = {
            let m = bip39::Mnemonic::from_entropy(&entropy[..])
                .map_err(|e| KeystoreError::Derivation(format!("mnemonic: {e}")))?;
            Zeroizing::new(m.to_string())
        };
        let unlocked = Unlocked::from_entropy(entropy, network, role)?;
        let salt = random::<SALT_BYTES>()?;
        let nonce = random::<24>()?;
        let mut file = KeystoreFile {
            version: VERSION,
            kind: KIND.into(),
            network: network.name().into(),
            role,
            kdf: KdfFile {
                alg: "argon2id".into(),
                m_kib: kdf.m_kib,
                t: kdf.t,
                p: kdf.p,
                salt: hex::encode(salt),
            },
            nonce: hex::encode(nonce),
            ciphertext: String::new(),
            watch_key: unlocked.watch_key.to_string(),
        };
        let key = stretch(passphrase.as_bytes(), &salt, kdf)?;
        let aead = XChaCha20Poly1305::new((&*key).into());
        let aad = file.aad();
        let ct = aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &unlocked.entropy[..],
                    aad: &aad,
                },
            )
            .map_err(|_| KeystoreError::Derivation("encryption failed".into()))?;
        file.ciphertext = hex::encode(ct);
        let mut bytes = serde_json::to_vec_pretty(&file).expect("keystore file serializes");
        bytes.push(b'\n');
        write_new(path, &bytes)?;
        Ok((
            Keystore {
                path: path.to_owned(),
                network,
                role,
                watch_key: unlocked.watch_key.clone(),
                kdf,
            },
            mnemonic,
        ))
    }

    /// Reads the public parts (no passphrase needed).
    pub fn read(path: &Path) -> Result<Keystore, KeystoreError> {
        let f = read_file(path)?;
        let format = |reason: &str| KeystoreError::Format {
            path: path.to_owned(),
            reason: reason.into(),
        };
        let network = Network::from_name(&f.network).ok_or_else(|| format("unknown network"))?;
        let watch_key =
            WatchKey::from_str(&f.watch_key).map_err(|_| format("watch_key is not a key with origin"))?;
        Ok(Keystore {
            path: path.to_owned(),
            network,
            role: f.role,
            watch_key,
            kdf: KdfParams {
                m_kib: f.kdf.m_kib,
                t: f.kdf.t,
                p: f.kdf.p,
            },
        })
    }

    /// Opens the keystore. KDF parameters below the floor are refused unless
    /// [`KDF_TEST_FAST_ENV`] is set.
    pub fn open(path: &Path, passphrase: &str) -> Result<Unlocked, KeystoreError> {
        Keystore::open_with(path, passphrase, weak_kdf_allowed())
    }

    pub fn open_with(path: &Path, passphrase: &str, allow_weak_kdf: bool) -> Result<Unlocked, KeystoreError> {
        let f = read_file(path)?;
        let public = Keystore::read(path)?;
        if public.kdf.above_ceiling() {
            return Err(KeystoreError::Format {
                path: path.to_owned(),
                reason: "KDF parameters out of range".into(),
            });
        }
        if public.kdf.below_floor() && !allow_weak_kdf {
            return Err(KeystoreError::WeakKdf);
        }
        let salt = hex::decode(&f.kdf.salt).map_err(|_| KeystoreError::WrongPassphrase)?;
        let nonce: [u8; 24] = hex::decode(&f.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(KeystoreError::WrongPassphrase)?;
        let ct = hex::decode(&f.ciphertext).map_err(|_| KeystoreError::WrongPassphrase)?;
        if salt.len() < 8 {
            return Err(KeystoreError::WrongPassphrase);
        }
        let key = stretch(passphrase.as_bytes(), &salt, public.kdf)?;
        let aead = XChaCha20Poly1305::new((&*key).into());
        let aad = f.aad();
        let plain = Zeroizing::new(
            aead.decrypt(XNonce::from_slice(&nonce), Payload { msg: &ct, aad: &aad })
                .map_err(|_| KeystoreError::WrongPassphrase)?,
        );
        let mut entropy = Zeroizing::new([0u8; ENTROPY_BYTES]);
        if plain.len() != ENTROPY_BYTES {
            return Err(KeystoreError::WrongPassphrase);
        }
        entropy.copy_from_slice(&plain);
        let unlocked = Unlocked::from_entropy(entropy, public.network, public.role)?;
        // The header is authenticated, so this holds unless the file was written wrongly.
        if unlocked.watch_key != public.watch_key {
            return Err(KeystoreError::WrongPassphrase);
        }
        Ok(unlocked)
    }
}

/// The passphrase: from [`PASSPHRASE_ENV`], else the first line of `file`, else one line of
/// standard input. A trailing newline is removed.
pub fn read_passphrase(file: Option<&Path>) -> Result<Zeroizing<String>, KeystoreError> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        return check_len(Zeroizing::new(p));
    }
    if let Some(path) = file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| KeystoreError::Io {
            path: path.to_owned(),
            source,
        })?);
        let line = text.lines().next().unwrap_or("");
        return check_len(Zeroizing::new(line.to_owned()));
    }
    let mut line = Zeroizing::new(String::new());
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let n = (&mut lock)
        .take(PASSPHRASE_LEN_MAX as u64 + 2)
        .read_line(&mut line)
        .map_err(|source| KeystoreError::Io {
            path: PathBuf::from("<stdin>"),
            source,
        })?;
    if n == 0 {
        return Err(KeystoreError::NoPassphrase);
    }
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    check_len(trimmed)
}

fn check_len(p: Zeroizing<String>) -> Result<Zeroizing<String>, KeystoreError> {
    if p.is_empty() {
        return Err(KeystoreError::NoPassphrase);
    }
    if p.len() > PASSPHRASE_LEN_MAX {
        return Err(KeystoreError::PassphraseLength);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = "correct horse battery staple";

    /// A regtest keystore at `p` under [`PASS`], with the fast test KDF.
    fn create(p: &Path, role: Role) -> Result<(Keystore, Zeroizing<String>), KeystoreError> {
        Keystore::create_with(p, Network::LitecoinRegtest, role, PASS, KdfParams::TEST_FAST)
    }

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hot.keystore");
        let (ks, words) = create(&p, Role::Hot).unwrap();
        assert_eq!(words.split(' ').count(), 24);
        let text = std::fs::read_to_string(&p).unwrap();
        // No word of the mnemonic is a value in the file (keys such as "network" or "kind" are
        // BIP39 words too), and the phrase is nowhere in it.
        fn values(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|x| values(x, out)),
                serde_json::Value::Object(m) => m.values().for_each(|x| values(x, out)),
                _ => {}
            }
        }
        let mut strings = Vec::new();
        values(&serde_json::from_str(&text).unwrap(), &mut strings);
        for w in words.split(' ') {
            assert!(!strings.iter().any(|s| s == w), "{w}");
        }
        assert!(!text.contains(words.as_str()));
        assert_eq!(Keystore::read(&p).unwrap(), ks);
        assert!(
            ks.watch_key.to_string().contains("/84h/1h/0h]tpub"),
            "{}",
            ks.watch_key
        );
        let u = Keystore::open_with(&p, PASS, true).unwrap();
        assert_eq!(u.watch_key(), &ks.watch_key);
        assert_eq!(u.fingerprint(), ks.watch_key.fingerprint);
        let secp = bitcoin::secp256k1::Secp256k1::new();
        assert_eq!(u.master().fingerprint(&secp), ks.watch_key.fingerprint);
        assert_ne!(*u.clear_key(), *u.totp_key());
        let err = Keystore::open_with(&p, "wrong passphrase!", true).unwrap_err();
        assert_eq!(err.to_string(), "wrong passphrase or damaged keystore");
        // The floor applies without the test setting.
        assert!(matches!(
            Keystore::open_with(&p, PASS, false),
            Err(KeystoreError::WeakKdf)
        ));
        // Never overwritten.
        assert!(matches!(create(&p, Role::Hot), Err(KeystoreError::Exists(_))));
        let mode = std::fs::metadata(&p).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        assert!(!format!("{u:?}").contains(&hex::encode(&u.entropy[..])));
    }

    #[test]
    fn header_is_authenticated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cold.keystore");
        let (ks, _) = create(&p, Role::Cold).unwrap();
        assert!(
            ks.watch_key.to_string().contains("/48h/1h/0h/2h]tpub"),
            "{}",
            ks.watch_key
        );
        let text = std::fs::read_to_string(&p).unwrap();
        let changed = text.replace("\"cold\"", "\"hot\"");
        assert_ne!(changed, text);
        std::fs::write(&p, changed).unwrap();
        assert!(matches!(
            Keystore::open_with(&p, PASS, true),
            Err(KeystoreError::WrongPassphrase)
        ));
    }
}
