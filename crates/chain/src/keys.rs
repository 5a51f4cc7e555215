//! Watch-only keys: account-level extended public keys with their origin (`WatchKey`), the
//! addresses derived from them (hot P2WPKH, cold 2-of-3 P2WSH `sortedmulti`), and the output
//! descriptors Core imports for them (with the BIP-380 checksum).
//!
//! Paths follow BIP44 chains: `/0/i` receive (customer deposit addresses), `/1/i` change.

use crate::address::address_for;
use crate::network::Network;
use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint, Xpriv, Xpub};
use bitcoin::blockdata::opcodes::all::OP_CHECKMULTISIG;
use bitcoin::blockdata::opcodes::{Class, ClassifyContext};
use bitcoin::script::{Builder, Instruction, Script, ScriptBuf};
use bitcoin::secp256k1::{self, PublicKey, Secp256k1};
use bitcoin::CompressedPublicKey;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// Most keys in a cold `sortedmulti` (standard `OP_CHECKMULTISIG` pushes keep it at 15 here).
pub const MULTISIG_KEYS_MAX: usize = 15;

/// Longest `WatchKey` text we parse.
pub const WATCH_KEY_LEN_MAX: usize = 300;

/// Deepest origin path we accept.
pub const PATH_DEPTH_MAX: usize = 16;

pub(crate) fn secp() -> &'static Secp256k1<secp256k1::All> {
    static SECP: OnceLock<Secp256k1<secp256k1::All>> = OnceLock::new();
    SECP.get_or_init(Secp256k1::new)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key text is empty or longer than {WATCH_KEY_LEN_MAX} characters")]
    Length,
    #[error("key origin must look like [d34db33f/84h/1h/0h]")]
    Origin,
    #[error("invalid fingerprint (8 hex digits expected)")]
    Fingerprint,
    #[error("invalid derivation path step {0:?}")]
    PathStep(String),
    #[error("invalid extended public key")]
    Xpub,
    #[error("the key's depth or child number does not match its origin path")]
    OriginMismatch,
    #[error("extended key is for another network")]
    WrongNetwork,
    #[error("chain and index must be below 2^31 (unhardened)")]
    HardenedIndex,
    #[error(
        "threshold {threshold} of {keys} keys is not a valid multisig (1..=keys, keys ≤ {MULTISIG_KEYS_MAX})"
    )]
    Threshold { threshold: usize, keys: usize },
    #[error("the same key appears twice in a multisig")]
    DuplicateKey,
    #[error("key derivation failed")]
    Derivation,
}

/// An account-level extended public key with its origin: which master key (fingerprint) and
/// which path from it. Text form is the descriptor key-origin form
/// `[d34db33f/84h/1h/0h]tpub…` (parsing also accepts `'` and `H` for hardened).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WatchKey {
    pub fingerprint: Fingerprint,
    pub path: DerivationPath,
    pub xpub: Xpub,
}

impl FromStr for WatchKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<WatchKey, KeyError> {
        if s.is_empty() || s.len() > WATCH_KEY_LEN_MAX {
            return Err(KeyError::Length);
        }
        let rest = s.strip_prefix('[').ok_or(KeyError::Origin)?;
        let (origin, xpub) = rest.split_once(']').ok_or(KeyError::Origin)?;
        let mut steps = origin.split('/');
        let fp = steps.next().ok_or(KeyError::Origin)?;
        if fp.len() != 8 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::Fingerprint);
        }
        let fingerprint = Fingerprint::from_str(fp).map_err(|_| KeyError::Fingerprint)?;
        let mut path = Vec::new();
        for step in steps {
            if path.len() >= PATH_DEPTH_MAX {
                return Err(KeyError::Origin);
            }
            path.push(parse_step(step)?);
        }
        let xpub = Xpub::from_str(xpub).map_err(|_| KeyError::Xpub)?;
        let key = WatchKey {
            fingerprint,
            path: DerivationPath::from(path),
            xpub,
        };
        key.check_origin()?;
        Ok(key)
    }
}

impl fmt::Display for WatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}", self.fingerprint)?;
        for step in self.path.as_ref() {
            write!(f, "/{step:#}")?;
        }
        write!(f, "]{}", self.xpub)
    }
}

impl serde::Serialize for WatchKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for WatchKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WatchKey, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn parse_step(step: &str) -> Result<ChildNumber, KeyError> {
    let bad = || KeyError::PathStep(step.chars().take(16).collect());
    let (digits, hardened) = match step.strip_suffix(['h', 'H', '\'']) {
        Some(d) => (d, true),
        None => (step, false),
    };
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let index: u32 = digits.parse().map_err(|_| bad())?;
    if hardened {
        ChildNumber::from_hardened_idx(index).map_err(|_| bad())
    } else {
        ChildNumber::from_normal_idx(index).map_err(|_| bad())
    }
}

impl WatchKey {
    /// The extended key must sit where its origin says: depth = path length, its child number
    /// = the path's last step (and, one step below the master, parent = the master).
    fn check_origin(&self) -> Result<(), KeyError> {
        let steps: &[ChildNumber] = self.path.as_ref();
        if usize::from(self.xpub.depth) != steps.len() {
            return Err(KeyError::OriginMismatch);
        }
        match steps.last() {
            None if self.xpub.fingerprint() != self.fingerprint => Err(KeyError::OriginMismatch),
            Some(last) if *last != self.xpub.child_number => Err(KeyError::OriginMismatch),
            Some(_) if steps.len() == 1 && self.xpub.parent_fingerprint != self.fingerprint => {
                Err(KeyError::OriginMismatch)
            }
            _ => Ok(()),
        }
    }

    /// Whether the extended key's version bytes (`xpub` / `tpub`) belong to `net`.
    pub fn is_for(&self, net: Network) -> bool {
        self.xpub.network == net.key_kind()
    }

    /// The public key at `self/chain/index` and its full path from the master.
    pub fn derive(&self, chain: u32, index: u32) -> Result<(PublicKey, DerivationPath), KeyError> {
        let steps = [
            ChildNumber::from_normal_idx(chain).map_err(|_| KeyError::HardenedIndex)?,
            ChildNumber::from_normal_idx(index).map_err(|_| KeyError::HardenedIndex)?,
        ];
        let child = self
            .xpub
            .derive_pub(secp(), &steps)
            .map_err(|_| KeyError::Derivation)?;
        Ok((child.public_key, self.path.extend(steps)))
    }
}

/// `m/84'/coin'/0'`: the hot wallet's account (BIP84, native segwit).
pub fn hot_account_path(net: Network) -> DerivationPath {
    hardened_path(&[84, net.coin_type(), 0])
}

/// `m/48'/coin'/0'/2'`: a cold keyholder's account (BIP48, P2WSH multisig).
pub fn cold_account_path(net: Network) -> DerivationPath {
    hardened_path(&[48, net.coin_type(), 0, 2])
}

fn hardened_path(steps: &[u32]) -> DerivationPath {
    steps
        .iter()
        .map(|i| ChildNumber::Hardened {
            index: *i & 0x7fff_ffff,
        })
        .collect::<Vec<_>>()
        .into()
}

/// The account key at `path` below `xpriv_master`, with the master's fingerprint as origin.
/// Used by whoever holds the seed (the signer, a cold keyholder) to tell kinko its watch key.
///
/// # Panics
/// If `path` cannot be derived: deeper than 255 steps (BIP32's limit), or one of the
/// astronomically unlikely invalid child keys. Use [`try_watch_key`] for paths from input.
pub fn watch_key(xpriv_master: &Xpriv, path: &DerivationPath) -> WatchKey {
    try_watch_key(xpriv_master, path).expect("account path derivable (at most 255 steps)")
}

/// [`watch_key`] returning `KeyError::Derivation` instead of panicking.
pub fn try_watch_key(xpriv_master: &Xpriv, path: &DerivationPath) -> Result<WatchKey, KeyError> {
    let account = xpriv_master
        .derive_priv(secp(), path)
        .map_err(|_| KeyError::Derivation)?;
    Ok(WatchKey {
        fingerprint: xpriv_master.fingerprint(secp()),
        path: path.clone(),
        xpub: Xpub::from_priv(secp(), &account),
    })
}

/// One of our addresses: where it sits, its script and the keys that control it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    pub chain: u32,
    pub index: u32,
    pub script_pubkey: ScriptBuf,
    pub address: String,
    /// The P2WSH witness script (cold); `None` for P2WPKH (hot).
    pub witness_script: Option<ScriptBuf>,
    /// Each controlling public key with its origin (master fingerprint, full path from the
    /// master). For multisig, in witness-script order.
    pub keys: Vec<(PublicKey, (Fingerprint, DerivationPath))>,
}

impl Derived {
    /// Our address at `chain/index` paying `script_pubkey`, with its text on `net`.
    fn new(
        net: Network,
        chain: u32,
        index: u32,
        script_pubkey: ScriptBuf,
        witness_script: Option<ScriptBuf>,
        keys: Vec<(PublicKey, (Fingerprint, DerivationPath))>,
    ) -> Result<Derived, KeyError> {
        let address = address_for(net, &script_pubkey).ok_or(KeyError::Derivation)?;
        Ok(Derived {
            chain,
            index,
            script_pubkey,
            address,
            witness_script,
            keys,
        })
    }
}

/// The hot P2WPKH address at `key/chain/index`.
pub fn derive_hot(net: Network, key: &WatchKey, chain: u32, index: u32) -> Result<Derived, KeyError> {
    if !key.is_for(net) {
        return Err(KeyError::WrongNetwork);
    }
    let (pk, path) = key.derive(chain, index)?;
    let script_pubkey = ScriptBuf::new_p2wpkh(&CompressedPublicKey(pk).wpubkey_hash());
    Derived::new(
        net,
        chain,
        index,
        script_pubkey,
        None,
        vec![(pk, (key.fingerprint, path))],
    )
}

/// The cold wallet: `threshold` of the keyholders' account keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdKeys {
    pub threshold: usize,
    pub keys: Vec<WatchKey>,
}

impl ColdKeys {
    fn check(&self, net: Option<Network>) -> Result<(), KeyError> {
        let n = self.keys.len();
        if self.threshold == 0 || self.threshold > n || n > MULTISIG_KEYS_MAX {
            return Err(KeyError::Threshold {
                threshold: self.threshold,
                keys: n,
            });
        }
        if let Some(net) = net {
            if self.keys.iter().any(|k| !k.is_for(net)) {
                return Err(KeyError::WrongNetwork);
            }
        }
        for (i, a) in self.keys.iter().enumerate() {
            if self.keys[..i]
                .iter()
                .any(|b| b.xpub.public_key == a.xpub.public_key)
            {
                return Err(KeyError::DuplicateKey);
            }
        }
        Ok(())
    }
}

/// The cold P2WSH address at index `index` of the receive chain:
/// `wsh(sortedmulti(threshold, K1/0/index, …))`, keys sorted by their compressed
/// serialization (BIP67).
pub fn derive_cold(net: Network, cold: &ColdKeys, index: u32) -> Result<Derived, KeyError> {
    cold.check(Some(net))?;
    let chain = 0;
    let mut keys = Vec::with_capacity(cold.keys.len());
    for key in &cold.keys {
        let (pk, path) = key.derive(chain, index)?;
        keys.push((pk, (key.fingerprint, path)));
    }
    keys.sort_by_key(|(pk, _)| pk.serialize());
    for pair in keys.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(KeyError::DuplicateKey);
        }
    }
    let witness_script = multisig_script(cold.threshold, keys.iter().map(|(pk, _)| pk))?;
    let script_pubkey = ScriptBuf::new_p2wsh(&witness_script.wscript_hash());
    Derived::new(net, chain, index, script_pubkey, Some(witness_script), keys)
}

fn multisig_script<'a>(
    threshold: usize,
    keys: impl ExactSizeIterator<Item = &'a PublicKey>,
) -> Result<ScriptBuf, KeyError> {
    let n = keys.len();
    let bad = KeyError::Threshold { threshold, keys: n };
    let k = i64::try_from(threshold).map_err(|_| bad.clone())?;
    let n_int = i64::try_from(n).map_err(|_| bad)?;
    let mut b = Builder::new().push_int(k);
    for pk in keys {
        b = b.push_slice(pk.serialize());
    }
    Ok(b.push_int(n_int).push_opcode(OP_CHECKMULTISIG).into_script())
}

/// A bare `OP_k <pk>… OP_n OP_CHECKMULTISIG` script read back: `(k, keys in script order)`.
/// `None` for anything else.
pub fn parse_multisig(script: &Script) -> Option<(usize, Vec<PublicKey>)> {
    let ins: Vec<Instruction> = script.instructions().collect::<Result<_, _>>().ok()?;
    let (first, rest) = ins.split_first()?;
    let (last, rest) = rest.split_last()?;
    let (n_ins, key_ins) = rest.split_last()?;
    if *last != Instruction::Op(OP_CHECKMULTISIG) {
        return None;
    }
    let small_int = |i: &Instruction| match i {
        Instruction::Op(op) => match op.classify(ClassifyContext::Legacy) {
            Class::PushNum(n) => usize::try_from(n).ok(),
            _ => None,
        },
        Instruction::PushBytes(_) => None,
    };
    let k = small_int(first)?;
    let n = small_int(n_ins)?;
    if k == 0 || k > n || n != key_ins.len() {
        return None;
    }
    let mut keys = Vec::with_capacity(n);
    for i in key_ins {
        match i {
            Instruction::PushBytes(b) if b.len() == 33 => {
                keys.push(PublicKey::from_slice(b.as_bytes()).ok()?)
            }
            _ => return None,
        }
    }
    Some((k, keys))
}

/// `wpkh([fp/84h/1h/0h]tpub…/chain/*)#checksum`: the hot chain's ranged descriptor.
pub fn hot_descriptor(key: &WatchKey, chain: u32) -> String {
    with_checksum(format!("wpkh({key}/{chain}/*)"))
}

/// `wsh(sortedmulti(k,[…]tpub…/0/*,…))#checksum`: the cold receive chain's ranged descriptor,
/// keys in the order given (`sortedmulti` sorts per index).
pub fn cold_descriptor(cold: &ColdKeys) -> String {
    let keys: Vec<String> = cold.keys.iter().map(|k| format!("{k}/0/*")).collect();
    with_checksum(format!("wsh(sortedmulti({},{}))", cold.threshold, keys.join(",")))
}

fn with_checksum(desc: String) -> String {
    // Our descriptors only use characters of the checksum alphabet.
    match descriptor_checksum(&desc) {
        Some(c) => format!("{desc}#{c}"),
        None => desc,
    }
}

/// The BIP-380 descriptor checksum (8 characters) of `desc` (without `#…`), or `None` if
/// `desc` has a character outside the descriptor alphabet.
pub fn descriptor_checksum(desc: &str) -> Option<String> {
    const INPUT_CHARSET: &str =
        "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
    const CHECKSUM_CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    fn polymod(c: u64, val: u64) -> u64 {
        const GENERATOR: [u64; 5] = [
            0xf5dee51989,
            0xa9fdca3312,
            0x1bab10e32d,
            0x3706b1677a,
            0x644d626ffd,
        ];
        let top = c >> 35;
        let mut c = ((c & 0x7_ffff_ffff) << 5) ^ val;
        for (i, g) in GENERATOR.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                c ^= g;
            }
        }
        c
    }
    let mut c: u64 = 1;
    let mut cls: u64 = 0;
    let mut cls_count = 0;
    for ch in desc.chars() {
        let pos = INPUT_CHARSET.find(ch)? as u64;
        c = polymod(c, pos & 31);
        cls = cls * 3 + (pos >> 5);
        cls_count += 1;
        if cls_count == 3 {
            c = polymod(c, cls);
            cls = 0;
            cls_count = 0;
        }
    }
    if cls_count > 0 {
        c = polymod(c, cls);
    }
    for _ in 0..8 {
        c = polymod(c, 0);
    }
    c ^= 1;
    let out = (0..8)
        .map(|j| char::from(CHECKSUM_CHARSET[((c >> (5 * (7 - j))) & 31) as usize]))
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(seed: u8) -> Xpriv {
        Xpriv::new_master(bitcoin::NetworkKind::Test, &[seed; 32]).unwrap()
    }

    #[test]
    fn watch_key_round_trips_and_checks_origin() {
        let net = Network::LitecoinRegtest;
        let key = watch_key(&master(1), &hot_account_path(net));
        let text = key.to_string();
        assert!(
            text.starts_with(&format!("[{}/84h/1h/0h]tpub", key.fingerprint)),
            "{text}"
        );
        assert_eq!(text.parse::<WatchKey>().unwrap(), key);
        let apostrophes = text.replace("h/", "'/").replace("h]", "']");
        assert_eq!(apostrophes.parse::<WatchKey>().unwrap(), key);
        assert_eq!(text.replace("/84h/", "/84H/").parse::<WatchKey>().unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<WatchKey>(&json).unwrap(), key);
        // Origin path that does not match the key's depth / child number.
        let xpub = key.xpub.to_string();
        let fp = key.fingerprint;
        for bad in [
            format!("[{fp}/84h/1h]{xpub}"),
            format!("[{fp}/84h/1h/1h]{xpub}"),
            format!("[{fp}/84h/1h/0]{xpub}"),
            format!("[{fp}/84h/1h/0h/0]{xpub}"),
            xpub.clone(),
            format!("[{fp}/84h/1h/0h{xpub}"),
            format!("[zzzzzzzz/84h/1h/0h]{xpub}"),
            format!("[{fp}/84x/1h/0h]{xpub}"),
            format!("[{fp}/+84h/1h/0h]{xpub}"),
            format!("[{fp}/2147483648/1h/0h]{xpub}"),
            format!("[{fp}//1h/0h]{xpub}"),
            format!("[{fp}/84h/1h/0h]{}x", xpub),
            format!("[{fp}/84h/1h/0h]"),
            String::new(),
            "[".repeat(400),
            "[é]".into(),
        ] {
            assert!(bad.parse::<WatchKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(hot_account_path(Network::Litecoin).to_string(), "84'/2'/0'");
        assert_eq!(
            hot_account_path(Network::LitecoinTestnet).to_string(),
            "84'/1'/0'"
        );
        assert_eq!(
            cold_account_path(Network::LitecoinRegtest).to_string(),
            "48'/1'/0'/2'"
        );
    }

    #[test]
    fn derivation_matches_private_derivation() {
        let net = Network::LitecoinRegtest;
        let m = master(2);
        let key = watch_key(&m, &hot_account_path(net));
        let d = derive_hot(net, &key, 1, 7).unwrap();
        let (pk, (fp, path)) = &d.keys[0];
        assert_eq!(*fp, m.fingerprint(secp()));
        assert_eq!(path.to_string(), "84'/1'/0'/1/7");
        let sk = m.derive_priv(secp(), path).unwrap();
        assert_eq!(sk.private_key.public_key(secp()), *pk);
        assert!(d.address.starts_with("rltc1q"));
        assert_eq!(
            derive_hot(Network::Litecoin, &key, 0, 0),
            Err(KeyError::WrongNetwork)
        );
        assert_eq!(derive_hot(net, &key, 0, 1 << 31), Err(KeyError::HardenedIndex));
    }

    #[test]
    fn cold_multisig() {
        let net = Network::LitecoinRegtest;
        let keys: Vec<WatchKey> = (1..=3)
            .map(|s| watch_key(&master(s), &cold_account_path(net)))
            .collect();
        let cold = ColdKeys {
            threshold: 2,
            keys: keys.clone(),
        };
        let d = derive_cold(net, &cold, 5).unwrap();
        let ws = d.witness_script.clone().unwrap();
        let (k, pks) = parse_multisig(&ws).unwrap();
        assert_eq!(k, 2);
        let mut sorted = pks.clone();
        sorted.sort_by_key(|p| p.serialize());
        assert_eq!(pks, sorted);
        assert_eq!(pks, d.keys.iter().map(|(p, _)| *p).collect::<Vec<_>>());
        // Order of keys does not change the address.
        let rev = ColdKeys {
            threshold: 2,
            keys: keys.iter().rev().cloned().collect(),
        };
        assert_eq!(derive_cold(net, &rev, 5).unwrap().address, d.address);
        for (threshold, keys) in [(0, keys.clone()), (4, keys.clone()), (1, vec![])] {
            let c = ColdKeys { threshold, keys };
            assert!(matches!(derive_cold(net, &c, 0), Err(KeyError::Threshold { .. })));
        }
        let dup = ColdKeys {
            threshold: 2,
            keys: vec![keys[0].clone(), keys[0].clone()],
        };
        assert_eq!(derive_cold(net, &dup, 0), Err(KeyError::DuplicateKey));
        assert!(cold_descriptor(&cold).starts_with("wsh(sortedmulti(2,["));
        assert!(parse_multisig(&d.script_pubkey).is_none());
        assert!(parse_multisig(Script::new()).is_none());
    }

    #[test]
    fn checksum_known_vectors() {
        // From BIP-380.
        assert_eq!(descriptor_checksum("raw(deadbeef)").as_deref(), Some("89f8spxm"));
        assert_eq!(
            descriptor_checksum("addr(mkmZxiEcEd8ZqjQWVZuC6so5dFMKEFpN2j)").as_deref(),
            Some("02wpgw69")
        );
        assert_eq!(descriptor_checksum("raw(dé)"), None);
    }
}
