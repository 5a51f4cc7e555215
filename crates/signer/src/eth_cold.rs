//! A cold keyholder's Ethereum key and their offline signature of a refill from the cold
//! multisig (docs/design/ethereum.md, "Cold setup"). The owner key is `m/44'/60'/1'/0/0` of a
//! `--role cold` keystore's seed (account 1', apart from the hot account 0'); it signs only the
//! EIP-712 digest it recomputes itself from a refill file's fields, never the digest the file
//! states.

use bitcoin::bip32::{DerivationPath, Xpriv};
use kinko_chain::eth::cold::{EthRefill, RefillFileError, RefillSignature};
use kinko_chain::eth::EthAddress;
use secp256k1::{Message, Secp256k1, SecretKey};
use std::str::FromStr;
use zeroize::Zeroizing;

/// Where a cold keyholder's Ethereum owner key sits below their seed.
pub const OWNER_PATH: &str = "m/44'/60'/1'/0/0";

/// Why a keyholder could not sign.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("the owner key could not be derived")]
    Derivation,
    #[error(transparent)]
    File(#[from] RefillFileError),
    #[error("SIGNATURE_NOT_OWNER: this key ({0}) is not one of the request's owners")]
    NotOwner(EthAddress),
    #[error("SIGNATURE_DUPLICATE: the request already carries this owner's signature")]
    Duplicate,
}

/// A keyholder's owner key (zeroized on drop).
pub struct OwnerKey {
    secret: Zeroizing<[u8; 32]>,
    address: EthAddress,
}

impl std::fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("OwnerKey")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl OwnerKey {
    /// The owner key of a cold keystore's master key.
    pub fn new(master: &Xpriv) -> Result<OwnerKey, OwnerError> {
        let secp = Secp256k1::new();
        let path = DerivationPath::from_str(OWNER_PATH).map_err(|_| OwnerError::Derivation)?;
        let child = master
            .derive_priv(&secp, &path)
            .map_err(|_| OwnerError::Derivation)?;
        let secret = Zeroizing::new(child.private_key.secret_bytes());
        let sk = SecretKey::from_slice(secret.as_ref()).map_err(|_| OwnerError::Derivation)?;
        Ok(OwnerKey {
            address: EthAddress::from_pubkey(&sk.public_key(&secp)),
            secret,
        })
    }

    /// The owner address (what the contract is deployed with).
    pub fn address(&self) -> EthAddress {
        self.address
    }

    /// `r ‖ s ‖ v` (low `s`, `v` 27 or 28) over `digest`.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<[u8; 65], OwnerError> {
        let sk = SecretKey::from_slice(self.secret.as_ref()).map_err(|_| OwnerError::Derivation)?;
        let (id, compact) = Secp256k1::new()
            .sign_ecdsa_recoverable(&Message::from_digest(*digest), &sk)
            .serialize_compact();
        let mut sig = [0u8; 65];
        sig[..64].copy_from_slice(&compact);
        sig[64] = 27 + u8::from(id.to_i32() == 1);
        Ok(sig)
    }

    /// Signs `refill` after recomputing its digest from its fields (`SIGNATURE_DIGEST_WRONG` if
    /// the stated one differs), checking this key is one of its owners and has not signed it
    /// yet; the signature to add to the file.
    pub fn sign_refill(&self, refill: &EthRefill) -> Result<RefillSignature, OwnerError> {
        let call = refill.call()?;
        let me = self.address.checksummed();
        let listed = refill
            .owners
            .iter()
            .any(|o| EthAddress::parse(o).is_ok_and(|a| a == self.address));
        if !listed {
            return Err(OwnerError::NotOwner(self.address));
        }
        let signed = refill
            .signatures
            .iter()
            .any(|s| EthAddress::parse(&s.owner).is_ok_and(|a| a == self.address));
        if signed {
            return Err(OwnerError::Duplicate);
        }
        let sig = self.sign_digest(&call.digest())?;
        Ok(RefillSignature {
            owner: me,
            signature: hex::encode(sig),
        })
    }
}
