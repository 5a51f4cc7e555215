//! Partially signed transactions (BIP174) for our two input kinds: hot P2WPKH and cold
//! `sortedmulti` P2WSH. [`build`] selects coins and sets the fee; [`summarise`] tells a signer
//! what a PSBT does; [`combine`] merges signers' copies; [`finalize`] verifies the signatures
//! and assembles the witnesses. Nothing here holds or uses a private key: signing is the
//! signer's (`kinko_signer::sign`, also run by offline keyholders).
//!
//! Fee estimates are in weight units (exact for everything but signatures, which are counted
//! at 72 bytes with the sighash byte; the signer grinds low-R signatures of at most 71), so the
//! real fee rate is never below the one asked for.

use crate::address::{address_for, script_for};
use crate::keys::{parse_multisig, secp, Derived};
use crate::network::Network;
use base64::Engine as _;
use bitcoin::bip32::{DerivationPath, Fingerprint};
use bitcoin::hashes::Hash as _;
use bitcoin::psbt::{Input, Output};
use bitcoin::script::{Script, ScriptBuf};
use bitcoin::secp256k1::{Message, PublicKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, ecdsa, transaction, Amount, CompressedPublicKey, OutPoint, Psbt, Sequence, Transaction, TxIn,
    TxOut, Witness,
};
use std::collections::{BTreeMap, BTreeSet};

/// Litecoin Core 0.21's dust relay fee (`DUST_RELAY_TX_FEE`): 30 000 sat/kvB, ten times
/// Bitcoin's. A P2WPKH output below 2 940 sats (P2WSH: 3 300) is not relayed.
pub const DUST_RELAY_SAT_PER_KVB: u64 = 30_000;

/// Input sequence: final for locktime purposes, signals BIP125 replaceability.
pub const SEQUENCE: Sequence = Sequence(0xFFFF_FFFD);

/// Longest base64 PSBT text [`from_base64`] accepts (4 MiB).
pub const PSBT_BASE64_LEN_MAX: usize = 4 << 20;

/// Signature with sighash byte, as counted for fee estimates (low-R grinding keeps ours ≤ 71).
const SIG_LEN_ESTIMATE: u64 = 72;

/// One of our coins: the outpoint, its value and the address (hot or cold) it sits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utxo {
    pub outpoint: OutPoint,
    pub value: u64,
    pub derived: Derived,
}

/// An unsigned PSBT with its fee and change amount (0 when there is no change output; the
/// change output, if any, is the last one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub psbt: Psbt,
    pub fee: u64,
    pub change: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("nothing to pay")]
    NoOutputs,
    #[error("insufficient funds: need {needed} sats (payments and fee), have {available}")]
    InsufficientFunds { needed: u64, available: u64 },
    #[error("amount arithmetic overflowed")]
    Overflow,
    #[error("output {index} pays {value} sats, below the dust limit of {min}")]
    DustOutput { index: usize, value: u64, min: u64 },
    #[error("input {outpoint} is neither our P2WPKH nor our multisig P2WSH, or is for another network")]
    UnsupportedInput { outpoint: OutPoint },
    #[error("input {outpoint} is given twice")]
    DuplicateInput { outpoint: OutPoint },
    #[error("{leftover} sats would be left over and no change address was given")]
    ChangeNeeded { leftover: u64 },
    #[error("the change address is not a valid address of this network")]
    WrongNetwork,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PsbtError {
    #[error("PSBT input/output maps do not match its transaction")]
    Malformed,
    #[error("input {input} has no witness_utxo")]
    MissingUtxo { input: usize },
    #[error("input {input}: non_witness_utxo does not match the outpoint or the witness_utxo")]
    UtxoMismatch { input: usize },
    #[error("input {input} spends P2WSH but has no witness_script")]
    MissingWitnessScript { input: usize },
    #[error("input {input}: the key or witness script does not match the spent script")]
    ScriptMismatch { input: usize },
    #[error("input {input} is neither P2WPKH nor multisig P2WSH")]
    UnsupportedInput { input: usize },
    #[error("input {input} asks for a sighash type other than ALL")]
    UnsupportedSighash { input: usize },
    #[error("input {input} has {have} valid signatures, needs {need}")]
    NotEnoughSignatures { input: usize, have: usize, need: usize },
    #[error("input {input} carries an invalid signature")]
    BadSignature { input: usize },
    #[error("input {input}: cannot compute the signature hash")]
    Sighash { input: usize },
    #[error("outputs exceed inputs")]
    NegativeFee,
    #[error("amount arithmetic overflowed")]
    Overflow,
    #[error("PSBT text longer than {PSBT_BASE64_LEN_MAX} characters")]
    TooLarge,
    #[error("PSBT is not valid base64")]
    Base64,
    #[error("PSBT does not decode: {0}")]
    Decode(String),
    #[error("PSBTs do not combine: {0}")]
    Combine(String),
}

/// What a PSBT does, for a signer to check before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub inputs: Vec<(OutPoint, u64)>,
    pub outputs: Vec<OutputInfo>,
    pub fee: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputInfo {
    pub script_pubkey: ScriptBuf,
    pub address: Option<String>,
    pub value: u64,
    /// The output's BIP32 derivations (set on our change outputs; empty otherwise).
    pub derivation: Vec<(Fingerprint, DerivationPath)>,
}

/// The value below which an output paying `script` is dust for Litecoin Core (not relayed),
/// by Core's `GetDustThreshold` with [`DUST_RELAY_SAT_PER_KVB`].
pub fn dust_threshold(script: &Script) -> u64 {
    if script.is_op_return() {
        return 0;
    }
    let spend = if script.is_witness_program() {
        32 + 4 + 1 + 107 / 4 + 4
    } else {
        32 + 4 + 1 + 107 + 4
    };
    (output_bytes(script) + spend) * DUST_RELAY_SAT_PER_KVB / 1000
}

fn varint_len(n: u64) -> u64 {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn output_bytes(script: &Script) -> u64 {
    let len = script.len() as u64;
    8 + varint_len(len) + len
}

/// Weight of an input spending `derived`, signatures counted at their maximum; `None` for a
/// kind we do not spend.
fn input_weight(derived: &Derived) -> Option<u64> {
    let base = 4 * (32 + 4 + 1 + 4);
    let witness = match &derived.witness_script {
        None if derived.script_pubkey.is_p2wpkh() => 1 + (1 + SIG_LEN_ESTIMATE) + (1 + 33),
        Some(ws) if derived.script_pubkey == p2wsh(ws) => {
            let (k, _) = parse_multisig(ws)?;
            let ws_len = ws.len() as u64;
            1 + 1 + k as u64 * (1 + SIG_LEN_ESTIMATE) + varint_len(ws_len) + ws_len
        }
        _ => return None,
    };
    Some(base + witness)
}

fn p2wsh(ws: &Script) -> ScriptBuf {
    ScriptBuf::new_p2wsh(&ws.wscript_hash())
}

fn p2wpkh(pk: &PublicKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&CompressedPublicKey(*pk).wpubkey_hash())
}

/// The witness script of P2WSH input `i`, which must be the multisig that `spk` pays:
/// (script, threshold, keys in script order).
fn multisig_input<'a>(
    input: &'a Input,
    spk: &Script,
    i: usize,
) -> Result<(&'a ScriptBuf, usize, Vec<PublicKey>), PsbtError> {
    let ws = input
        .witness_script
        .as_ref()
        .ok_or(PsbtError::MissingWitnessScript { input: i })?;
    let (threshold, keys) = parse_multisig(ws).ok_or(PsbtError::UnsupportedInput { input: i })?;
    if *spk != p2wsh(ws) {
        return Err(PsbtError::ScriptMismatch { input: i });
    }
    Ok((ws, threshold, keys))
}

fn fee_for(weight: u64, rate_sat_per_vb: u64) -> Result<u64, BuildError> {
    weight
        .div_ceil(4)
        .checked_mul(rate_sat_per_vb)
        .ok_or(BuildError::Overflow)
}

fn sum<I: IntoIterator<Item = u64>>(it: I) -> Option<u64> {
    it.into_iter().try_fold(0u64, |a, b| a.checked_add(b))
}

/// Builds an unsigned PSBT paying `pay` (scripts and amounts, in order) from `inputs`.
///
/// Coin selection is largest-first (ties by outpoint) until the inputs cover the payments and
/// the fee at `fee_rate_sat_per_vb`. A change output to `change` (last output) is added when
/// what is left is at least its dust limit; a smaller rest goes to the fee. Without `change`,
/// a rest of a P2WPKH dust limit or more is refused ([`BuildError::ChangeNeeded`]).
/// Version 2, locktime 0, every input sequence [`SEQUENCE`]. Each input carries its
/// `witness_utxo`, `bip32_derivation` and (P2WSH) `witness_script`; so does the change output.
pub fn build(
    net: Network,
    inputs: &[Utxo],
    pay: &[(ScriptBuf, u64)],
    change: Option<&Derived>,
    fee_rate_sat_per_vb: u64,
) -> Result<Built, BuildError> {
    if pay.is_empty() {
        return Err(BuildError::NoOutputs);
    }
    for (index, (script, value)) in pay.iter().enumerate() {
        let min = dust_threshold(script);
        if *value < min {
            return Err(BuildError::DustOutput {
                index,
                value: *value,
                min,
            });
        }
    }
    let pay_total = sum(pay.iter().map(|(_, v)| *v)).ok_or(BuildError::Overflow)?;
    if let Some(c) = change {
        if script_for(net, &c.address).ok().as_ref() != Some(&c.script_pubkey) || input_weight(c).is_none() {
            return Err(BuildError::WrongNetwork);
        }
    }
    let mut seen = BTreeSet::new();
    let mut candidates: Vec<(&Utxo, u64)> = Vec::with_capacity(inputs.len());
    for u in inputs {
        if !seen.insert(u.outpoint) {
            return Err(BuildError::DuplicateInput { outpoint: u.outpoint });
        }
        let ours = script_for(net, &u.derived.address).ok().as_ref() == Some(&u.derived.script_pubkey);
        match input_weight(&u.derived) {
            Some(w) if ours => candidates.push((u, w)),
            _ => return Err(BuildError::UnsupportedInput { outpoint: u.outpoint }),
        }
    }
    candidates.sort_by(|(a, _), (b, _)| b.value.cmp(&a.value).then(a.outpoint.cmp(&b.outpoint)));

    let pay_weight = sum(pay.iter().map(|(s, _)| 4 * output_bytes(s))).ok_or(BuildError::Overflow)?;
    let change_weight = change.map(|c| 4 * output_bytes(&c.script_pubkey));
    let overhead =
        |n_in: usize, n_out: usize| 4 * (4 + 4 + varint_len(n_in as u64) + varint_len(n_out as u64)) + 2;

    let mut total_in: u64 = 0;
    let mut in_weight: u64 = 0;
    let mut needed = fee_for(overhead(0, pay.len()) + pay_weight, fee_rate_sat_per_vb)?
        .checked_add(pay_total)
        .ok_or(BuildError::Overflow)?;
    for (n, (u, w)) in candidates.iter().enumerate() {
        let n_in = n + 1;
        total_in = total_in.checked_add(u.value).ok_or(BuildError::Overflow)?;
        in_weight = in_weight.checked_add(*w).ok_or(BuildError::Overflow)?;
        let weight = overhead(n_in, pay.len()) + in_weight + pay_weight;
        let fee = fee_for(weight, fee_rate_sat_per_vb)?;
        needed = pay_total.checked_add(fee).ok_or(BuildError::Overflow)?;
        if total_in < needed {
            continue;
        }
        let leftover = total_in - needed;
        let selected: Vec<&Utxo> = candidates[..n_in].iter().map(|(u, _)| *u).collect();
        if let (Some(c), Some(cw)) = (change, change_weight) {
            let fee_c = fee_for(
                overhead(n_in, pay.len() + 1) + in_weight + pay_weight + cw,
                fee_rate_sat_per_vb,
            )?;
            let need_c = pay_total.checked_add(fee_c).ok_or(BuildError::Overflow)?;
            if let Some(rest) = total_in.checked_sub(need_c) {
                if rest >= dust_threshold(&c.script_pubkey) {
                    let psbt = assemble(&selected, pay, Some((c, rest)));
                    return Ok(Built {
                        psbt,
                        fee: fee_c,
                        change: rest,
                    });
                }
            }
        } else if leftover >= dust_threshold(&p2wpkh_template()) {
            return Err(BuildError::ChangeNeeded { leftover });
        }
        let psbt = assemble(&selected, pay, None);
        return Ok(Built {
            psbt,
            fee: total_in - pay_total,
            change: 0,
        });
    }
    Err(BuildError::InsufficientFunds {
        needed,
        available: total_in,
    })
}

fn p2wpkh_template() -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::all_zeros())
}

fn assemble(selected: &[&Utxo], pay: &[(ScriptBuf, u64)], change: Option<(&Derived, u64)>) -> Psbt {
    let mut outputs: Vec<TxOut> = pay
        .iter()
        .map(|(s, v)| TxOut {
            value: Amount::from_sat(*v),
            script_pubkey: s.clone(),
        })
        .collect();
    if let Some((c, v)) = change {
        outputs.push(TxOut {
            value: Amount::from_sat(v),
            script_pubkey: c.script_pubkey.clone(),
        });
    }
    let unsigned_tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: selected
            .iter()
            .map(|u| TxIn {
                previous_output: u.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: SEQUENCE,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    };
    let inputs = selected
        .iter()
        .map(|u| Input {
            witness_utxo: Some(TxOut {
                value: Amount::from_sat(u.value),
                script_pubkey: u.derived.script_pubkey.clone(),
            }),
            witness_script: u.derived.witness_script.clone(),
            bip32_derivation: u.derived.keys.iter().cloned().collect(),
            ..Input::default()
        })
        .collect();
    let mut psbt_outputs = vec![Output::default(); pay.len()];
    if let Some((c, _)) = change {
        psbt_outputs.push(Output {
            witness_script: c.witness_script.clone(),
            bip32_derivation: c.keys.iter().cloned().collect(),
            ..Output::default()
        });
    }
    Psbt {
        unsigned_tx,
        version: 0,
        xpub: BTreeMap::new(),
        proprietary: BTreeMap::new(),
        unknown: BTreeMap::new(),
        inputs,
        outputs: psbt_outputs,
    }
}

/// Checks that the PSBT's input and output maps match its transaction's inputs and outputs.
pub fn check_shape(psbt: &Psbt) -> Result<(), PsbtError> {
    if psbt.inputs.len() != psbt.unsigned_tx.input.len()
        || psbt.outputs.len() != psbt.unsigned_tx.output.len()
    {
        return Err(PsbtError::Malformed);
    }
    Ok(())
}

/// The spent output of input `i`: its `witness_utxo`, checked against `non_witness_utxo` when
/// that is present too (a signer that attaches the previous transactions is safe from
/// witness_utxo amounts that lie).
fn spent_output(psbt: &Psbt, i: usize) -> Result<&TxOut, PsbtError> {
    let input = psbt.inputs.get(i).ok_or(PsbtError::Malformed)?;
    let txin = psbt.unsigned_tx.input.get(i).ok_or(PsbtError::Malformed)?;
    let utxo = input
        .witness_utxo
        .as_ref()
        .ok_or(PsbtError::MissingUtxo { input: i })?;
    if let Some(prev) = &input.non_witness_utxo {
        let vout =
            usize::try_from(txin.previous_output.vout).map_err(|_| PsbtError::UtxoMismatch { input: i })?;
        if prev.compute_txid() != txin.previous_output.txid || prev.output.get(vout) != Some(utxo) {
            return Err(PsbtError::UtxoMismatch { input: i });
        }
    }
    Ok(utxo)
}

/// Inputs (outpoint, value), outputs (script, address on `net`, value, our derivations) and
/// the fee. Every input must carry its `witness_utxo`.
pub fn summarise(net: Network, psbt: &Psbt) -> Result<Summary, PsbtError> {
    check_shape(psbt)?;
    let mut inputs = Vec::with_capacity(psbt.inputs.len());
    for (i, txin) in psbt.unsigned_tx.input.iter().enumerate() {
        inputs.push((txin.previous_output, spent_output(psbt, i)?.value.to_sat()));
    }
    let outputs: Vec<OutputInfo> = psbt
        .unsigned_tx
        .output
        .iter()
        .zip(&psbt.outputs)
        .map(|(o, meta)| OutputInfo {
            script_pubkey: o.script_pubkey.clone(),
            address: address_for(net, &o.script_pubkey),
            value: o.value.to_sat(),
            derivation: meta.bip32_derivation.values().cloned().collect(),
        })
        .collect();
    let total_in = sum(inputs.iter().map(|(_, v)| *v)).ok_or(PsbtError::Overflow)?;
    let total_out = sum(outputs.iter().map(|o| o.value)).ok_or(PsbtError::Overflow)?;
    let fee = total_in.checked_sub(total_out).ok_or(PsbtError::NegativeFee)?;
    Ok(Summary { inputs, outputs, fee })
}

/// The segwit v0 SIGHASH_ALL message input `i` signs, checking that the spent script is the
/// P2WPKH of `pk` or the P2WSH of a multisig witness script containing `pk` (what a signer
/// signs and [`finalize`] verifies).
pub fn sighash(
    psbt: &Psbt,
    cache: &mut SighashCache<&Transaction>,
    i: usize,
    pk: &PublicKey,
) -> Result<Message, PsbtError> {
    let input = psbt.inputs.get(i).ok_or(PsbtError::Malformed)?;
    let utxo = spent_output(psbt, i)?;
    if input
        .sighash_type
        .is_some_and(|t| t.ecdsa_hash_ty() != Ok(EcdsaSighashType::All))
    {
        return Err(PsbtError::UnsupportedSighash { input: i });
    }
    let spk = &utxo.script_pubkey;
    let hash = if spk.is_p2wpkh() {
        if *spk != p2wpkh(pk) {
            return Err(PsbtError::ScriptMismatch { input: i });
        }
        cache
            .p2wpkh_signature_hash(i, spk, utxo.value, EcdsaSighashType::All)
            .map_err(|_| PsbtError::Sighash { input: i })?
    } else if spk.is_p2wsh() {
        let (ws, _, keys) = multisig_input(input, spk, i)?;
        if !keys.contains(pk) {
            return Err(PsbtError::ScriptMismatch { input: i });
        }
        cache
            .p2wsh_signature_hash(i, ws, utxo.value, EcdsaSighashType::All)
            .map_err(|_| PsbtError::Sighash { input: i })?
    } else {
        return Err(PsbtError::UnsupportedInput { input: i });
    };
    Ok(Message::from_digest(hash.to_byte_array()))
}

/// The valid SIGHASH_ALL signature of `pk` on input `i`, if there is one; an invalid one is an
/// error.
fn checked_sig(
    psbt: &Psbt,
    cache: &mut SighashCache<&Transaction>,
    i: usize,
    pk: &PublicKey,
) -> Result<Option<ecdsa::Signature>, PsbtError> {
    let input = psbt.inputs.get(i).ok_or(PsbtError::Malformed)?;
    let Some(sig) = input.partial_sigs.get(&bitcoin::PublicKey::new(*pk)) else {
        return Ok(None);
    };
    if sig.sighash_type != EcdsaSighashType::All {
        return Err(PsbtError::UnsupportedSighash { input: i });
    }
    let msg = sighash(psbt, cache, i, pk)?;
    secp()
        .verify_ecdsa(&msg, &sig.signature, pk)
        .map_err(|_| PsbtError::BadSignature { input: i })?;
    Ok(Some(*sig))
}

/// The signed transaction: P2WPKH witness `[sig, pubkey]`; multisig P2WSH witness
/// `[<empty>, sigs in witness-script key order (exactly threshold of them), witness_script]`.
/// Every signature used is verified first. Inputs already carrying `final_script_witness`
/// keep it.
pub fn finalize(psbt: &Psbt) -> Result<Transaction, PsbtError> {
    check_shape(psbt)?;
    let mut tx = psbt.unsigned_tx.clone();
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    for i in 0..psbt.inputs.len() {
        let input = &psbt.inputs[i];
        if let Some(w) = &input.final_script_witness {
            tx.input[i].witness = w.clone();
            tx.input[i].script_sig = input.final_script_sig.clone().unwrap_or_default();
            continue;
        }
        let spk = &spent_output(psbt, i)?.script_pubkey;
        let mut witness = Witness::new();
        if spk.is_p2wpkh() {
            let mut found = None;
            for pk in input.partial_sigs.keys() {
                if p2wpkh(&pk.inner) == *spk {
                    found = checked_sig(psbt, &mut cache, i, &pk.inner)?.map(|s| (s, pk.inner));
                }
            }
            let (sig, pk) = found.ok_or(PsbtError::NotEnoughSignatures {
                input: i,
                have: 0,
                need: 1,
            })?;
            witness.push(sig.to_vec());
            witness.push(pk.serialize());
        } else if spk.is_p2wsh() {
            let (ws, need, keys) = multisig_input(input, spk, i)?;
            let mut sigs = Vec::with_capacity(need);
            for pk in &keys {
                if sigs.len() == need {
                    break;
                }
                if let Some(sig) = checked_sig(psbt, &mut cache, i, pk)? {
                    sigs.push(sig);
                }
            }
            if sigs.len() < need {
                return Err(PsbtError::NotEnoughSignatures {
                    input: i,
                    have: sigs.len(),
                    need,
                });
            }
            witness.push(Vec::<u8>::new());
            for sig in sigs {
                witness.push(sig.to_vec());
            }
            witness.push(ws.as_bytes());
        } else {
            return Err(PsbtError::UnsupportedInput { input: i });
        }
        tx.input[i].witness = witness;
    }
    Ok(tx)
}

/// The standard base64 text of a PSBT (what Core's `*psbt` calls and other wallets speak).
pub fn to_base64(psbt: &Psbt) -> String {
    base64::engine::general_purpose::STANDARD.encode(psbt.serialize())
}

/// Parses base64 PSBT text (surrounding whitespace ignored; at most
/// [`PSBT_BASE64_LEN_MAX`] characters).
pub fn from_base64(text: &str) -> Result<Psbt, PsbtError> {
    if text.len() > PSBT_BASE64_LEN_MAX {
        return Err(PsbtError::TooLarge);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| PsbtError::Base64)?;
    let psbt = Psbt::deserialize(&bytes).map_err(|e| PsbtError::Decode(e.to_string()))?;
    check_shape(&psbt)?;
    Ok(psbt)
}

/// Merges two copies of the same PSBT (e.g. each signed by a different keyholder).
pub fn combine(mut a: Psbt, b: Psbt) -> Result<Psbt, PsbtError> {
    check_shape(&a)?;
    check_shape(&b)?;
    if a.unsigned_tx != b.unsigned_tx {
        return Err(PsbtError::Combine(
            "they spend or pay differently (unsigned transactions differ)".into(),
        ));
    }
    a.combine(b).map_err(|e| PsbtError::Combine(e.to_string()))?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{derive_hot, hot_account_path, watch_key};
    use bitcoin::bip32::Xpriv;
    use bitcoin::hashes::Hash;
    use bitcoin::{Txid, WScriptHash};

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
    fn dust_limits_are_litecoins() {
        assert_eq!(dust_threshold(&dest()), 2940);
        let wsh = ScriptBuf::new_p2wsh(&WScriptHash::from_byte_array([1; 32]));
        assert_eq!(dust_threshold(&wsh), 3300);
        let pkh = ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::from_byte_array([1; 20]));
        assert_eq!(dust_threshold(&pkh), 5460);
    }

    #[test]
    fn selection_fee_and_change() {
        let m = master(1);
        let key = watch_key(&m, &hot_account_path(NET));
        let change = derive_hot(NET, &key, 1, 0).unwrap();
        let inputs = [
            hot_utxo(&m, 1, 10_000),
            hot_utxo(&m, 2, 50_000),
            hot_utxo(&m, 3, 30_000),
        ];
        // 1 input (50k) covers 40k + fee; 1-in 2-out P2WPKH = 141 vB.
        let b = build(NET, &inputs, &[(dest(), 40_000)], Some(&change), 10).unwrap();
        assert_eq!(b.fee, 1410);
        assert_eq!(b.change, 50_000 - 40_000 - 1410);
        assert_eq!(b.psbt.unsigned_tx.input.len(), 1);
        assert_eq!(b.psbt.unsigned_tx.input[0].previous_output, inputs[1].outpoint);
        assert_eq!(b.psbt.unsigned_tx.input[0].sequence, SEQUENCE);
        assert_eq!(b.psbt.unsigned_tx.version, transaction::Version::TWO);
        let s = summarise(NET, &b.psbt).unwrap();
        assert_eq!(s.fee, b.fee);
        assert_eq!(s.outputs[1].derivation.len(), 1);
        assert!(s.outputs[0].derivation.is_empty());
        // Largest first: needs two inputs.
        let b = build(NET, &inputs, &[(dest(), 70_000)], Some(&change), 10).unwrap();
        assert_eq!(b.psbt.unsigned_tx.input.len(), 2);
        assert_eq!(b.fee, (11 + 68 * 2 + 31 * 2) * 10);
        // Rest below dust goes to the fee.
        let b = build(NET, &inputs, &[(dest(), 48_000)], Some(&change), 1).unwrap();
        assert_eq!((b.fee, b.change, b.psbt.unsigned_tx.output.len()), (2000, 0, 1));
        // Without change: small rest is fee, large rest refused.
        let b = build(NET, &inputs, &[(dest(), 48_000)], None, 1).unwrap();
        assert_eq!(b.fee, 2000);
        assert_eq!(
            build(NET, &inputs, &[(dest(), 40_000)], None, 1),
            Err(BuildError::ChangeNeeded {
                leftover: 50_000 - 40_000 - 110
            })
        );
        let all = 90_000;
        match build(NET, &inputs, &[(dest(), all)], Some(&change), 1) {
            Err(BuildError::InsufficientFunds { needed, available }) => {
                assert_eq!(available, all);
                assert_eq!(needed, all + 11 + 68 * 3 + 31);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            build(NET, &inputs, &[], Some(&change), 1).unwrap_err(),
            BuildError::NoOutputs
        );
        assert!(matches!(
            build(NET, &inputs, &[(dest(), 2939)], Some(&change), 1),
            Err(BuildError::DustOutput {
                index: 0,
                value: 2939,
                min: 2940
            })
        ));
        assert_eq!(
            build(
                NET,
                &inputs,
                &[(dest(), u64::MAX), (dest(), 1 << 20)],
                Some(&change),
                1
            ),
            Err(BuildError::Overflow)
        );
        assert_eq!(
            build(NET, &inputs, &[(dest(), 40_000)], Some(&change), u64::MAX),
            Err(BuildError::Overflow)
        );
        let dup = [inputs[0].clone(), inputs[0].clone()];
        assert!(matches!(
            build(NET, &dup, &[(dest(), 4000)], None, 1),
            Err(BuildError::DuplicateInput { .. })
        ));
        let mut foreign = inputs[0].clone();
        foreign.derived.script_pubkey = dest();
        assert!(matches!(
            build(NET, &[foreign], &[(dest(), 4000)], None, 1),
            Err(BuildError::UnsupportedInput { .. })
        ));
        assert_eq!(
            build(Network::Litecoin, &inputs, &[(dest(), 4000)], Some(&change), 1).unwrap_err(),
            BuildError::WrongNetwork
        );
    }

    #[test]
    fn base64_input_is_bounded_and_checked() {
        assert_eq!(from_base64("!!!"), Err(PsbtError::Base64));
        assert!(matches!(from_base64("cHNidP8="), Err(PsbtError::Decode(_))));
        assert_eq!(
            from_base64(&"A".repeat(PSBT_BASE64_LEN_MAX + 1)),
            Err(PsbtError::TooLarge)
        );
        assert!(matches!(from_base64(""), Err(PsbtError::Decode(_))));
    }
}
