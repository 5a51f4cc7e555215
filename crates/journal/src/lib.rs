//! kinko's durable command log and snapshot files.
//!
//! The journal is an append-only, checksummed, hash-chained log of opaque records (the engine
//! encodes its commands into the payloads). One thread — the sequencer — owns the writer,
//! [`Journal`], and appends in group commits: one write and one `fdatasync` per batch.
//! [`read_from`] replays it, [`verify`] checks it without changing anything, and
//! [`SnapshotStore`] keeps the engine's state at a journal position so replay can start there.
//! A verified-prefix checkpoint lets [`Journal::open`] verify only what was not verified
//! before, so a start takes the same time at any journal length.
//!
//! # Files
//!
//! A journal directory holds segment files named after the sequence number of their first
//! record, 20 digits zero padded: `00000000000000000001.seg`, `00000000000000052301.seg`, ...
//! Records are numbered from 1 without gaps across segments. A new segment is started when the
//! next batch would not fit in `segment_bytes_max`; a batch is never split across segments, so a
//! batch larger than a segment gets one of its own. Segments are created as `NAME.seg.tmp`,
//! synced and renamed, then the directory is synced: a `.seg` file always has a complete header
//! unless it is damaged later. `*.seg.tmp` files are leftovers and are removed on open.
//!
//! # Segment layout (all integers little endian)
//!
//! ```text
//! segment header, 64 bytes
//!   0  magic "KINKOJNL"          8
//!   8  format version (1)        u32
//!  12  reserved, zero            u32
//!  16  first seq                 u64   equals the number in the file name
//!  24  prev hash                 [32]  hash of the last record of the previous segment
//!                                      (GENESIS_HASH for the first segment)
//!  56  reserved, zero            u32
//!  60  CRC32C of bytes 0..60     u32
//! records, back to back from offset 64; each:
//!   0  payload length            u32   at most PAYLOAD_BYTES_MAX (16 MiB)
//!   4  CRC32C                    u32   over bytes 0..4 and 8..end (everything but itself)
//!   8  seq                       u64
//!  16  timestamp_ns              u64   never older than the previous record's
//!  24  kind                      u16
//!  26  prev hash                 [32]  hash of the previous record
//!  58  payload                   [payload length]
//! zero bytes up to the end of the file (preallocated space)
//! ```
//!
//! A record's hash is BLAKE3 over its bytes from offset 8 to its end, i.e. over seq, timestamp,
//! kind, prev hash and payload. Editing any byte breaks the record's CRC; editing it and
//! recomputing the CRC breaks the chain at the next record (whose prev hash no longer matches).
//! Only the last record can be rewritten undetectably, which is why the head hash
//! ([`Journal::head_hash`]) is the value to publish or sign.
//!
//! # Preallocation and the end of data
//!
//! Segments are zero-filled ahead of the data (1 MiB at creation, then growing in steps of up
//! to 8 MiB, never past `segment_bytes_max`). Most batches therefore overwrite allocated blocks,
//! and their `fdatasync` has no file size to flush. The data ends at the first all-zero record
//! header (a real header is never all zero: seq starts at 1) or at the end of the file;
//! everything after that point must be zero.
//!
//! # A full disk and failed writes
//!
//! Records are written only into space that already exists. The batch that needs more space
//! first grows the segment (zeros written and `fdatasync`ed on their own; on a nearly full
//! disk, just what the batch needs) or starts a new one, and only then writes its records. So
//! a full disk fails before any record reaches the file: the batch is refused with
//! [`JournalError::Full`], and the writer keeps working — the next append tries to grow again
//! and succeeds once space is freed ([`Journal::reserve`] tries without a batch). A failed
//! write of records is cut back (zeros written over them and synced), so the journal ends where
//! it did before the batch. When records were written but could not be made durable or cut
//! back — a failed `fdatasync` above all, after which the page cache cannot be trusted
//! (PostgreSQL's "fsyncgate") — the batch may or may not survive a restart
//! ([`JournalError::OutcomeUnknown`]) and the writer is poisoned: it never writes again, and
//! [`Journal::open`] recovers exactly what is durable. Any other I/O error poisons it too
//! ([`JournalError::NotWritten`]: nothing of the batch was written).
//!
//! # Recovery: torn tail versus corruption
//!
//! [`Journal::open`] verifies every segment after the verified-prefix checkpoint (below; every
//! segment when there is none): header CRCs, record CRCs, contiguous sequence numbers, the hash
//! chain (within and across segments) and non-decreasing timestamps. When
//! bytes in the **last** segment fail to parse or verify, every later byte offset in it is
//! checked for a valid record (sane length, plausible sequence number for the distance, then
//! the CRC). If none follows, the bytes are a torn tail from a crash during a write (no batch
//! is acknowledged before its `fdatasync` returns): the segment is truncated there and synced,
//! a warning is logged, and the tail is reported in [`RecoveryReport::torn_tail`]. A last
//! segment whose own header is torn holds no record and is removed. Anything else — invalid
//! bytes followed by a valid record, invalid bytes in any other segment, a record whose
//! checksum is fine but whose sequence number or prev hash is wrong, a missing segment — is
//! refused with [`JournalError::Corrupt`], [`JournalError::ChainBreak`] or
//! [`JournalError::SeqGap`], naming the segment file, the byte offset and the sequence number.
//! Nothing is ever skipped silently.
//!
//! That rule is deliberately conservative: if a power loss persisted later pages of the final,
//! unacknowledged batch but not an earlier one, the valid records after the hole make recovery
//! refuse to open, and an operator decides.
//!
//! # The verified-prefix checkpoint
//!
//! Verifying every record at every start makes a restart as slow as the journal is long (about
//! 15 s for 100 M records here). The file `verified.ckpt` in the journal directory
//! ([`CHECKPOINT_FILE_NAME`]) names what has been verified already: the **sealed** segments
//! from the first — those with a successor, which are never written again — each with its
//! first sequence number, file length and header prev hash, and the last record of the last of
//! them (byte offset, sequence number, timestamp, hash). Layout, little endian: magic
//! `KINKOCKP`, version u32 ([`CHECKPOINT_FILE_VERSION`]), segment count u32, the last record
//! (offset u64, seq u64, timestamp u64, hash 32), then per segment first seq u64, length u64,
//! prev hash 32, and a CRC32C of everything before it. It is written atomically (temporary
//! file, fsync, rename, fsync of the directory) and only ever names records that are durable:
//!
//! - by [`Journal::open`] after its walk, covering every segment but the last (the segments
//!   newly covered are `fdatasync`ed first);
//! - by the writer whenever it seals a segment, once the successor exists durably: the writer
//!   produced and hashed those records itself and synced each batch before acknowledging it;
//! - by [`verify_and_checkpoint`] (`kinko journal verify`) after a full verification, covering
//!   every segment but the last, so it is safe beside a running writer.
//!
//! The segment still being written is never covered: its torn-tail repair stays exactly as
//! described above, and the part of a start that grows with the data is bounded by
//! `segment_bytes_max` (64 MiB by default, well under a second to verify). A checkpoint at
//! each snapshot would save at most that segment, so there is none.
//!
//! [`Journal::open`] with a checkpoint checks, without reading the records it covers, that each
//! sealed segment is still there under its name with the same length and header, that the
//! segment after them is there, and that the last verified record is still at its offset with
//! its CRC, sequence number, timestamp and hash. Then it walks from the segment after them,
//! whose header must link to that record, exactly as a full walk would.
//!
//! | what happened | what a start does |
//! |---|---|
//! | no checkpoint (a new journal, or one written before checkpoints) | full verification, then writes one |
//! | checkpoint damaged (CRC, magic, version, length, fields that contradict each other) | full verification with a warning, then writes a new one: never trusting less |
//! | a covered segment deleted, cut short, grown, or its header changed | refused ([`JournalError::CheckpointMismatch`]) |
//! | the last verified record changed (even with its CRC recomputed) | refused |
//! | the journal ends before its checkpoint (its newest segments deleted, an older copy restored over it, a checkpoint from another journal) | refused: the journal lost history that was durable and verified, as a snapshot ahead of the journal is refused; an operator who restored older segments on purpose deletes `verified.ckpt` |
//! | damage after the checkpoint | as without one: a torn tail is cut, anything else refused |
//! | **root on the host edits records inside a covered segment** (recomputing CRCs, same length) | **not seen at start.** [`verify`] / `kinko journal verify` read every record and see it, and the signer's witness cosignatures of journal heads show where history forked |
//!
//! The last row is the price of starting in constant time, and the reason the start is not the
//! place where tampering is looked for: root who can edit old segments can as well rewrite the
//! whole chain and the checkpoint with it, which no local check catches; the witness does.
//!
//! # Reading
//!
//! Readers load a segment into memory, parse and CRC-check a chunk of records, hash the chunk
//! on a few scoped threads (each hash depends only on the record's own bytes), then check
//! sequence numbers, the chain and timestamps in order, so the first bad record is the one
//! reported. BLAKE3 is most of the cost of a replay.
//!
//! # Limits and assumptions
//!
//! Payloads are at most [`PAYLOAD_BYTES_MAX`], a batch at most [`BATCH_BYTES_MAX`], and a
//! reader refuses segment files larger than [`SEGMENT_FILE_BYTES_MAX`]. Exactly one
//! [`Journal`] may write a directory at a time; the crate does not lock it (the caller, which
//! owns the data directory, must).
//!
//! # Snapshots
//!
//! See [`SnapshotStore`]: one file per snapshot, `NNNNNNNNNNNNNNNNNNNN.snap` named after the
//! journal seq it covers, a 140-byte header (magic `KINKOSNP`, file version, the engine's
//! format version, seq, timestamp, journal hash, state hash, payload length, payload BLAKE3,
//! header CRC32C) and the payload.

mod checkpoint;
mod error;
mod format;
mod scan;
mod snapshot;
mod writer;

use std::path::{Path, PathBuf};

pub use checkpoint::{CHECKPOINT_FILE_NAME, CHECKPOINT_FILE_VERSION, CHECKPOINT_SEGMENTS_MAX};
pub use error::{Corruption, JournalError};
pub use format::{
    BATCH_BYTES_MAX, PAYLOAD_BYTES_MAX, RECORD_HEADER_LEN, SEGMENT_FILE_BYTES_MAX, SEGMENT_FORMAT_VERSION,
    SEGMENT_HEADER_LEN,
};
pub use snapshot::{
    LatestSnapshot, SnapshotEntry, SnapshotInvalid, SnapshotMeta, SnapshotStore, SNAPSHOT_FILE_VERSION,
    SNAPSHOT_HEADER_LEN, SNAPSHOT_KEEP_DEFAULT, SNAPSHOT_PAYLOAD_BYTES_MAX,
};
pub use writer::{
    Journal, JournalConfig, SEGMENT_BYTES_MAX_DEFAULT, SEGMENT_BYTES_MAX_LIMIT, SEGMENT_BYTES_MIN,
};

use scan::{list_segments, Anchor, Walker};

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: Hash = [0; 32];

/// A record to append: the journal assigns its sequence number and chain hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordIn<'a> {
    /// Sequencer time of the command; must not be older than the previous record's.
    pub timestamp_ns: u64,
    /// Command kind, for the caller's decoding (the journal does not interpret it).
    pub kind: u16,
    /// Encoded command, at most [`PAYLOAD_BYTES_MAX`] bytes.
    pub payload: &'a [u8],
}

/// A verified record read back from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Sequencer time.
    pub timestamp_ns: u64,
    /// Command kind.
    pub kind: u16,
    /// Hash of the previous record ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: Hash,
    /// This record's hash (BLAKE3 over seq, timestamp, kind, prev_hash, payload).
    pub hash: Hash,
    /// Encoded command.
    pub payload: Vec<u8>,
}

/// Bytes at the end of the last segment that are the remains of an interrupted write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Offset where the valid data ends (0: the segment header itself is torn).
    pub offset: u64,
    /// Non-zero bytes from `offset` to the last non-zero byte of the file.
    pub bytes_dropped: u64,
    /// Why the bytes at `offset` are not a valid record.
    pub reason: String,
}

impl TornTail {
    fn warn(&self, what: &str) {
        tracing::warn!(
            segment = %self.segment.display(),
            offset = self.offset,
            bytes_dropped = self.bytes_dropped,
            reason = %self.reason,
            "journal: {what}"
        );
    }
}

/// What [`Journal::open`] found and repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records in the journal.
    pub records: u64,
    /// Records verified by this open: those after the checkpoint, or all of them.
    pub records_verified: u64,
    /// Sequence number of the last record the checkpoint covered (0: verified from the start).
    pub checkpoint_seq: u64,
    /// Segment files in the journal (after repair).
    pub segments: u32,
    /// Sequence number of the last record, 0 if empty.
    pub head_seq: u64,
    /// Hash of the last record, [`GENESIS_HASH`] if empty.
    pub head_hash: Hash,
    /// The torn tail that was cut off, if any.
    pub torn_tail: Option<TornTail>,
}

/// What [`verify`] found. Nothing is repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Valid records in the journal.
    pub records: u64,
    /// Segment files in the directory.
    pub segments: u32,
    /// Sequence number of the last valid record, 0 if empty.
    pub head_seq: u64,
    /// Hash of the last valid record, [`GENESIS_HASH`] if empty.
    pub head_hash: Hash,
    /// A torn tail that [`Journal::open`] would cut off.
    pub torn_tail: Option<TornTail>,
}

/// Verifies a whole journal without changing it: every checksum, the hash chain from
/// [`GENESIS_HASH`], contiguous sequence numbers. A torn tail is reported, not repaired;
/// corruption is an error. A directory without segment files is an empty journal; a missing
/// directory is an I/O error.
pub fn verify(dir: &Path) -> Result<VerifyReport, JournalError> {
    verify_walk(dir).map(verify_report)
}

/// [`verify`], then, if the journal verifies, records what it verified in the journal's
/// checkpoint: every segment but the last (the one a writer may still be appending to), so
/// that the next [`Journal::open`] verifies only from there. Returns the report and the
/// sequence number the checkpoint now covers (`None` when there is nothing to cover or it
/// could not be written — a read-only copy, say; that is logged, not an error). Safe beside a
/// running writer: a segment with a successor is never written again, and whichever of the
/// two checkpoints is renamed into place last is true.
pub fn verify_and_checkpoint(dir: &Path) -> Result<(VerifyReport, Option<u64>), JournalError> {
    let end = verify_walk(dir)?;
    let (_, covered) =
        writer::advance_checkpoint(dir, writer::Sealed::none(), &end, checkpoint::Author::Verify);
    Ok((verify_report(end), covered))
}

fn verify_walk(dir: &Path) -> Result<scan::WalkEnd, JournalError> {
    let segments = list_segments(dir)?;
    let mut walker = Walker::new(segments, 0, Anchor::Genesis);
    while walker.next_record()?.is_some() {}
    Ok(walker.finish())
}

fn verify_report(end: scan::WalkEnd) -> VerifyReport {
    VerifyReport {
        records: end.records,
        segments: end.segments,
        head_seq: end.next_seq - 1,
        head_hash: end.head_hash,
        torn_tail: end.torn,
    }
}

/// Reads verified records with `seq >= from_seq` (0 and 1 both mean from the start).
///
/// Reading starts at the segment holding `from_seq`; that segment's checksummed header anchors
/// the chain, and every record from there on is verified exactly as [`verify`] does (records
/// before `from_seq` in that segment are verified and skipped). The earlier segments are not
/// read: [`Journal::open`] and [`verify`] check the whole chain. A torn tail ends the
/// iteration (with a warning); corruption is yielded as an error, after which the iterator
/// ends. If `from_seq` is past the end of the journal plus one, the iterator yields
/// [`JournalError::BeyondEnd`].
pub fn read_from(dir: &Path, from_seq: u64) -> Result<JournalReader, JournalError> {
    let from_seq = from_seq.max(1);
    let segments = list_segments(dir)?;
    let start = segments
        .iter()
        .rposition(|s| s.first_seq <= from_seq)
        .unwrap_or(0);
    let anchor = if start == 0 {
        Anchor::Genesis
    } else {
        Anchor::FirstSegmentHeader
    };
    Ok(JournalReader {
        walker: Walker::new(segments, start, anchor),
        from_seq,
        finished: false,
    })
}

/// Iterator returned by [`read_from`].
pub struct JournalReader {
    walker: Walker,
    from_seq: u64,
    finished: bool,
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader")
            .field("from_seq", &self.from_seq)
            .field("next_seq", &self.walker.expected_seq())
            .field("finished", &self.finished)
            .finish()
    }
}

impl Iterator for JournalReader {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            match self.walker.next_record() {
                Ok(Some(view)) => {
                    if view.seq >= self.from_seq {
                        return Some(Ok(view.to_record()));
                    }
                }
                Ok(None) => {
                    self.finished = true;
                    if let Some(torn) = self.walker.torn() {
                        torn.warn("reading stops at a torn tail");
                    }
                    let next_seq = self.walker.expected_seq();
                    if self.from_seq > next_seq {
                        return Some(Err(JournalError::BeyondEnd {
                            from_seq: self.from_seq,
                            next_seq,
                        }));
                    }
                    return None;
                }
                Err(error) => {
                    self.finished = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

impl std::iter::FusedIterator for JournalReader {}
