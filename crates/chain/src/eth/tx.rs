//! EIP-1559 (type 2) transactions: RLP encoding of the unsigned and signed forms, the signing
//! hash, and strict decoding (canonical RLP, nothing after the transaction, an empty access
//! list, a `to`: we never create contracts). Amounts are `u128`: a value or fee that does not
//! fit is refused when decoding, never truncated.

use super::{keccak256, EthAddress};
use alloy_rlp::{Decodable, Encodable, Header};

/// The EIP-2718 type byte of an EIP-1559 transaction.
pub const TX_TYPE: u8 = 0x02;
/// Largest raw transaction accepted for decoding.
pub const RAW_BYTES_MAX: usize = 128 * 1024;

/// An EIP-1559 transaction with an empty access list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eip1559 {
    pub chain_id: u64,
    pub nonce: u64,
    pub max_priority_fee_per_gas: u128,
    pub max_fee_per_gas: u128,
    pub gas_limit: u64,
    pub to: EthAddress,
    pub value: u128,
    pub data: Vec<u8>,
}

/// A secp256k1 signature as Ethereum transactions carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    pub y_parity: bool,
    pub r: [u8; 32],
    pub s: [u8; 32],
}

/// Why bytes are not a transaction we accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EthTxError {
    #[error("not an EIP-1559 (type 2) transaction")]
    NotType2,
    #[error("larger than {RAW_BYTES_MAX} bytes")]
    TooLarge,
    #[error("malformed RLP: {0}")]
    Rlp(String),
    #[error("bytes after the transaction")]
    Trailing,
    #[error("a contract creation (no `to`)")]
    NoRecipient,
    #[error("a non-empty access list")]
    AccessList,
    #[error("a signature where an unsigned transaction was expected, or none where one was")]
    Signature,
}

fn rlp(e: alloy_rlp::Error) -> EthTxError {
    EthTxError::Rlp(e.to_string())
}

/// A big-endian integer without leading zeros, as RLP wants it.
fn trimmed(b: &[u8; 32]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(32);
    &b[first..]
}

impl Eip1559 {
    fn fields_len(&self) -> usize {
        self.chain_id.length()
            + self.nonce.length()
            + self.max_priority_fee_per_gas.length()
            + self.max_fee_per_gas.length()
            + self.gas_limit.length()
            + self.to.0.length()
            + self.value.length()
            + self.data.as_slice().length()
            + 1 // the empty access list
    }

    fn encode_fields(&self, out: &mut Vec<u8>) {
        self.chain_id.encode(out);
        self.nonce.encode(out);
        self.max_priority_fee_per_gas.encode(out);
        self.max_fee_per_gas.encode(out);
        self.gas_limit.encode(out);
        self.to.0.encode(out);
        self.value.encode(out);
        self.data.as_slice().encode(out);
        Header {
            list: true,
            payload_length: 0,
        }
        .encode(out);
    }

    /// `0x02 ‖ rlp([chain_id, nonce, …, access_list])`: what is signed (after hashing) and what
    /// custody hands the signer.
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.fields_len());
        out.push(TX_TYPE);
        Header {
            list: true,
            payload_length: self.fields_len(),
        }
        .encode(&mut out);
        self.encode_fields(&mut out);
        out
    }

    /// Keccak-256 of [`Eip1559::encode_unsigned`].
    pub fn signing_hash(&self) -> [u8; 32] {
        keccak256(&self.encode_unsigned())
    }

    /// The signed transaction as it is broadcast (`eth_sendRawTransaction`).
    pub fn encode_signed(&self, sig: &Signature) -> Vec<u8> {
        let r = trimmed(&sig.r);
        let s = trimmed(&sig.s);
        let payload = self.fields_len() + u8::from(sig.y_parity).length() + r.length() + s.length();
        let mut out = Vec::with_capacity(16 + payload);
        out.push(TX_TYPE);
        Header {
            list: true,
            payload_length: payload,
        }
        .encode(&mut out);
        self.encode_fields(&mut out);
        u8::from(sig.y_parity).encode(&mut out);
        r.encode(&mut out);
        s.encode(&mut out);
        out
    }

    /// The transaction hash of a signed transaction: Keccak-256 of its raw bytes.
    pub fn tx_hash(raw_signed: &[u8]) -> [u8; 32] {
        keccak256(raw_signed)
    }

    /// Decodes an unsigned type-2 transaction, strictly.
    pub fn decode_unsigned(raw: &[u8]) -> Result<Eip1559, EthTxError> {
        let (tx, sig) = decode(raw)?;
        if sig.is_some() {
            return Err(EthTxError::Signature);
        }
        Ok(tx)
    }

    /// Decodes a signed type-2 transaction, strictly.
    pub fn decode_signed(raw: &[u8]) -> Result<(Eip1559, Signature), EthTxError> {
        match decode(raw)? {
            (tx, Some(sig)) => Ok((tx, sig)),
            (_, None) => Err(EthTxError::Signature),
        }
    }
}

fn decode(raw: &[u8]) -> Result<(Eip1559, Option<Signature>), EthTxError> {
    if raw.len() > RAW_BYTES_MAX {
        return Err(EthTxError::TooLarge);
    }
    let Some((&TX_TYPE, rest)) = raw.split_first() else {
        return Err(EthTxError::NotType2);
    };
    let mut buf = rest;
    let mut body = Header::decode_bytes(&mut buf, true).map_err(rlp)?;
    if !buf.is_empty() {
        return Err(EthTxError::Trailing);
    }
    let chain_id = u64::decode(&mut body).map_err(rlp)?;
    let nonce = u64::decode(&mut body).map_err(rlp)?;
    let max_priority_fee_per_gas = u128::decode(&mut body).map_err(rlp)?;
    let max_fee_per_gas = u128::decode(&mut body).map_err(rlp)?;
    let gas_limit = u64::decode(&mut body).map_err(rlp)?;
    let to = Header::decode_bytes(&mut body, false).map_err(rlp)?;
    let to: [u8; 20] = match to.len() {
        0 => return Err(EthTxError::NoRecipient),
        _ => to
            .try_into()
            .map_err(|_| EthTxError::Rlp("`to` is not 20 bytes".into()))?,
    };
    let value = u128::decode(&mut body).map_err(rlp)?;
    let data = Header::decode_bytes(&mut body, false).map_err(rlp)?.to_vec();
    let access = Header::decode_bytes(&mut body, true).map_err(rlp)?;
    if !access.is_empty() {
        return Err(EthTxError::AccessList);
    }
    let tx = Eip1559 {
        chain_id,
        nonce,
        max_priority_fee_per_gas,
        max_fee_per_gas,
        gas_limit,
        to: EthAddress(to),
        value,
        data,
    };
    if body.is_empty() {
        return Ok((tx, None));
    }
    let y = u8::decode(&mut body).map_err(rlp)?;
    let r = word(&mut body)?;
    let s = word(&mut body)?;
    if !body.is_empty() || y > 1 {
        return Err(EthTxError::Signature);
    }
    Ok((
        tx,
        Some(Signature {
            y_parity: y == 1,
            r,
            s,
        }),
    ))
}

fn word(body: &mut &[u8]) -> Result<[u8; 32], EthTxError> {
    let b = Header::decode_bytes(body, false).map_err(rlp)?;
    if b.len() > 32 || b.first() == Some(&0) {
        return Err(EthTxError::Signature);
    }
    let mut w = [0u8; 32];
    w[32 - b.len()..].copy_from_slice(b);
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Eip1559 {
        Eip1559 {
            chain_id: 31337,
            nonce: 7,
            max_priority_fee_per_gas: 1_000_000_000,
            max_fee_per_gas: 30_000_000_000,
            gas_limit: 21_000,
            to: EthAddress([0x11; 20]),
            value: 1_000_000_000_000_000_000,
            data: Vec::new(),
        }
    }

    #[test]
    fn unsigned_and_signed_forms_round_trip() {
        let tx = sample();
        let raw = tx.encode_unsigned();
        assert_eq!(raw[0], 2);
        assert_eq!(Eip1559::decode_unsigned(&raw).unwrap(), tx);
        let sig = Signature {
            y_parity: true,
            r: [0x22; 32],
            s: [0x33; 32],
        };
        let signed = tx.encode_signed(&sig);
        assert_eq!(Eip1559::decode_signed(&signed).unwrap(), (tx.clone(), sig));
        assert_eq!(Eip1559::decode_unsigned(&signed), Err(EthTxError::Signature));
        assert_eq!(Eip1559::decode_signed(&raw), Err(EthTxError::Signature));
    }

    #[test]
    fn known_encoding_of_a_simple_transfer() {
        // Fields chosen by hand; the expected bytes are RLP written out:
        // 02 e5 [827a69 07 843b9aca00 8506fc23ac00 825208 94 11×20 880de0b6b3a7640000 80 c0]
        let raw = sample().encode_unsigned();
        let expected = format!(
            "02f2827a6907843b9aca008506fc23ac0082520894{}880de0b6b3a764000080c0",
            "11".repeat(20)
        );
        assert_eq!(hex::encode(raw), expected);
    }

    #[test]
    fn strict_decoding_refuses_what_we_never_build() {
        let raw = sample().encode_unsigned();
        let mut trailing = raw.clone();
        trailing.push(0);
        assert_eq!(Eip1559::decode_unsigned(&trailing), Err(EthTxError::Trailing));
        let mut legacy = raw.clone();
        legacy[0] = 0x01;
        assert_eq!(Eip1559::decode_unsigned(&legacy), Err(EthTxError::NotType2));
        assert!(matches!(
            Eip1559::decode_unsigned(&raw[..raw.len() - 3]),
            Err(EthTxError::Rlp(_))
        ));
        // An access list with one entry: [[address, []]].
        let mut body = raw[2..raw.len() - 1].to_vec();
        body.extend_from_slice(&[0xd7, 0xd6, 0x94]);
        body.extend_from_slice(&[0x44; 20]);
        body.push(0xc0);
        let mut with_access = vec![TX_TYPE];
        Header {
            list: true,
            payload_length: body.len(),
        }
        .encode(&mut with_access);
        with_access.extend_from_slice(&body);
        assert_eq!(
            Eip1559::decode_unsigned(&with_access),
            Err(EthTxError::AccessList)
        );
        assert_eq!(Eip1559::decode_unsigned(&[]), Err(EthTxError::NotType2));
    }
}
