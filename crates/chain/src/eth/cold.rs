//! The cold multisig contract (`testdata/ColdMultisig.sol`, docs/design/ethereum.md "Cold
//! setup"): its committed bytecode and deployment, the EIP-712 digest its owners sign, the
//! `execute` calldata (built, and read strictly), signature recovery, what the contract says of
//! itself (owners, threshold, nonce), and the refill request file the keyholders pass around.
//! Public keys only: the keyholders sign in `kinko-signer` (`offline-sign`).

use super::rpc::{EthRpc, EthRpcError};
use super::{keccak256, read_token_call, EthAddress, TokenCall};
use secp256k1::{ecdsa::RecoverableSignature, ecdsa::RecoveryId, Message, Secp256k1};
use serde::{Deserialize, Serialize};

/// The contract's committed deployment code (hex), checked against its source in kinko-chain's
/// tests; deployment is this followed by `abi.encode(owners, threshold)`.
pub const COLD_MULTISIG_BIN: &str = include_str!("../../testdata/ColdMultisig.bin");
/// Most owners the contract takes.
pub const OWNERS_MAX: usize = 16;
/// Gas of a hot → cold ETH payment (the contract's `receive` runs).
pub const COLD_SWEEP_GAS: u64 = 40_000;
/// Gas offered for an `execute` (the signature checks, the nonce, the call; about 95 000 for a
/// 2-of-3 token refill): the signer's `gas_limit_max` must allow it.
pub const EXECUTE_GAS: u64 = 150_000;
/// What a refill request file says it is.
pub const REFILL_KIND: &str = "kinko-eth-refill";
/// Half the curve order: a signature's `s` must not be above it (the contract's rule too).
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x5d,
    0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// The 4-byte selector of a function signature.
pub fn selector(signature: &str) -> [u8; 4] {
    let h = keccak256(signature.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

fn word_address(a: &EthAddress) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(&a.0);
    w
}

fn word_u128(v: u128) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

fn padded_len(n: usize) -> usize {
    n.div_ceil(32) * 32
}

/// Why a cold wallet could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    #[error("owners must be 1 to {OWNERS_MAX} distinct addresses and 1 <= threshold <= owners")]
    Owners,
    #[error("the contract's answer to {0} is not what ColdMultisig answers")]
    Answer(&'static str),
    #[error("node: {0}")]
    Rpc(#[from] EthRpcError),
}

/// The deployment code for `owners` (any order: sorted here) and `threshold`.
pub fn deploy_code(owners: &[EthAddress], threshold: u64) -> Result<Vec<u8>, ColdError> {
    let mut sorted = owners.to_vec();
    sorted.sort();
    sorted.dedup();
    let n = sorted.len();
    if n != owners.len() || n == 0 || n > OWNERS_MAX || threshold == 0 || threshold > n as u64 {
        return Err(ColdError::Owners);
    }
    let mut code = hex::decode(COLD_MULTISIG_BIN.trim()).map_err(|_| ColdError::Answer("bytecode"))?;
    code.extend_from_slice(&word_u128(0x40));
    code.extend_from_slice(&word_u128(u128::from(threshold)));
    code.extend_from_slice(&word_u128(n as u128));
    for o in &sorted {
        code.extend_from_slice(&word_address(o));
    }
    Ok(code)
}

/// The EIP-712 digest the owners sign for `execute(to, value, data)` at `nonce` on the
/// contract at `contract` on chain `chain_id` (the contract's `digest(...)`).
pub fn digest(
    chain_id: u64,
    contract: &EthAddress,
    nonce: u64,
    to: &EthAddress,
    value: u128,
    data: &[u8],
) -> [u8; 32] {
    let mut domain = Vec::with_capacity(96);
    domain.extend_from_slice(&keccak256(
        b"EIP712Domain(uint256 chainId,address verifyingContract)",
    ));
    domain.extend_from_slice(&word_u128(u128::from(chain_id)));
    domain.extend_from_slice(&word_address(contract));
    let mut body = Vec::with_capacity(160);
    body.extend_from_slice(&keccak256(
        b"Execute(address to,uint256 value,bytes data,uint256 nonce)",
    ));
    body.extend_from_slice(&word_address(to));
    body.extend_from_slice(&word_u128(value));
    body.extend_from_slice(&keccak256(data));
    body.extend_from_slice(&word_u128(u128::from(nonce)));
    let mut all = Vec::with_capacity(66);
    all.extend_from_slice(&[0x19, 0x01]);
    all.extend_from_slice(&keccak256(&domain));
    all.extend_from_slice(&keccak256(&body));
    keccak256(&all)
}

/// A decoded `execute(address,uint256,bytes,bytes)` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execute {
    pub to: EthAddress,
    pub value: u128,
    pub data: Vec<u8>,
    /// `r ‖ s ‖ v` per owner, 65 bytes each.
    pub signatures: Vec<u8>,
}

/// `execute(to, value, data, signatures)` calldata (signatures concatenated in the order given).
pub fn execute_calldata(to: &EthAddress, value: u128, data: &[u8], signatures: &[[u8; 65]]) -> Vec<u8> {
    let sigs: Vec<u8> = signatures.iter().flatten().copied().collect();
    encode_execute(&Execute {
        to: *to,
        value,
        data: data.to_vec(),
        signatures: sigs,
    })
}

fn encode_execute(e: &Execute) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 32 * 6 + padded_len(e.data.len()) + padded_len(e.signatures.len()));
    out.extend_from_slice(&selector("execute(address,uint256,bytes,bytes)"));
    out.extend_from_slice(&word_address(&e.to));
    out.extend_from_slice(&word_u128(e.value));
    out.extend_from_slice(&word_u128(0x80));
    out.extend_from_slice(&word_u128((0x80 + 32 + padded_len(e.data.len())) as u128));
    for bytes in [&e.data, &e.signatures] {
        out.extend_from_slice(&word_u128(bytes.len() as u128));
        out.extend_from_slice(bytes);
        out.resize(out.len() + padded_len(bytes.len()) - bytes.len(), 0);
    }
    out
}

fn word_at(data: &[u8], at: usize) -> Option<&[u8]> {
    data.get(at..at.checked_add(32)?)
}

fn small(word: &[u8]) -> Option<usize> {
    if word[..24].iter().any(|b| *b != 0) {
        return None;
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&word[24..]);
    usize::try_from(u64::from_be_bytes(w)).ok()
}

fn bytes_at(args: &[u8], offset: usize) -> Option<Vec<u8>> {
    let len = small(word_at(args, offset)?)?;
    let start = offset.checked_add(32)?;
    args.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
}

/// Reads `execute` calldata strictly: the selector, then exactly the canonical encoding of its
/// arguments (what [`execute_calldata`] writes: no dirty words, no other offsets, nothing
/// after); `None` for anything else.
pub fn read_execute(calldata: &[u8]) -> Option<Execute> {
    if calldata.get(..4)? != selector("execute(address,uint256,bytes,bytes)") {
        return None;
    }
    let args = &calldata[4..];
    let to_word = word_at(args, 0)?;
    if to_word[..12].iter().any(|b| *b != 0) {
        return None;
    }
    let mut to = [0u8; 20];
    to.copy_from_slice(&to_word[12..]);
    let value_word = word_at(args, 32)?;
    if value_word[..16].iter().any(|b| *b != 0) {
        return None;
    }
    let mut v = [0u8; 16];
    v.copy_from_slice(&value_word[16..]);
    let data = bytes_at(args, small(word_at(args, 64)?)?)?;
    let signatures = bytes_at(args, small(word_at(args, 96)?)?)?;
    let e = Execute {
        to: EthAddress(to),
        value: u128::from_be_bytes(v),
        data,
        signatures,
    };
    (encode_execute(&e) == calldata).then_some(e)
}

/// The address whose key made `sig` (`r ‖ s ‖ v`, `v` 27 or 28, low `s`) over `digest`.
pub fn recover(digest: &[u8; 32], sig: &[u8; 65]) -> Option<EthAddress> {
    if sig[32..64] > HALF_ORDER[..] {
        return None;
    }
    let id = match sig[64] {
        27 => 0,
        28 => 1,
        _ => return None,
    };
    let rsig = RecoverableSignature::from_compact(&sig[..64], RecoveryId::from_i32(id).ok()?).ok()?;
    let key = Secp256k1::verification_only()
        .recover_ecdsa(&Message::from_digest(*digest), &rsig)
        .ok()?;
    Some(EthAddress::from_pubkey(&key))
}

/// What a refill from cold pays the hot address: ETH (`to` = hot, empty data) or a token's
/// `transfer(hot, amount)` (`to` = the token, `value` 0). `None`: it pays anything else.
pub fn refill_payment(hot: &EthAddress, to: &EthAddress, value: u128, data: &[u8]) -> Option<RefillPays> {
    if data.is_empty() {
        return (to == hot && value > 0).then_some(RefillPays::Ether(value));
    }
    match read_token_call(data) {
        TokenCall::Transfer { to: r, amount } if r == *hot && value == 0 && amount > 0 => {
            Some(RefillPays::Token { token: *to, amount })
        }
        _ => None,
    }
}

/// What a refill moves to hot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefillPays {
    Ether(u128),
    Token { token: EthAddress, amount: u128 },
}

/// The contract's owners, threshold and nonce as it reports them at `tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdState {
    pub owners: Vec<EthAddress>,
    pub threshold: u64,
    pub nonce: u64,
}

fn uint(out: &[u8], what: &'static str) -> Result<u64, ColdError> {
    if out.len() != 32 {
        return Err(ColdError::Answer(what));
    }
    let n = small(out).ok_or(ColdError::Answer(what))?;
    u64::try_from(n).map_err(|_| ColdError::Answer(what))
}

/// Reads `owners()`, `threshold()` and `nonce()` of the contract at `contract`.
pub fn read_state(rpc: &EthRpc, contract: &EthAddress, tag: &str) -> Result<ColdState, ColdError> {
    let threshold = uint(
        &rpc.eth_call(contract, &selector("threshold()"), tag)?,
        "threshold()",
    )?;
    let nonce = uint(&rpc.eth_call(contract, &selector("nonce()"), tag)?, "nonce()")?;
    let out = rpc.eth_call(contract, &selector("owners()"), tag)?;
    let bad = || ColdError::Answer("owners()");
    let offset = small(word_at(&out, 0).ok_or_else(bad)?).ok_or_else(bad)?;
    let n = small(word_at(&out, offset).ok_or_else(bad)?).ok_or_else(bad)?;
    if n == 0 || n > OWNERS_MAX {
        return Err(bad());
    }
    let mut owners = Vec::with_capacity(n);
    for i in 0..n {
        let w = word_at(&out, offset + 32 + 32 * i).ok_or_else(bad)?;
        if w[..12].iter().any(|b| *b != 0) {
            return Err(bad());
        }
        let mut a = [0u8; 20];
        a.copy_from_slice(&w[12..]);
        owners.push(EthAddress(a));
    }
    if threshold == 0 || threshold > n as u64 {
        return Err(ColdError::Answer("threshold()"));
    }
    Ok(ColdState {
        owners,
        threshold,
        nonce,
    })
}

/// One keyholder's signature in a refill file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefillSignature {
    /// The owner address the signature is by (EIP-55).
    pub owner: String,
    /// `r ‖ s ‖ v`, 65 bytes in hex.
    pub signature: String,
}

/// The unsigned refill request `kinko custody refill` writes, each keyholder's `kinko-signer
/// offline-sign` adds a signature to, and `kinko custody submit` sends: `execute(to, value,
/// data)` at `nonce` on `contract`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EthRefill {
    /// Always [`REFILL_KIND`].
    pub kind: String,
    /// The asset's code (`ETH`, `USDC`) and the amount in its minor unit (decimal).
    pub asset: String,
    pub amount: String,
    pub chain_id: u64,
    pub contract: String,
    pub nonce: u64,
    pub to: String,
    /// Wei, decimal.
    pub value: String,
    /// Hex, no `0x`.
    pub data: String,
    /// The EIP-712 digest (hex), which signers recompute rather than trust.
    pub digest: String,
    /// The contract's owners and threshold when the request was made (shown to the keyholders;
    /// the contract itself is what counts).
    pub owners: Vec<String>,
    pub threshold: u64,
    #[serde(default)]
    pub signatures: Vec<RefillSignature>,
}

/// A refill request's fields, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefillCall {
    pub chain_id: u64,
    pub contract: EthAddress,
    pub nonce: u64,
    pub to: EthAddress,
    pub value: u128,
    pub data: Vec<u8>,
}

impl RefillCall {
    /// The digest of this call (what the owners sign).
    pub fn digest(&self) -> [u8; 32] {
        digest(
            self.chain_id,
            &self.contract,
            self.nonce,
            &self.to,
            self.value,
            &self.data,
        )
    }
}

/// Why a refill file is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefillFileError {
    #[error("REFILL_INVALID: {0}")]
    Invalid(String),
    #[error("SIGNATURE_DIGEST_WRONG: the file's digest is not the one its fields give")]
    DigestWrong,
}

impl EthRefill {
    /// The call the file describes, with its stated digest checked against the fields.
    pub fn call(&self) -> Result<RefillCall, RefillFileError> {
        let bad = |m: &str| RefillFileError::Invalid(m.to_owned());
        if self.kind != REFILL_KIND {
            return Err(bad("not a kinko Ethereum refill request"));
        }
        let call = RefillCall {
            chain_id: self.chain_id,
            contract: EthAddress::parse(&self.contract).map_err(|_| bad("contract is not an address"))?,
            nonce: self.nonce,
            to: EthAddress::parse(&self.to).map_err(|_| bad("to is not an address"))?,
            value: self
                .value
                .parse()
                .map_err(|_| bad("value is not a decimal integer"))?,
            data: hex::decode(&self.data).map_err(|_| bad("data is not hex"))?,
        };
        if self.digest != hex::encode(call.digest()) {
            return Err(RefillFileError::DigestWrong);
        }
        Ok(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_calldata_round_trips_and_anything_else_is_refused() {
        let to = EthAddress([7; 20]);
        let data = crate::eth::erc20_transfer(&EthAddress([9; 20]), 5);
        let sigs = [[1u8; 65], [2u8; 65]];
        let c = execute_calldata(&to, 3, &data, &sigs);
        let e = read_execute(&c).unwrap();
        assert_eq!((e.to, e.value, e.data.as_slice()), (to, 3, data.as_slice()));
        assert_eq!(e.signatures.len(), 130);
        let mut extra = c.clone();
        extra.push(0);
        assert_eq!(read_execute(&extra), None);
        let mut dirty = c.clone();
        dirty[4] = 1;
        assert_eq!(read_execute(&dirty), None);
        let mut offset = c.clone();
        offset[4 + 64 + 31] = 0xa0;
        assert_eq!(read_execute(&offset), None);
        assert_eq!(read_execute(&c[..c.len() - 1]), None);
        assert_eq!(read_execute(&data), None);
        let empty = execute_calldata(&to, 1, &[], &[]);
        assert_eq!(read_execute(&empty).unwrap().data, Vec::<u8>::new());
    }

    #[test]
    fn a_refill_pays_hot_or_nothing() {
        let hot = EthAddress([1; 20]);
        let other = EthAddress([2; 20]);
        let token = EthAddress([3; 20]);
        assert_eq!(refill_payment(&hot, &hot, 5, &[]), Some(RefillPays::Ether(5)));
        assert_eq!(refill_payment(&hot, &other, 5, &[]), None);
        assert_eq!(refill_payment(&hot, &hot, 0, &[]), None);
        let t = crate::eth::erc20_transfer(&hot, 9);
        assert_eq!(
            refill_payment(&hot, &token, 0, &t),
            Some(RefillPays::Token { token, amount: 9 })
        );
        assert_eq!(refill_payment(&hot, &token, 1, &t), None);
        let t = crate::eth::erc20_transfer(&other, 9);
        assert_eq!(refill_payment(&hot, &token, 0, &t), None);
        let a = crate::eth::erc20_approve(&hot, 9);
        assert_eq!(refill_payment(&hot, &token, 0, &a), None);
    }

    #[test]
    fn deployment_needs_sane_owners() {
        let a = EthAddress([1; 20]);
        let b = EthAddress([2; 20]);
        assert!(deploy_code(&[b, a], 2).is_ok());
        assert!(deploy_code(&[a, a], 1).is_err());
        assert!(deploy_code(&[a, b], 3).is_err());
        assert!(deploy_code(&[a, b], 0).is_err());
        assert!(deploy_code(&[], 0).is_err());
    }
}
