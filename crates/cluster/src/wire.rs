//! One stream message = one journal batch:
//!
//! ```text
//! "KJB1" | first_seq u64 | timestamp_ns u64 | head_hash [32] | count u32 |
//!   count × (kind u16 | len u32 | payload)          (integers little-endian)
//! ```
//!
//! Headers: `Nats-Expected-Last-Sequence`, `Nats-Msg-Id` (`<epoch>-<first_seq>`),
//! `Kinko-Epoch`.

use kinko_engine::replication::ReplBatch;

const MAGIC: &[u8; 4] = b"KJB1";
/// Most records one message may claim (a batch is at most the sequencer's batch size).
const RECORDS_MAX: u32 = 1 << 20;

/// The header carrying the writer's epoch.
pub const EPOCH_HEADER: &str = "Kinko-Epoch";

/// Why a message is not a batch.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream message is not a journal batch: {0}")]
pub struct WireError(pub &'static str);

/// Encodes a batch as a message body.
pub fn encode(b: &ReplBatch) -> Vec<u8> {
    let size: usize = b.records.iter().map(|(_, p)| 6 + p.len()).sum();
    let mut out = Vec::with_capacity(56 + size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&b.first_seq.to_le_bytes());
    out.extend_from_slice(&b.timestamp_ns.to_le_bytes());
    out.extend_from_slice(&b.head_hash);
    out.extend_from_slice(&u32::try_from(b.records.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (kind, payload) in &b.records {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
    if buf.len() < n {
        return Err(WireError("truncated"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn u64_of(buf: &mut &[u8]) -> Result<u64, WireError> {
    let b = take(buf, 8)?;
    Ok(u64::from_le_bytes(
        b.try_into().map_err(|_| WireError("truncated"))?,
    ))
}

fn u32_of(buf: &mut &[u8]) -> Result<u32, WireError> {
    let b = take(buf, 4)?;
    Ok(u32::from_le_bytes(
        b.try_into().map_err(|_| WireError("truncated"))?,
    ))
}

/// Decodes a message body; anything but an exact batch is an error.
pub fn decode(mut buf: &[u8]) -> Result<ReplBatch, WireError> {
    if take(&mut buf, 4)? != MAGIC {
        return Err(WireError("bad magic"));
    }
    let first_seq = u64_of(&mut buf)?;
    let timestamp_ns = u64_of(&mut buf)?;
    let mut head_hash = [0u8; 32];
    head_hash.copy_from_slice(take(&mut buf, 32)?);
    let count = u32_of(&mut buf)?;
    if count == 0 || count > RECORDS_MAX || first_seq == 0 {
        return Err(WireError("bad record count or sequence"));
    }
    let mut records = Vec::with_capacity(count.min(8_192) as usize);
    for _ in 0..count {
        let kb = take(&mut buf, 2)?;
        let kind = u16::from_le_bytes([kb[0], kb[1]]);
        let len = u32_of(&mut buf)? as usize;
        records.push((kind, take(&mut buf, len)?.to_vec()));
    }
    if !buf.is_empty() {
        return Err(WireError("trailing bytes"));
    }
    Ok(ReplBatch {
        first_seq,
        timestamp_ns,
        head_hash,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_survives_the_wire_and_damage_is_refused() {
        let b = ReplBatch {
            first_seq: 7,
            timestamp_ns: 42,
            head_hash: [9; 32],
            records: vec![(1, b"abc".to_vec()), (1, Vec::new())],
        };
        let bytes = encode(&b);
        assert_eq!(decode(&bytes), Ok(b));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(decode(&extra), Err(WireError("trailing bytes")));
    }
}
