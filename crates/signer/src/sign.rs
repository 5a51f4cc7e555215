//! Signing a PSBT with a master key: the hot key in the signer, the cold keys of the offline
//! keyholders (`kinko-signer offline-sign`). This is the only code of kinko that signs with a
//! private key; the exchange does not link it (kinko-chain builds, checks and finalizes PSBTs,
//! with public keys only).

use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::ecdsa;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{self, PublicKey, Secp256k1};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use kinko_chain::psbt::{check_shape, sighash};
use kinko_chain::PsbtError;
use std::sync::OnceLock;

fn secp() -> &'static Secp256k1<secp256k1::All> {
    static SECP: OnceLock<Secp256k1<secp256k1::All>> = OnceLock::new();
    SECP.get_or_init(Secp256k1::new)
}

/// Why a PSBT could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Psbt(#[from] PsbtError),
    #[error("input {input}: key derivation failed")]
    Derivation { input: usize },
}

/// Signs (segwit v0, SIGHASH_ALL, low-R) every input whose `bip32_derivation` names
/// `master`'s fingerprint with a path whose key really is the listed public key; entries that
/// name our fingerprint but derive to another key are left alone. Returns how many inputs got
/// a signature. Errors if an input we can sign lacks what signing needs, or its script does
/// not match its key / witness script.
///
/// (The `bitcoin` crate's `Psbt::sign` does not check that the derived key is the listed one,
/// nor the script, so we do not use it.)
pub fn sign(psbt: &mut Psbt, master: &Xpriv) -> Result<usize, SignError> {
    check_shape(psbt)?;
    let fingerprint = master.fingerprint(secp());
    let tx = psbt.unsigned_tx.clone();
    let mut cache = SighashCache::new(&tx);
    let mut signed = 0;
    for i in 0..psbt.inputs.len() {
        let ours: Vec<(PublicKey, DerivationPath)> = psbt.inputs[i]
            .bip32_derivation
            .iter()
            .filter(|(_, (fp, _))| *fp == fingerprint)
            .map(|(pk, (_, path))| (*pk, path.clone()))
            .collect();
        let mut any = false;
        for (pk, path) in ours {
            let sk = master
                .derive_priv(secp(), &path)
                .map_err(|_| SignError::Derivation { input: i })?;
            if sk.private_key.public_key(secp()) != pk {
                continue;
            }
            let msg = sighash(psbt, &mut cache, i, &pk)?;
            let signature = secp().sign_ecdsa_low_r(&msg, &sk.private_key);
            let sig = ecdsa::Signature {
                signature,
                sighash_type: EcdsaSighashType::All,
            };
            psbt.inputs[i]
                .partial_sigs
                .insert(bitcoin::PublicKey::new(pk), sig);
            any = true;
        }
        if any {
            signed += 1;
        }
    }
    Ok(signed)
}

/// Signs a proof-of-reserves control message with the account key at `account` under
/// `master`: ECDSA (low-R) over [`kinko_chain::control::control_digest`], DER as hex. Only
/// messages [`kinko_chain::control::control_message`] builds reach here.
pub fn sign_control(master: &Xpriv, account: &DerivationPath, message: &str) -> Result<String, SignError> {
    let sk = master
        .derive_priv(secp(), account)
        .map_err(|_| SignError::Derivation { input: 0 })?;
    let sig = secp().sign_ecdsa_low_r(&kinko_chain::control::control_digest(message), &sk.private_key);
    Ok(sig.serialize_der().iter().map(|b| format!("{b:02x}")).collect())
}

/// A cold keyholder's answer to a proof-of-reserves challenge (`kinko-signer prove-control`):
/// the message is rebuilt from the challenge's asset, sequence and nonce (a challenge whose
/// message differs is refused), the key must be one of the challenge's cold keys, and the
/// signature is [`sign_control`]'s with that account key. Nothing else can be signed this way.
pub fn sign_cold_challenge(
    challenge: &kinko_chain::control::ColdChallenge,
    master: &Xpriv,
    key: &kinko_chain::keys::WatchKey,
) -> Result<kinko_chain::control::ColdSignature, kinko_chain::control::ControlError> {
    use kinko_chain::control::ControlError;
    let message = challenge.checked_message()?;
    if !challenge.keys.contains(key) {
        return Err(ControlError::UnknownKey(key.to_string()));
    }
    let sk = master
        .derive_priv(secp(), &key.path)
        .map_err(|_| ControlError::UnknownKey(key.to_string()))?;
    if bitcoin::bip32::Xpub::from_priv(secp(), &sk) != key.xpub {
        return Err(ControlError::UnknownKey(key.to_string()));
    }
    let signature =
        sign_control(master, &key.path, &message).map_err(|_| ControlError::UnknownKey(key.to_string()))?;
    Ok(kinko_chain::control::ColdSignature::new(
        message,
        key.clone(),
        signature,
    ))
}

#[cfg(test)]
mod tests {
    //! Signing with kinko-chain's PSBTs (moved here from kinko-chain with `sign`).
    use super::*;
    use bitcoin::hashes::Hash as _;
    use bitcoin::{Amount, OutPoint, ScriptBuf, Txid};
    use kinko_chain::keys::{
        cold_account_path, derive_cold, derive_hot, hot_account_path, watch_key, ColdKeys,
    };
    use kinko_chain::psbt::{build, combine, finalize, from_base64, summarise, to_base64, Utxo};
    use kinko_chain::Network;

    const NET: Network = Network::LitecoinRegtest;

    fn master(seed: u8) -> Xpriv {
        Xpriv::new_master(bitcoin::NetworkKind::Test, &[seed; 32]).unwrap()
    }

    fn hot_utxo(m: &Xpriv, index: u32, value: u64) -> Utxo {
        let key = watch_key(m, &hot_account_path(NET));
        let mut txid = [0u8; 32];
        txid[0] = index as u8;
        Utxo {
            outpoint: OutPoint {
                txid: Txid::from_byte_array(txid),
                vout: index,
            },
            value,
            derived: derive_hot(NET, &key, 0, index).unwrap(),
        }
    }

    fn dest() -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([7; 20]))
    }

    #[test]
    fn sign_finalize_hot_and_round_trip() {
        let m = master(1);
        let key = watch_key(&m, &hot_account_path(NET));
        let change = derive_hot(NET, &key, 1, 0).unwrap();
        let inputs = [hot_utxo(&m, 1, 10_000), hot_utxo(&m, 2, 50_000)];
        let b = build(NET, &inputs, &[(dest(), 55_000)], Some(&change), 2).unwrap();
        let mut psbt = from_base64(&to_base64(&b.psbt)).unwrap();
        assert_eq!(psbt, b.psbt);
        assert!(matches!(
            finalize(&psbt),
            Err(PsbtError::NotEnoughSignatures { .. })
        ));
        assert_eq!(sign(&mut psbt.clone(), &master(9)).unwrap(), 0);
        assert_eq!(sign(&mut psbt, &m).unwrap(), 2);
        let tx = finalize(&psbt).unwrap();
        assert_eq!(tx.input[0].witness.len(), 2);
        // Real vsize never exceeds the estimate.
        assert!(tx.vsize() as u64 * 2 <= b.fee, "{} {}", tx.vsize(), b.fee);
        // A tampered signature is caught.
        let mut bad = psbt.clone();
        let (pk, mut sig) = bad.inputs[0].partial_sigs.pop_first().unwrap();
        sig.signature = psbt.inputs[1].partial_sigs.values().next().unwrap().signature;
        bad.inputs[0].partial_sigs.insert(pk, sig);
        assert_eq!(finalize(&bad), Err(PsbtError::BadSignature { input: 0 }));
        // A derivation naming our fingerprint but another key is not signed.
        let mut other = b.psbt.clone();
        let (pk, src) = other.inputs[0].bip32_derivation.pop_first().unwrap();
        let wrong = derive_hot(NET, &key, 0, 99).unwrap().keys[0].0;
        assert_ne!(wrong, pk);
        other.inputs[0].bip32_derivation.insert(wrong, src);
        assert_eq!(sign(&mut other, &m).unwrap(), 1);
        // Missing witness_utxo.
        let mut no_utxo = b.psbt.clone();
        no_utxo.inputs[1].witness_utxo = None;
        assert_eq!(summarise(NET, &no_utxo), Err(PsbtError::MissingUtxo { input: 1 }));
        assert_eq!(
            sign(&mut no_utxo, &m),
            Err(PsbtError::MissingUtxo { input: 1 }.into())
        );
        // Outputs above inputs.
        let mut neg = b.psbt.clone();
        neg.unsigned_tx.output[0].value = Amount::from_sat(70_000);
        assert_eq!(summarise(NET, &neg), Err(PsbtError::NegativeFee));
        // Combine refuses different transactions.
        assert!(matches!(combine(b.psbt.clone(), neg), Err(PsbtError::Combine(_))));
    }

    #[test]
    fn multisig_sign_and_finalize() {
        let masters: Vec<Xpriv> = (1..=3).map(master).collect();
        let cold = ColdKeys {
            threshold: 2,
            keys: masters
                .iter()
                .map(|m| watch_key(m, &cold_account_path(NET)))
                .collect(),
        };
        let d = derive_cold(NET, &cold, 0).unwrap();
        let u = Utxo {
            outpoint: OutPoint {
                txid: Txid::all_zeros(),
                vout: 0,
            },
            value: 100_000,
            derived: d.clone(),
        };
        let b = build(NET, &[u], &[(dest(), 50_000)], Some(&d), 3).unwrap();
        // 2-of-3 input: 104.5 vB; 1 P2WPKH + 1 P2WSH output: 31 + 43; overhead 10.5.
        assert_eq!(b.fee, (42u64 + 418 + 4 * 31 + 4 * 43).div_ceil(4) * 3);
        let mut a = b.psbt.clone();
        let mut c = b.psbt.clone();
        assert_eq!(sign(&mut a, &masters[0]).unwrap(), 1);
        assert_eq!(
            finalize(&a),
            Err(PsbtError::NotEnoughSignatures {
                input: 0,
                have: 1,
                need: 2
            })
        );
        assert_eq!(sign(&mut c, &masters[2]).unwrap(), 1);
        let both = combine(a.clone(), c).unwrap();
        let tx = finalize(&both).unwrap();
        assert_eq!(tx.input[0].witness.len(), 4);
        assert!(tx.input[0].witness.nth(0).unwrap().is_empty());
        assert!((tx.vsize() as u64) * 3 <= b.fee);
        // A third signature does not change the witness size (exactly threshold used).
        sign(&mut a, &masters[1]).unwrap();
        let all = combine(a, both).unwrap();
        assert_eq!(finalize(&all).unwrap().input[0].witness.len(), 4);
        // Witness script that does not match the spent script.
        let mut bad = b.psbt.clone();
        bad.inputs[0].witness_script = derive_cold(NET, &cold, 1).unwrap().witness_script;
        assert_eq!(
            sign(&mut bad, &masters[0]),
            Err(PsbtError::ScriptMismatch { input: 0 }.into())
        );
    }
}
