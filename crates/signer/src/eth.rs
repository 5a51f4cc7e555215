//! The signer's own reading of every Ethereum transaction (docs/design/ethereum.md, "The
//! signer's reading of a transaction") and signing with the hot account's keys.
//!
//! Custody hands the signer the raw unsigned EIP-1559 transaction; the signer decodes it
//! itself and signs only if: the chain id is ours; it pays exactly the approved destination
//! and amount, as plain ETH with empty data or as `transfer(to, amount)` on the asset's
//! allowlisted token; nothing else is in the calldata; the fees are within the caps; the nonce
//! is the next one it expects for that key, or the transaction replaces one it signed at that
//! nonce with the same payment and higher fees. Nothing here does I/O or reads a clock.

use crate::policy::{Code, Refusal};
use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv, Xpub};
use kinko_chain::eth::{read_token_call, Branch, Eip1559, EthAddress, Signature, TokenCall, ACCOUNT_PATH};
use secp256k1::{Message, Secp256k1, SecretKey};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::OnceLock;
use zeroize::Zeroizing;

fn secp() -> &'static Secp256k1<secp256k1::All> {
    static SECP: OnceLock<Secp256k1<secp256k1::All>> = OnceLock::new();
    SECP.get_or_init(Secp256k1::new)
}

fn refuse<T>(code: Code, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        code,
        reason: reason.into(),
    })
}

/// The signer's Ethereum caps and allowlist (its configuration, never the host's word).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthPolicy {
    pub chain_id: u64,
    /// Token contracts this signer may call `transfer` on.
    pub tokens: Vec<EthAddress>,
    pub max_fee_per_gas_max: u128,
    pub priority_fee_max: u128,
    pub gas_limit_max: u64,
    /// `gas_limit × max_fee_per_gas`, the most a transaction can cost in gas, in wei.
    pub fee_max_wei: u128,
}

/// What is paid: ether, or a token by its contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Payment {
    Ether,
    Token(EthAddress),
}

/// What an approval says a transaction must pay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intent {
    pub payment: Payment,
    pub destination: EthAddress,
    /// Wei, or the token's minor unit.
    pub amount: u128,
}

/// A transaction the signer signed at a nonce (what a replacement is compared with).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedAt {
    pub intent: Intent,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    /// Keccak-256 of the unsigned transaction (a retry of the very same one signs again).
    pub unsigned_hash: [u8; 32],
}

/// Per key, what the signer signed at each nonce. Rebuilt from the signer's log; a key it
/// never signed with expects its configured start nonce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NonceBook {
    start: BTreeMap<EthAddress, u64>,
    signed: BTreeMap<EthAddress, BTreeMap<u64, SignedAt>>,
}

impl NonceBook {
    /// The nonce a key starts at (its on-chain count when the signer first took it over).
    pub fn set_start(&mut self, key: EthAddress, nonce: u64) {
        self.start.insert(key, nonce);
    }

    /// The next nonce the signer expects for `key`.
    pub fn expected(&self, key: &EthAddress) -> u64 {
        let start = self.start.get(key).copied().unwrap_or(0);
        match self.signed.get(key).and_then(|m| m.last_key_value()) {
            Some((n, _)) => n.saturating_add(1).max(start),
            None => start,
        }
    }

    /// What was last signed at `nonce` for `key`.
    pub fn at(&self, key: &EthAddress, nonce: u64) -> Option<&SignedAt> {
        self.signed.get(key).and_then(|m| m.get(&nonce))
    }

    pub fn record(&mut self, key: EthAddress, nonce: u64, signed: SignedAt) {
        self.signed.entry(key).or_default().insert(nonce, signed);
    }
}

/// What the checks approved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub tx: Eip1559,
    /// It replaces a transaction signed at the same nonce.
    pub replacement: bool,
    /// The very transaction signed before (a retry): sign again, count nothing.
    pub resign: bool,
    /// The most its gas can cost, in wei.
    pub fee_max_wei: u128,
}

/// What the transaction pays, read from its bytes alone.
fn read_payment(policy: &EthPolicy, intent: &Intent, tx: &Eip1559) -> Result<(), Refusal> {
    match intent.payment {
        Payment::Ether => {
            if !tx.data.is_empty() {
                return refuse(
                    Code::CalldataForbidden,
                    format!("an ETH payment carries {} bytes of calldata", tx.data.len()),
                );
            }
            if tx.to != intent.destination || tx.value != intent.amount {
                return refuse(
                    Code::TxPaysOther,
                    format!(
                        "pays {} wei to {}, approved {} wei to {}",
                        tx.value, tx.to, intent.amount, intent.destination
                    ),
                );
            }
        }
        Payment::Token(token) => {
            if !policy.tokens.contains(&token) {
                return refuse(
                    Code::TokenNotAllowed,
                    format!("token {token} is not on this signer's allowlist"),
                );
            }
            if tx.to != token {
                return refuse(
                    Code::TokenNotAllowed,
                    format!("calls {}, not the asset's token {token}", tx.to),
                );
            }
            if tx.value != 0 {
                return refuse(
                    Code::CalldataForbidden,
                    format!("a token call that also sends {} wei", tx.value),
                );
            }
            match read_token_call(&tx.data) {
                TokenCall::Transfer { to, amount } if to == intent.destination && amount == intent.amount => {
                }
                TokenCall::Transfer { to, amount } => {
                    return refuse(
                        Code::TxPaysOther,
                        format!(
                            "transfers {amount} to {to}, approved {} to {}",
                            intent.amount, intent.destination
                        ),
                    )
                }
                TokenCall::TransferHuge { to } => {
                    return refuse(Code::TxPaysOther, format!("transfers more than approved to {to}"))
                }
                TokenCall::Other => {
                    let selector = tx.data.get(..4).map(hex::encode).unwrap_or_default();
                    return refuse(
                        Code::CalldataForbidden,
                        format!(
                            "calldata is not exactly transfer(address,uint256) (selector {selector:?}, {} bytes)",
                            tx.data.len()
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Every check of a raw unsigned transaction from `key` against `intent`, in order:
/// `ETH_TX_MALFORMED`, `CHAIN_ID_WRONG`, `TOKEN_NOT_ALLOWED` / `CALLDATA_FORBIDDEN` /
/// `TX_PAYS_OTHER`, `FEE_TOO_HIGH`, `NONCE_UNEXPECTED` / `REPLACEMENT_INVALID`.
pub fn check_tx(
    policy: &EthPolicy,
    book: &NonceBook,
    key: &EthAddress,
    intent: &Intent,
    raw_unsigned: &[u8],
) -> Result<Checked, Refusal> {
    check_tx_read(policy, book, key, raw_unsigned, |tx| {
        read_payment(policy, intent, tx).map(|()| *intent)
    })
    .map(|(_, checked)| checked)
}

/// [`check_tx`] with another reading of what the transaction pays: `read` (run after the chain
/// id check) says what it pays, which the nonce book then compares (a cold refill's `execute`
/// is read by [`refill_intent`]).
fn check_tx_read(
    policy: &EthPolicy,
    book: &NonceBook,
    key: &EthAddress,
    raw_unsigned: &[u8],
    read: impl FnOnce(&Eip1559) -> Result<Intent, Refusal>,
) -> Result<(Intent, Checked), Refusal> {
    let tx = decode(raw_unsigned)?;
    if tx.max_priority_fee_per_gas > tx.max_fee_per_gas {
        return refuse(Code::EthTxMalformed, "the priority fee is above the fee cap");
    }
    if tx.chain_id != policy.chain_id {
        return refuse(
            Code::ChainIdWrong,
            format!("chain id {}, this signer's is {}", tx.chain_id, policy.chain_id),
        );
    }
    let intent = read(&tx)?;
    let intent = &intent;
    let fee_max_wei = u128::from(tx.gas_limit).checked_mul(tx.max_fee_per_gas);
    let fee_ok = tx.max_fee_per_gas <= policy.max_fee_per_gas_max
        && tx.max_priority_fee_per_gas <= policy.priority_fee_max
        && tx.gas_limit <= policy.gas_limit_max
        && fee_max_wei.is_some_and(|f| f <= policy.fee_max_wei);
    let Some(fee_max_wei) = fee_max_wei.filter(|_| fee_ok) else {
        return refuse(
            Code::FeeTooHigh,
            format!(
                "max fee {} / priority {} per gas, gas limit {}: above the caps ({} / {} / {}, {} wei in all)",
                tx.max_fee_per_gas,
                tx.max_priority_fee_per_gas,
                tx.gas_limit,
                policy.max_fee_per_gas_max,
                policy.priority_fee_max,
                policy.gas_limit_max,
                policy.fee_max_wei
            ),
        );
    };
    let expected = book.expected(key);
    let (replacement, resign) = if tx.nonce == expected {
        (false, false)
    } else if let Some(prev) = book.at(key, tx.nonce) {
        if prev.unsigned_hash == kinko_chain::eth::keccak256(raw_unsigned) {
            (false, true)
        } else if prev.intent != *intent {
            return refuse(
                Code::ReplacementInvalid,
                format!(
                    "nonce {} was signed paying {} {:?} to {}; this pays {} {:?} to {}",
                    tx.nonce,
                    prev.intent.amount,
                    prev.intent.payment,
                    prev.intent.destination,
                    intent.amount,
                    intent.payment,
                    intent.destination
                ),
            );
        } else if tx.max_fee_per_gas <= prev.max_fee_per_gas
            || tx.max_priority_fee_per_gas <= prev.max_priority_fee_per_gas
        {
            return refuse(
                Code::ReplacementInvalid,
                format!(
                    "a replacement at nonce {} must raise both fees above {} / {}",
                    tx.nonce, prev.max_fee_per_gas, prev.max_priority_fee_per_gas
                ),
            );
        } else {
            (true, false)
        }
    } else {
        return refuse(
            Code::NonceUnexpected,
            format!(
                "nonce {}, the next one expected for {key} is {expected}",
                tx.nonce
            ),
        );
    };
    Ok((
        *intent,
        Checked {
            tx,
            replacement,
            resign,
            fee_max_wei,
        },
    ))
}

/// The raw bytes as an unsigned EIP-1559 transaction (`ETH_TX_MALFORMED` otherwise).
pub fn decode(raw_unsigned: &[u8]) -> Result<Eip1559, Refusal> {
    Eip1559::decode_unsigned(raw_unsigned).or_else(|e| {
        refuse(
            Code::EthTxMalformed,
            format!("not an unsigned EIP-1559 transaction: {e}"),
        )
    })
}

/// What a sweep from a deposit address must pay: the signer's own `hot` address, all of it
/// (ETH with empty data, or `transfer(hot, amount)` on the contract it calls, which
/// `check_tx` then holds to the allowlist). Whatever the bytes say, the destination checked is
/// `hot` (`TX_PAYS_OTHER` otherwise).
pub fn sweep_intent(hot: EthAddress, tx: &Eip1559) -> Intent {
    if tx.data.is_empty() {
        return Intent {
            payment: Payment::Ether,
            destination: hot,
            amount: tx.value,
        };
    }
    let amount = match read_token_call(&tx.data) {
        TokenCall::Transfer { amount, .. } => amount,
        _ => 0,
    };
    Intent {
        payment: Payment::Token(tx.to),
        destination: hot,
        amount,
    }
}

/// What a refill from cold must be: a call of `execute` on the signer's own cold contract
/// `cold` (no ETH sent with it) whose inner call pays the signer's own `hot` address: ETH with
/// empty data, or exactly `transfer(hot, x)` on an allowlisted token. Read from the bytes alone
/// (`TX_PAYS_OTHER`, `CALLDATA_FORBIDDEN`, `TOKEN_NOT_ALLOWED` otherwise); the intent is what
/// reaches hot, for the nonce book.
pub fn refill_intent(
    policy: &EthPolicy,
    cold: EthAddress,
    hot: EthAddress,
    tx: &Eip1559,
) -> Result<Intent, Refusal> {
    use kinko_chain::eth::cold::{read_execute, refill_payment, RefillPays};
    if tx.to != cold {
        return refuse(
            Code::TxPaysOther,
            format!("calls {}, not this signer's cold contract {cold}", tx.to),
        );
    }
    if tx.value != 0 {
        return refuse(
            Code::CalldataForbidden,
            format!("a refill call that also sends {} wei", tx.value),
        );
    }
    let Some(call) = read_execute(&tx.data) else {
        let selector = tx.data.get(..4).map(hex::encode).unwrap_or_default();
        return refuse(
            Code::CalldataForbidden,
            format!(
                "calldata is not exactly execute(address,uint256,bytes,bytes) (selector {selector:?}, {} bytes)",
                tx.data.len()
            ),
        );
    };
    match refill_payment(&hot, &call.to, call.value, &call.data) {
        Some(RefillPays::Ether(amount)) => Ok(Intent {
            payment: Payment::Ether,
            destination: hot,
            amount,
        }),
        Some(RefillPays::Token { token, amount }) if policy.tokens.contains(&token) => Ok(Intent {
            payment: Payment::Token(token),
            destination: hot,
            amount,
        }),
        Some(RefillPays::Token { token, .. }) => refuse(
            Code::TokenNotAllowed,
            format!("token {token} is not on this signer's allowlist"),
        ),
        None => refuse(
            Code::TxPaysOther,
            format!(
                "the refill's call pays {} wei to {} with {} bytes of calldata: not this signer's hot address {hot}",
                call.value,
                call.to,
                call.data.len()
            ),
        ),
    }
}

/// [`check_tx`] for a refill from cold: [`refill_intent`] reads the call (after the chain id),
/// then fees and the hot key's nonce book as for any transaction.
pub fn check_refill(
    policy: &EthPolicy,
    book: &NonceBook,
    cold: EthAddress,
    hot: EthAddress,
    raw_unsigned: &[u8],
) -> Result<(Intent, Checked), Refusal> {
    check_tx_read(policy, book, &hot, raw_unsigned, |tx| {
        refill_intent(policy, cold, hot, tx)
    })
}

/// What a gas top-up from hot must pay: plain ETH to our deposit address `deposit`, no more
/// than the most one transaction's gas may cost (`FEE_TOO_HIGH` above `fee_max_wei`).
pub fn topup_intent(policy: &EthPolicy, deposit: EthAddress, tx: &Eip1559) -> Result<Intent, Refusal> {
    if tx.value > policy.fee_max_wei {
        return refuse(
            Code::FeeTooHigh,
            format!("a gas top-up of {} wei is above {}", tx.value, policy.fee_max_wei),
        );
    }
    Ok(Intent {
        payment: Payment::Ether,
        destination: deposit,
        amount: tx.value,
    })
}

/// What the nonce book keeps of a signature.
pub fn signed_at(intent: &Intent, tx: &Eip1559, raw_unsigned: &[u8]) -> SignedAt {
    SignedAt {
        intent: *intent,
        max_fee_per_gas: tx.max_fee_per_gas,
        max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
        unsigned_hash: kinko_chain::eth::keccak256(raw_unsigned),
    }
}

/// The log line of a signature by `key` at `nonce` (what the nonce book is rebuilt from).
pub fn signed_entry(key: EthAddress, at: &SignedAt, nonce: u64, signed: &SignedTx) -> crate::log::Entry {
    crate::log::Entry::EthSigned {
        key: key.checksummed(),
        nonce,
        token: match at.intent.payment {
            Payment::Ether => None,
            Payment::Token(t) => Some(t.checksummed()),
        },
        destination: at.intent.destination.checksummed(),
        amount: at.intent.amount.to_string(),
        max_fee_per_gas: at.max_fee_per_gas.to_string(),
        max_priority_fee_per_gas: at.max_priority_fee_per_gas.to_string(),
        unsigned_hash: at.unsigned_hash,
        tx_hash: signed.hash,
    }
}

/// The hot account `m/44'/60'/0'` of a master key: its private key stays here.
pub struct EthKeys {
    account: Xpriv,
}

impl std::fmt::Debug for EthKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthKeys").finish_non_exhaustive()
    }
}

/// A signed transaction: raw bytes to broadcast and its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    pub raw: Vec<u8>,
    pub hash: [u8; 32],
}

impl EthKeys {
    /// The account keys below `master`.
    pub fn new(master: &Xpriv) -> Result<EthKeys, Refusal> {
        let path = DerivationPath::from_str(ACCOUNT_PATH).map_err(|_| Refusal {
            code: Code::SignFailed,
            reason: "bad account path".into(),
        })?;
        let account = master.derive_priv(secp(), &path).map_err(|_| Refusal {
            code: Code::SignFailed,
            reason: "account derivation failed".into(),
        })?;
        Ok(EthKeys { account })
    }

    /// The account's xpub (what kinko derives deposit addresses from).
    pub fn xpub(&self) -> Xpub {
        Xpub::from_priv(secp(), &self.account)
    }

    fn secret(&self, branch: Branch, index: u32) -> Result<Zeroizing<[u8; 32]>, Refusal> {
        let failed = || Refusal {
            code: Code::SignFailed,
            reason: format!("no key at {branch:?}/{index}"),
        };
        let path = [
            ChildNumber::from_normal_idx(branch as u32).map_err(|_| failed())?,
            ChildNumber::from_normal_idx(index).map_err(|_| failed())?,
        ];
        let child = self.account.derive_priv(secp(), &path).map_err(|_| failed())?;
        Ok(Zeroizing::new(child.private_key.secret_bytes()))
    }

    /// The address at `branch/index`.
    pub fn address(&self, branch: Branch, index: u32) -> Result<EthAddress, Refusal> {
        let sk = self.secret(branch, index)?;
        let sk = SecretKey::from_slice(sk.as_ref()).map_err(|_| Refusal {
            code: Code::SignFailed,
            reason: "invalid key".into(),
        })?;
        Ok(EthAddress::from_pubkey(&sk.public_key(secp())))
    }

    /// Signs `tx` with the key at `branch/index`.
    pub fn sign(&self, branch: Branch, index: u32, tx: &Eip1559) -> Result<SignedTx, Refusal> {
        sign_secret(&*self.secret(branch, index)?, tx)
    }
}

/// Signs `tx` with a secret key (recoverable ECDSA over the signing hash, low S).
fn sign_secret(secret: &[u8; 32], tx: &Eip1559) -> Result<SignedTx, Refusal> {
    let sk = SecretKey::from_slice(secret).map_err(|_| Refusal {
        code: Code::SignFailed,
        reason: "invalid key".into(),
    })?;
    let msg = Message::from_digest(tx.signing_hash());
    let (recid, compact) = secp().sign_ecdsa_recoverable(&msg, &sk).serialize_compact();
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&compact[..32]);
    s.copy_from_slice(&compact[32..]);
    let raw = tx.encode_signed(&Signature {
        y_parity: recid.to_i32() == 1,
        r,
        s,
    });
    let hash = Eip1559::tx_hash(&raw);
    Ok(SignedTx { raw, hash })
}

/// The sender of a signed transaction, recovered from its signature.
pub fn recover_sender(raw_signed: &[u8]) -> Option<EthAddress> {
    let (tx, sig) = Eip1559::decode_signed(raw_signed).ok()?;
    let recid = secp256k1::ecdsa::RecoveryId::from_i32(i32::from(sig.y_parity)).ok()?;
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&sig.r);
    compact[32..].copy_from_slice(&sig.s);
    let rsig = secp256k1::ecdsa::RecoverableSignature::from_compact(&compact, recid).ok()?;
    let key = secp()
        .recover_ecdsa(&Message::from_digest(tx.signing_hash()), &rsig)
        .ok()?;
    Some(EthAddress::from_pubkey(&key))
}

/// The Ethereum signer: its policy, the hot account's keys and its nonce book. Withdrawals are
/// paid from the hot wallet (`…/0/0`).
pub struct EthSigner {
    pub policy: EthPolicy,
    keys: EthKeys,
    pub book: NonceBook,
    hot: EthAddress,
    /// The hot key itself, derived once (zeroized on drop).
    hot_secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for EthSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("EthSigner")
            .field("policy", &self.policy)
            .field("hot", &self.hot)
            .finish_non_exhaustive()
    }
}

impl EthSigner {
    pub fn new(policy: EthPolicy, master: &Xpriv, book: NonceBook) -> Result<EthSigner, Refusal> {
        let keys = EthKeys::new(master)?;
        let hot = keys.address(Branch::Hot, 0)?;
        let hot_secret = keys.secret(Branch::Hot, 0)?;
        Ok(EthSigner {
            policy,
            keys,
            book,
            hot,
            hot_secret,
        })
    }

    /// The hot wallet's address.
    pub fn hot(&self) -> EthAddress {
        self.hot
    }

    pub fn xpub(&self) -> Xpub {
        self.keys.xpub()
    }

    /// [`EthSigner::sign_withdrawal`], and the signature written to the signer's log (fsynced)
    /// before it is returned: the nonce book a restart rebuilds from the log
    /// (`Registry::eth`) knows it.
    pub fn sign_withdrawal_logged(
        &mut self,
        log: &mut crate::log::Log,
        time_ns: u64,
        intent: &Intent,
        raw_unsigned: &[u8],
    ) -> Result<(Checked, SignedTx), Refusal> {
        let checked = check_tx(&self.policy, &self.book, &self.hot, intent, raw_unsigned)?;
        let signed = sign_secret(&self.hot_secret, &checked.tx)?;
        let at = signed_at(intent, &checked.tx, raw_unsigned);
        log.append(time_ns, signed_entry(self.hot, &at, checked.tx.nonce, &signed))
            .map_err(|e| Refusal {
                code: Code::LogUnavailable,
                reason: format!("the log could not be written: {e}"),
            })?;
        self.book.record(self.hot, checked.tx.nonce, at);
        Ok((checked, signed))
    }

    /// A sweep from deposit address `index` to the hot wallet, signed with that address's key:
    /// ETH with empty data whose `to` is our hot address, or `transfer(hot, amount)` on an
    /// allowlisted token. Whatever it sweeps, the destination is ours (`TX_PAYS_OTHER`
    /// otherwise); fees and the deposit key's nonce are checked as for withdrawals.
    pub fn sign_sweep(&mut self, index: u32, raw_unsigned: &[u8]) -> Result<(Checked, SignedTx), Refusal> {
        let intent = sweep_intent(self.hot, &decode(raw_unsigned)?);
        let from = self.keys.address(Branch::Deposit, index)?;
        let checked = check_tx(&self.policy, &self.book, &from, &intent, raw_unsigned)?;
        let secret = self.keys.secret(Branch::Deposit, index)?;
        let signed = sign_secret(&secret, &checked.tx)?;
        self.record(from, &checked, &intent, raw_unsigned);
        Ok((checked, signed))
    }

    /// Gas for a token sweep: ETH from the hot wallet to our deposit address `index`, no more
    /// than the most one transaction's gas may cost (`fee_max_wei`; `FEE_TOO_HIGH` above).
    pub fn sign_gas_topup(
        &mut self,
        index: u32,
        raw_unsigned: &[u8],
    ) -> Result<(Checked, SignedTx), Refusal> {
        let to = self.keys.address(Branch::Deposit, index)?;
        let intent = topup_intent(&self.policy, to, &decode(raw_unsigned)?)?;
        let checked = check_tx(&self.policy, &self.book, &self.hot, &intent, raw_unsigned)?;
        let signed = sign_secret(&self.hot_secret, &checked.tx)?;
        let hot = self.hot;
        self.record(hot, &checked, &intent, raw_unsigned);
        Ok((checked, signed))
    }

    fn record(&mut self, key: EthAddress, checked: &Checked, intent: &Intent, raw_unsigned: &[u8]) {
        self.book.record(
            key,
            checked.tx.nonce,
            signed_at(intent, &checked.tx, raw_unsigned),
        );
    }

    /// Checks `raw_unsigned` against an approved withdrawal (the proof, address, review and
    /// limit checks have passed) and signs it with the hot key; records it in the nonce book.
    pub fn sign_withdrawal(
        &mut self,
        intent: &Intent,
        raw_unsigned: &[u8],
    ) -> Result<(Checked, SignedTx), Refusal> {
        let checked = check_tx(&self.policy, &self.book, &self.hot, intent, raw_unsigned)?;
        let signed = sign_secret(&self.hot_secret, &checked.tx)?;
        let hot = self.hot;
        self.record(hot, &checked, intent, raw_unsigned);
        Ok((checked, signed))
    }
}
