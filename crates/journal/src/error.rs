//! The crate's error type.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::Hash;

/// Everything that can go wrong in the journal and the snapshot store.
///
/// Errors about file content always name the file, the byte offset and the sequence number
/// involved, so an operator can find the damaged spot with a hex editor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// An operating-system call failed.
    #[error("journal i/o error on {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Bytes that do not form a valid segment header or record, outside a repairable torn tail.
    #[error("journal corrupt in segment {} at offset {offset} (record seq {seq}): {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset, inside the segment file, of the header or record that failed.
        offset: u64,
        /// The sequence number expected at that offset (the last good one plus one).
        seq: u64,
        /// What is wrong with the bytes.
        reason: Corruption,
    },

    /// A record (or segment header) whose checksum is fine but whose `prev_hash` is not the hash
    /// of the record before it: the log was edited and its checksum recomputed, or records were
    /// spliced together from different logs.
    #[error(
        "journal hash chain broken in segment {} at offset {offset} (record seq {seq}): \
         prev_hash {} is not the hash {} of record seq {}",
        path.display(), hex::encode(found), hex::encode(expected), seq.saturating_sub(1)
    )]
    ChainBreak {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record (0 for a segment header).
        offset: u64,
        /// Sequence number of the record whose `prev_hash` is wrong.
        seq: u64,
        /// Hash of the previous record, as computed.
        expected: Hash,
        /// `prev_hash` as stored.
        found: Hash,
    },

    /// A checksummed record or segment header with a sequence number other than the next one:
    /// a missing segment, or records removed or duplicated.
    #[error(
        "journal sequence gap in segment {} at offset {offset} (record seq {expected} expected): found seq {found}",
        path.display()
    )]
    SeqGap {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record (0 for a segment header).
        offset: u64,
        /// The sequence number that should come next.
        expected: u64,
        /// The sequence number stored.
        found: u64,
    },

    /// The journal no longer matches its verified-prefix checkpoint: a sealed segment that was
    /// verified is missing, has another length or header, or the last verified record is gone
    /// or changed. A checkpoint names only records that were durable when it was written, so
    /// the journal lost or changed acknowledged history; the start is refused (as a snapshot
    /// ahead of the journal is). `kinko journal verify` shows the state of the segments; an
    /// operator who restored older segments on purpose removes the checkpoint file, after
    /// which the next start verifies everything.
    #[error("journal does not match its verified-prefix checkpoint at {}: {reason}", path.display())]
    CheckpointMismatch {
        /// The segment file concerned.
        path: PathBuf,
        /// What differs.
        reason: String,
    },

    /// A file in the journal directory whose name ends in `.seg` but is not a segment name.
    #[error("unexpected file in journal directory: {}", path.display())]
    UnexpectedFile {
        /// The file.
        path: PathBuf,
    },

    /// An earlier append failed with an I/O error; the writer refuses all further work. Nothing
    /// of this call's batch was written. Restart and let [`crate::Journal::open`] recover
    /// exactly what is durable.
    #[error("journal is poisoned by an earlier i/o error; reopen it to recover")]
    Poisoned,

    /// The disk is full (`ENOSPC`, `EDQUOT`): the batch could not be given room, and nothing of
    /// it was written (or what was written has been cut back and synced). It is not in the
    /// journal, now or after a restart. The writer still works: the next append (or
    /// [`crate::Journal::reserve`]) tries again and succeeds once space is freed.
    #[error("journal disk full on {}: {source}; nothing of the batch was written", path.display())]
    Full {
        /// The file or directory that could not grow.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An I/O error other than a full disk before any record of the batch reached the file (or
    /// after its records were cut back and synced): the batch is not in the journal, now or
    /// after a restart. The writer is poisoned: a failed `fsync` leaves the page cache
    /// untrustworthy, so nothing is written again until the journal is reopened.
    #[error("journal i/o error on {}: {source}; nothing of the batch was written; reopen the journal", path.display())]
    NotWritten {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The batch's records were written to the file but could not be made durable (a failed
    /// `fdatasync`) nor cut back: after a restart they may or may not be in the journal. The
    /// writer is poisoned.
    #[error("journal i/o error on {}: {source}; the batch may or may not be durable; reopen the journal", path.display())]
    OutcomeUnknown {
        /// The segment file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A record's payload is larger than [`crate::PAYLOAD_BYTES_MAX`]. Nothing was written.
    #[error("record {index} of the batch has a {len}-byte payload; the limit is {max} bytes")]
    PayloadTooLarge {
        /// Index of the record in the batch.
        index: usize,
        /// Its payload length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The encoded batch is larger than [`crate::BATCH_BYTES_MAX`]. Nothing was written.
    #[error("batch encodes to more than {max} bytes")]
    BatchTooLarge {
        /// The limit.
        max: usize,
    },

    /// A record's timestamp is older than the one before it. Nothing was written.
    #[error("record {index} of the batch has timestamp {given} ns, older than the previous {previous} ns")]
    TimestampRegression {
        /// Index of the record in the batch.
        index: usize,
        /// Timestamp of the record before it.
        previous: u64,
        /// The offending timestamp.
        given: u64,
    },

    /// [`crate::read_from`] was asked for records the journal does not have yet.
    #[error("read_from seq {from_seq} is beyond the end of the journal (next seq {next_seq})")]
    BeyondEnd {
        /// The requested first sequence number.
        from_seq: u64,
        /// The sequence number the journal would give its next record.
        next_seq: u64,
    },

    /// A [`crate::JournalConfig`] value outside its allowed range.
    #[error("invalid journal config: {0}")]
    Config(String),

    /// A snapshot could not be written or read.
    #[error("snapshot {}: {reason}", path.display())]
    Snapshot {
        /// The snapshot file or directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl JournalError {
    /// Whether an error of a failed append leaves its batch possibly durable (only
    /// [`JournalError::OutcomeUnknown`]); every other error means nothing of it was written.
    pub fn batch_may_be_durable(&self) -> bool {
        matches!(self, JournalError::OutcomeUnknown { .. })
    }

    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
        move |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why bytes in a segment were rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The file is shorter than a segment header.
    SegmentHeaderTruncated {
        /// Bytes present.
        len: u64,
    },
    /// The segment header does not start with the magic bytes.
    BadMagic,
    /// The segment header names a format version this code does not read.
    UnsupportedVersion(u32),
    /// The segment header's CRC32C does not match.
    SegmentHeaderCrc {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// The first sequence number in the header differs from the one in the file name.
    NameMismatch {
        /// Sequence number from the file name.
        name_seq: u64,
        /// Sequence number from the header.
        header_seq: u64,
    },
    /// A record header claims a payload larger than the limit.
    PayloadTooLarge {
        /// Claimed length.
        len: u64,
    },
    /// A record extends past the end of the file.
    Truncated {
        /// Bytes the record needs from its offset.
        needed: u64,
        /// Bytes left in the file from its offset.
        available: u64,
    },
    /// A record's CRC32C does not match.
    RecordCrc {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// Non-zero bytes after the zeroed header that marks the end of the data.
    GarbageAfterEnd,
    /// A record's timestamp is older than the one before it.
    TimestampRegression {
        /// Timestamp of the previous record.
        previous: u64,
        /// Timestamp stored.
        found: u64,
    },
    /// The segment file is larger than [`crate::SEGMENT_FILE_BYTES_MAX`].
    SegmentTooLarge {
        /// Its length.
        len: u64,
    },
    /// Invalid bytes in the last segment that are followed by a valid record, so they cannot be
    /// a torn write at the tail.
    FollowedByValidRecord {
        /// What is wrong at the reported offset.
        cause: Box<Corruption>,
        /// Sequence number of the valid record found later.
        next_seq: u64,
        /// Its byte offset.
        next_offset: u64,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::SegmentHeaderTruncated { len } => {
                write!(f, "segment header truncated ({len} bytes in file)")
            }
            Corruption::BadMagic => f.write_str("bad segment magic"),
            Corruption::UnsupportedVersion(v) => write!(f, "unsupported segment format version {v}"),
            Corruption::SegmentHeaderCrc { stored, computed } => write!(
                f,
                "segment header crc mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Corruption::NameMismatch {
                name_seq,
                header_seq,
            } => write!(
                f,
                "segment header says first seq {header_seq} but the file name says {name_seq}"
            ),
            Corruption::PayloadTooLarge { len } => {
                write!(f, "record payload length {len} exceeds the limit")
            }
            Corruption::Truncated { needed, available } => write!(
                f,
                "record truncated ({needed} bytes needed, {available} left in file)"
            ),
            Corruption::RecordCrc { stored, computed } => write!(
                f,
                "crc mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Corruption::GarbageAfterEnd => f.write_str("non-zero bytes after the end of data"),
            Corruption::TimestampRegression { previous, found } => write!(
                f,
                "timestamp {found} ns is older than the previous record's {previous} ns"
            ),
            Corruption::SegmentTooLarge { len } => {
                write!(f, "segment file is {len} bytes, larger than the limit")
            }
            Corruption::FollowedByValidRecord {
                cause,
                next_seq,
                next_offset,
            } => write!(
                f,
                "{cause}; a valid record (seq {next_seq}) follows at offset {next_offset}, so this is not a torn tail"
            ),
        }
    }
}
