//! Ethereum primitives for custody (docs/design/ethereum.md): addresses in EIP-55 form,
//! Keccak-256, deposit-address derivation from the hot account's xpub, EIP-1559 transaction
//! encoding and decoding ([`tx`]), ERC-20 `transfer` calldata, a JSON-RPC client ([`rpc`]) and
//! a real Anvil node for tests ([`anvil`]). Public keys only: signing is `kinko_signer::eth`.

pub mod anvil;
pub mod cold;
pub mod rpc;
pub mod tx;

use bitcoin::bip32::ChildNumber;
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use sha3::{Digest, Keccak256};
use std::fmt;
use std::str::FromStr;

pub use anvil::{Anvil, AnvilError};
/// The account key kinko derives deposit and hot addresses from (`kinko-signer eth-xpub`).
pub use bitcoin::bip32::Xpub;
pub use rpc::{EthRpc, EthRpcError};
pub use tx::{Eip1559, EthTxError, Signature};

/// Keccak-256 (Ethereum's hash, not SHA3-256).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// A 20-byte account address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthAddress(pub [u8; 20]);

/// Why a string is not an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("an address is 0x followed by 40 hex digits")]
    Shape,
    #[error("the mixed-case address fails its EIP-55 checksum")]
    Checksum,
}

impl EthAddress {
    /// The address of a public key: the last 20 bytes of Keccak-256 of its uncompressed form.
    pub fn from_pubkey(key: &PublicKey) -> EthAddress {
        let full = key.serialize_uncompressed();
        let hash = keccak256(&full[1..]);
        let mut a = [0u8; 20];
        a.copy_from_slice(&hash[12..]);
        EthAddress(a)
    }

    /// Parses `0x` + 40 hex digits. All lower or all upper case is accepted as it is; mixed
    /// case must carry a correct EIP-55 checksum.
    pub fn parse(s: &str) -> Result<EthAddress, AddressError> {
        let hex_part = s.strip_prefix("0x").ok_or(AddressError::Shape)?;
        if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AddressError::Shape);
        }
        let mut a = [0u8; 20];
        hex::decode_to_slice(hex_part, &mut a).map_err(|_| AddressError::Shape)?;
        let addr = EthAddress(a);
        let lower = hex_part.bytes().all(|b| !b.is_ascii_uppercase());
        let upper = hex_part.bytes().all(|b| !b.is_ascii_lowercase());
        if !lower && !upper && addr.checksummed() != s {
            return Err(AddressError::Checksum);
        }
        Ok(addr)
    }

    /// The EIP-55 mixed-case form, `0x…`.
    pub fn checksummed(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl fmt::Display for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.checksummed())
    }
}

impl fmt::Debug for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EthAddress({})", self.checksummed())
    }
}

impl FromStr for EthAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EthAddress::parse(s)
    }
}

/// The hot account's chains under `m/44'/60'/0'`: the hot wallet itself and customer deposit
/// addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branch {
    /// `…/0/i`: the hot wallet (index 0 pays withdrawals).
    Hot = 0,
    /// `…/1/i`: deposit address number `i`.
    Deposit = 1,
}

/// The derivation path of the hot account (hardened), as the signer derives it.
pub const ACCOUNT_PATH: &str = "m/44'/60'/0'";

/// Why an address could not be derived.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    #[error("index {0} is not an unhardened child index")]
    Index(u32),
    #[error("key derivation failed")]
    Derivation,
}

/// The address at `branch/index` below the account xpub (public derivation only).
pub fn derive_address(account: &Xpub, branch: Branch, index: u32) -> Result<EthAddress, DeriveError> {
    let secp = Secp256k1::verification_only();
    let path = [
        ChildNumber::from_normal_idx(branch as u32).map_err(|_| DeriveError::Index(branch as u32))?,
        ChildNumber::from_normal_idx(index).map_err(|_| DeriveError::Index(index))?,
    ];
    let child = account
        .derive_pub(&secp, &path)
        .map_err(|_| DeriveError::Derivation)?;
    Ok(EthAddress::from_pubkey(&child.public_key))
}

/// The ERC-20 `transfer(address,uint256)` selector.
pub const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// The ERC-20 `approve(address,uint256)` selector.
pub const APPROVE_SELECTOR: [u8; 4] = [0x09, 0x5e, 0xa7, 0xb3];
/// `keccak256("Transfer(address,address,uint256)")`, topic 0 of an ERC-20 transfer log.
pub const TRANSFER_TOPIC: [u8; 32] = [
    0xdd, 0xf2, 0x52, 0xad, 0x1b, 0xe2, 0xc8, 0x9b, 0x69, 0xc2, 0xb0, 0x68, 0xfc, 0x37, 0x8d, 0xaa, 0x95,
    0x2b, 0xa7, 0xf1, 0x63, 0xc4, 0xa1, 0x16, 0x28, 0xf5, 0x5a, 0x4d, 0xf5, 0x23, 0xb3, 0xef,
];

/// `transfer(to, amount)` calldata.
pub fn erc20_transfer(to: &EthAddress, amount: u128) -> Vec<u8> {
    erc20_call(TRANSFER_SELECTOR, to, amount)
}

/// `approve(spender, amount)` calldata (tests of the signer's refusals use it).
pub fn erc20_approve(spender: &EthAddress, amount: u128) -> Vec<u8> {
    erc20_call(APPROVE_SELECTOR, spender, amount)
}

fn erc20_call(selector: [u8; 4], to: &EthAddress, amount: u128) -> Vec<u8> {
    let mut data = Vec::with_capacity(68);
    data.extend_from_slice(&selector);
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(&to.0);
    data.extend_from_slice(&[0u8; 16]);
    data.extend_from_slice(&amount.to_be_bytes());
    data
}

/// What a token call's calldata says, if it is exactly `transfer(address,uint256)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCall {
    /// Exactly a `transfer` whose amount fits `u128`.
    Transfer { to: EthAddress, amount: u128 },
    /// A `transfer` whose amount does not fit `u128` (never one we approved).
    TransferHuge { to: EthAddress },
    /// Anything else: another function, extra or missing bytes, a dirty address word.
    Other,
}

/// Reads ERC-20 calldata strictly: 4-byte selector, two 32-byte words, nothing else.
pub fn read_token_call(data: &[u8]) -> TokenCall {
    if data.len() != 68 || data[..4] != TRANSFER_SELECTOR || data[4..16].iter().any(|b| *b != 0) {
        return TokenCall::Other;
    }
    let mut to = [0u8; 20];
    to.copy_from_slice(&data[16..36]);
    let to = EthAddress(to);
    if data[36..52].iter().any(|b| *b != 0) {
        return TokenCall::TransferHuge { to };
    }
    let mut amount = [0u8; 16];
    amount.copy_from_slice(&data[52..68]);
    TokenCall::Transfer {
        to,
        amount: u128::from_be_bytes(amount),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_examples_round_trip_and_bad_checksums_are_refused() {
        // The examples of EIP-55.
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a = EthAddress::parse(s).unwrap();
            assert_eq!(a.checksummed(), s);
            assert_eq!(EthAddress::parse(&s.to_ascii_lowercase()).unwrap(), a);
        }
        assert_eq!(
            EthAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
            Err(AddressError::Checksum)
        );
        assert_eq!(
            EthAddress::parse("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            Err(AddressError::Shape)
        );
        assert_eq!(EthAddress::parse("0x5aAeb6"), Err(AddressError::Shape));
        assert_eq!(
            EthAddress::parse("0xzzAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            Err(AddressError::Shape)
        );
    }

    #[test]
    fn the_transfer_topic_is_the_keccak_of_the_event_signature() {
        assert_eq!(keccak256(b"Transfer(address,address,uint256)"), TRANSFER_TOPIC);
        assert_eq!(keccak256(b"transfer(address,uint256)")[..4], TRANSFER_SELECTOR);
        assert_eq!(keccak256(b"approve(address,uint256)")[..4], APPROVE_SELECTOR);
    }

    #[test]
    fn token_calldata_is_read_strictly() {
        let to = EthAddress([7; 20]);
        let t = erc20_transfer(&to, 123);
        assert_eq!(read_token_call(&t), TokenCall::Transfer { to, amount: 123 });
        let mut extra = t.clone();
        extra.push(0);
        assert_eq!(read_token_call(&extra), TokenCall::Other);
        assert_eq!(read_token_call(&erc20_approve(&to, 123)), TokenCall::Other);
        let mut dirty = t.clone();
        dirty[5] = 1;
        assert_eq!(read_token_call(&dirty), TokenCall::Other);
        let mut huge = t;
        huge[40] = 1;
        assert_eq!(read_token_call(&huge), TokenCall::TransferHuge { to });
    }
}
