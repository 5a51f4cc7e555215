//! The verified-prefix checkpoint: which sealed segments a full verification (or the writer
//! that produced them) has already checked, so that [`crate::Journal::open`] verifies only the
//! rest. The design, and what a start does and does not see, is in the crate documentation.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::format::{
    record_crc, record_hash, segment_file_name, RecordHeader, SegmentHeader, PAYLOAD_BYTES_MAX,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::scan::SegmentFile;
use crate::writer::sync_dir;
use crate::Hash;

/// Name of the checkpoint file in the journal directory.
pub const CHECKPOINT_FILE_NAME: &str = "verified.ckpt";
/// Version of the checkpoint file layout written by this code.
pub const CHECKPOINT_FILE_VERSION: u32 = 1;
/// Most sealed segments a checkpoint names (a reader refuses larger files as damaged). At the
/// default 64 MiB per segment this is 64 TiB of journal.
pub const CHECKPOINT_SEGMENTS_MAX: usize = 1 << 20;

const MAGIC: [u8; 8] = *b"KINKOCKP";
/// magic, version, segment count, then the last record: offset, seq, timestamp, hash.
const FIXED_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 32;
/// first seq, file length, header prev hash.
const SEGMENT_ENTRY_LEN: usize = 8 + 8 + 32;
const CRC_LEN: usize = 4;

/// A sealed segment as it was when it was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SealedSegment {
    /// First sequence number (also the file name).
    pub first_seq: u64,
    /// File length, preallocated zeros included (a sealed segment is never written again).
    pub len: u64,
    /// The prev hash in its header.
    pub prev_hash: Hash,
}

/// The last record of the last sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LastRecord {
    /// Byte offset of the record in its segment.
    pub offset: u64,
    pub seq: u64,
    pub timestamp_ns: u64,
    pub hash: Hash,
}

/// Everything up to and including `last` is verified: the segments in `sealed`, whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Sealed segments from the first, in order; never empty.
    pub sealed: Vec<SealedSegment>,
    /// The last record of the last of them.
    pub last: LastRecord,
}

/// Why a checkpoint file cannot be used. Falls back to a full verification.
#[derive(Debug)]
pub(crate) enum Unusable {
    /// There is none (a new journal, or one written before checkpoints existed).
    Missing,
    /// It is there but does not decode, or contradicts itself.
    Damaged(String),
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED_LEN + self.sealed.len() * SEGMENT_ENTRY_LEN + CRC_LEN);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&CHECKPOINT_FILE_VERSION.to_le_bytes());
        b.extend_from_slice(&(self.sealed.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.last.offset.to_le_bytes());
        b.extend_from_slice(&self.last.seq.to_le_bytes());
        b.extend_from_slice(&self.last.timestamp_ns.to_le_bytes());
        b.extend_from_slice(&self.last.hash);
        for s in &self.sealed {
            b.extend_from_slice(&s.first_seq.to_le_bytes());
            b.extend_from_slice(&s.len.to_le_bytes());
            b.extend_from_slice(&s.prev_hash);
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let body_len = bytes
            .len()
            .checked_sub(CRC_LEN)
            .filter(|n| *n >= FIXED_LEN)
            .ok_or_else(|| format!("{} bytes, shorter than a checkpoint", bytes.len()))?;
        let (body, crc) = bytes.split_at(body_len);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(format!(
                "crc mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let mut r = Cursor(body);
        if r.take::<8>() != MAGIC {
            return Err("bad magic".into());
        }
        let version = u32::from_le_bytes(r.take());
        if version != CHECKPOINT_FILE_VERSION {
            return Err(format!("unsupported checkpoint version {version}"));
        }
        let count = u32::from_le_bytes(r.take()) as usize;
        if count == 0 || count > CHECKPOINT_SEGMENTS_MAX || r.0.len() != 56 + count * SEGMENT_ENTRY_LEN {
            return Err(format!("{count} segments do not match the file's length"));
        }
        let last = LastRecord {
            offset: u64::from_le_bytes(r.take()),
            seq: u64::from_le_bytes(r.take()),
            timestamp_ns: u64::from_le_bytes(r.take()),
            hash: r.take(),
        };
        let sealed: Vec<SealedSegment> = (0..count)
            .map(|_| SealedSegment {
                first_seq: u64::from_le_bytes(r.take()),
                len: u64::from_le_bytes(r.take()),
                prev_hash: r.take(),
            })
            .collect();
        let checkpoint = Checkpoint { sealed, last };
        checkpoint.check_consistent()?;
        Ok(checkpoint)
    }

    /// What must hold between the fields of any checkpoint this code writes.
    fn check_consistent(&self) -> Result<(), String> {
        let first = self.sealed.first().ok_or("no sealed segment")?;
        if first.first_seq != 1 || first.prev_hash != crate::GENESIS_HASH {
            return Err("the first sealed segment does not start the journal".into());
        }
        if self.sealed.windows(2).any(|w| w[1].first_seq <= w[0].first_seq) {
            return Err("sealed segments out of order".into());
        }
        let last_segment = self.sealed[self.sealed.len() - 1];
        let record_fits = self.last.offset >= SEGMENT_HEADER_LEN as u64
            && self.last.offset.saturating_add(RECORD_HEADER_LEN as u64) <= last_segment.len;
        if self.last.seq < last_segment.first_seq || !record_fits {
            return Err("the last record lies outside the last sealed segment".into());
        }
        Ok(())
    }

    /// The sequence number of the first record after the checkpoint.
    pub fn next_seq(&self) -> u64 {
        self.last.seq + 1
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// The next `N` bytes; the caller has checked the length.
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_first_chunk::<N>().expect("length checked before");
        self.0 = rest;
        *head
    }
}

/// Reads the checkpoint of `dir`.
pub(crate) fn read(dir: &Path) -> Result<Checkpoint, Unusable> {
    let path = dir.join(CHECKPOINT_FILE_NAME);
    let limit = (FIXED_LEN + CHECKPOINT_SEGMENTS_MAX * SEGMENT_ENTRY_LEN + CRC_LEN) as u64;
    let mut bytes = Vec::new();
    match File::open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Damaged(format!("cannot open: {e}"))),
        Ok(file) => {
            if let Err(e) = file.take(limit + 1).read_to_end(&mut bytes) {
                return Err(Unusable::Damaged(format!("cannot read: {e}")));
            }
        }
    }
    Checkpoint::decode(&bytes).map_err(Unusable::Damaged)
}

/// Who writes a checkpoint: each writer has a temporary file of its own, so that a `verify`
/// beside a running writer never mixes its bytes with the writer's (either rename wins, and
/// either checkpoint is true).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Author {
    Writer,
    Verify,
}

/// Writes `checkpoint` atomically: a temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write(dir: &Path, checkpoint: &Checkpoint, author: Author) -> Result<(), JournalError> {
    // The names of the segments it covers and of their successor first, so that a crash
    // never leaves a durable checkpoint naming a segment whose name was not durable (a
    // `verify` may see a successor the writer has renamed but not yet synced the directory for).
    sync_dir(dir)?;
    let path = dir.join(CHECKPOINT_FILE_NAME);
    let tmp = match author {
        Author::Writer => dir.join("verified.ckpt.tmp"),
        Author::Verify => dir.join(format!("verified.verify-{}.ckpt.tmp", std::process::id())),
    };
    let written = File::create(&tmp).and_then(|file| {
        file.write_all_at(&checkpoint.encode(), 0)?;
        file.sync_all()
    });
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(JournalError::Io { path: tmp, source });
    }
    fs::rename(&tmp, &path).map_err(JournalError::io(&path))?;
    sync_dir(dir)
}

/// Checks the journal against a checkpoint without reading the records it covers: every
/// sealed segment is there under its name with its length and header, the segment after the
/// last one is there (the writer created it before it wrote the checkpoint; the walk then
/// checks that its header links to the last verified record), and that record is still there
/// with its hash. Returns the index in `segments` of the first segment
/// after the checkpoint.
///
/// A journal that disagrees has lost or changed records that were durable and verified (a
/// checkpoint is written only for those), so this is refused, never passed over.
pub(crate) fn check(dir: &Path, segments: &[SegmentFile], cp: &Checkpoint) -> Result<usize, JournalError> {
    let mismatch = |path: PathBuf, reason: String| JournalError::CheckpointMismatch { path, reason };
    let next = cp.sealed.len();
    for (i, sealed) in cp.sealed.iter().enumerate() {
        let want = dir.join(segment_file_name(sealed.first_seq));
        let Some(found) = segments.get(i).filter(|s| s.first_seq == sealed.first_seq) else {
            return Err(mismatch(want, "a verified sealed segment is missing".into()));
        };
        let (len, header) = read_header(&found.path)?;
        if len != sealed.len {
            return Err(mismatch(
                found.path.clone(),
                format!("{len} bytes, but {} when it was verified", sealed.len),
            ));
        }
        if header != Some((sealed.first_seq, sealed.prev_hash)) {
            return Err(mismatch(
                found.path.clone(),
                "its header changed since it was verified".into(),
            ));
        }
    }
    let after = dir.join(segment_file_name(cp.next_seq()));
    let Some(following) = segments.get(next).filter(|s| s.first_seq == cp.next_seq()) else {
        return Err(mismatch(
            after,
            "the segment after the verified ones is missing: the journal ends before its checkpoint".into(),
        ));
    };
    // Its header is the walk's to check: it must link to the last verified record like any
    // segment header, and if it is the last segment a torn header is repaired as always.
    let _ = following;
    check_last_record(&segments[next - 1].path, &cp.last)?;
    Ok(next)
}

/// A segment's header as it is chained: first seq, prev hash.
type HeaderLink = (u64, Hash);

/// The file's length and its header's link, `None` if the header does not decode.
fn read_header(path: &Path) -> Result<(u64, Option<HeaderLink>), JournalError> {
    let file = File::open(path).map_err(JournalError::io(path))?;
    let len = file.metadata().map_err(JournalError::io(path))?.len();
    let mut bytes = [0u8; SEGMENT_HEADER_LEN];
    let header = file
        .read_exact_at(&mut bytes, 0)
        .ok()
        .and_then(|()| SegmentHeader::decode(&bytes).ok())
        .map(|h| (h.first_seq, h.prev_hash));
    Ok((len, header))
}

/// Reads the one record `last` names and checks its CRC, sequence number, timestamp and hash.
fn check_last_record(path: &Path, last: &LastRecord) -> Result<(), JournalError> {
    let file = File::open(path).map_err(JournalError::io(path))?;
    let mut header = [0u8; RECORD_HEADER_LEN];
    let refuse = |reason: &str| JournalError::CheckpointMismatch {
        path: path.to_path_buf(),
        reason: format!(
            "the last verified record (seq {}) at offset {}: {reason}",
            last.seq, last.offset
        ),
    };
    file.read_exact_at(&mut header, last.offset)
        .map_err(|_| refuse("cannot be read"))?;
    let h = RecordHeader::decode(&header);
    let len = h.payload_len as usize;
    if len > PAYLOAD_BYTES_MAX {
        return Err(refuse("its length is not sane"));
    }
    let mut record = vec![0u8; RECORD_HEADER_LEN + len];
    file.read_exact_at(&mut record, last.offset)
        .map_err(|_| refuse("is truncated"))?;
    if record_crc(&record) != h.crc {
        return Err(refuse("its checksum does not match"));
    }
    if h.seq != last.seq || h.timestamp_ns != last.timestamp_ns || record_hash(&record) != last.hash {
        return Err(refuse("it is not the record that was verified"));
    }
    Ok(())
}
