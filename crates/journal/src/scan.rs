//! Verified, in-order walk over the segments of a journal directory.
//!
//! [`Walker`] is the one place that decides whether bytes are a valid record, the clean end of
//! the data, a torn tail or corruption. The writer's recovery, [`crate::verify`] and
//! [`crate::read_from`] all use it, so they cannot disagree.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::checkpoint::{LastRecord, SealedSegment};
use crate::error::{Corruption, JournalError};
use crate::format::{
    all_zero, nonzero_end, parse_segment_file_name, record_crc, record_hash, u64_in, RecordHeader,
    SegmentHeader, PAYLOAD_BYTES_MAX, RECORD_HEADER_LEN, SEGMENT_FILE_BYTES_MAX, SEGMENT_HEADER_LEN,
};
use crate::{Hash, Record, TornTail, GENESIS_HASH};

/// A segment file found in the directory.
#[derive(Clone, Debug)]
pub(crate) struct SegmentFile {
    pub first_seq: u64,
    pub path: PathBuf,
}

/// Lists the segment files of `dir`, sorted by first sequence number. Files ending in `.seg`
/// that are not well-formed segment names are refused rather than ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(JournalError::io(dir))? {
        let entry = entry.map_err(JournalError::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !name.ends_with(".seg") {
            continue;
        }
        let path = entry.path();
        match parse_segment_file_name(name) {
            Some(first_seq) => segments.push(SegmentFile { first_seq, path }),
            None => return Err(JournalError::UnexpectedFile { path }),
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Where the walk starts in the chain.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Anchor {
    /// The first segment must start at seq 1 with [`GENESIS_HASH`].
    Genesis,
    /// Trust the first segment's header (used to read from the middle of the journal).
    FirstSegmentHeader,
}

/// A verified record, borrowing its payload from the segment buffer.
#[derive(Debug)]
pub(crate) struct RecordView<'a> {
    pub seq: u64,
    pub timestamp_ns: u64,
    pub kind: u16,
    pub prev_hash: Hash,
    pub hash: Hash,
    pub payload: &'a [u8],
}

impl RecordView<'_> {
    pub fn to_record(&self) -> Record {
        Record {
            seq: self.seq,
            timestamp_ns: self.timestamp_ns,
            kind: self.kind,
            prev_hash: self.prev_hash,
            hash: self.hash,
            payload: self.payload.to_vec(),
        }
    }
}

/// The state of the last segment when the walk ended, as the writer needs it.
#[derive(Clone, Debug)]
pub(crate) struct SegmentEnd {
    pub path: PathBuf,
    /// Offset just past the last valid record (where the next one goes).
    pub data_end: u64,
}

/// Summary of a finished walk.
#[derive(Clone, Debug)]
pub(crate) struct WalkEnd {
    /// Records seen (from the anchor on, including those skipped by a reader).
    pub records: u64,
    /// Segment files in the directory.
    pub segments: u32,
    /// The sequence number the next record would get.
    pub next_seq: u64,
    pub head_hash: Hash,
    pub last_timestamp_ns: u64,
    /// A torn tail found in the last segment (not repaired by the walk).
    pub torn: Option<TornTail>,
    /// The last segment with a valid header, where the data ends in it.
    pub last_segment: Option<SegmentEnd>,
    /// Every segment the walk loaded, in order, with its last record (what a checkpoint
    /// records of a segment once it is sealed).
    pub walked: Vec<WalkedSegment>,
}

/// A segment the walk loaded and verified (as far as the walk went).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalkedSegment {
    pub segment: SealedSegment,
    /// Its last valid record, if it has one.
    pub last: Option<LastRecord>,
}

/// What one step over the bytes at a record offset found. Chain checks are the caller's.
enum Step {
    Record { end: usize, header: RecordHeader },
    End,
    Invalid(Corruption),
}

fn step(buf: &[u8], pos: usize) -> Step {
    let rest = buf.get(pos..).unwrap_or_default();
    let Some(h) = rest.first_chunk::<RECORD_HEADER_LEN>() else {
        return if all_zero(rest) {
            Step::End
        } else {
            Step::Invalid(Corruption::Truncated {
                needed: RECORD_HEADER_LEN as u64,
                available: rest.len() as u64,
            })
        };
    };
    let header = RecordHeader::decode(h);
    // A real record has seq >= 1, so only a header with seq 0 can be the all-zero end marker.
    if header.seq == 0 && all_zero(h) {
        // The end of the data: everything after must be zero too (preallocated space).
        return if all_zero(rest) {
            Step::End
        } else {
            Step::Invalid(Corruption::GarbageAfterEnd)
        };
    }
    let len = header.payload_len as usize;
    if len > PAYLOAD_BYTES_MAX {
        return Step::Invalid(Corruption::PayloadTooLarge { len: len as u64 });
    }
    let needed = RECORD_HEADER_LEN + len;
    let Some(record) = rest.get(..needed) else {
        return Step::Invalid(Corruption::Truncated {
            needed: needed as u64,
            available: rest.len() as u64,
        });
    };
    let computed = record_crc(record);
    if computed != header.crc {
        return Step::Invalid(Corruption::RecordCrc {
            stored: header.crc,
            computed,
        });
    }
    Step::Record {
        end: pos + needed,
        header,
    }
}

/// Looks for a record with a valid CRC and a sequence number of at least `expected_seq` at any
/// byte offset after `from`. Used to tell a torn tail (nothing valid follows) from corruption.
///
/// Cheap filters first: the sequence number must be plausible for the distance from `from`
/// (every record takes at least a header's worth of bytes), the length sane and in the file;
/// only then is the CRC computed.
pub(crate) fn find_valid_record_after(buf: &[u8], from: usize, expected_seq: u64) -> Option<(usize, u64)> {
    let last_start = buf.len().checked_sub(RECORD_HEADER_LEN)?;
    let mut offset = from.checked_add(1)?;
    while offset <= last_start {
        let seq_ok = u64_in(buf, offset + 8).is_some_and(|seq| {
            let max_seq = expected_seq.saturating_add(((offset - from) / RECORD_HEADER_LEN) as u64);
            seq >= expected_seq && seq <= max_seq
        });
        if seq_ok {
            if let Step::Record { header, .. } = step(buf, offset) {
                return Some((offset, header.seq));
            }
        }
        offset += 1;
    }
    None
}

/// Rejects a damaged spot at `offset` in the last segment unless nothing valid follows it.
/// Returns the torn tail to report when it is one.
fn torn_or_corrupt(
    path: &Path,
    buf: &[u8],
    offset: usize,
    expected_seq: u64,
    cause: Corruption,
) -> Result<TornTail, JournalError> {
    if let Some((next_offset, next_seq)) = find_valid_record_after(buf, offset, expected_seq) {
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            seq: expected_seq,
            reason: Corruption::FollowedByValidRecord {
                cause: Box::new(cause),
                next_seq,
                next_offset: next_offset as u64,
            },
        });
    }
    let garbage_end = offset + nonzero_end(buf.get(offset..).unwrap_or_default());
    Ok(TornTail {
        segment: path.to_path_buf(),
        offset: offset as u64,
        bytes_dropped: (garbage_end - offset) as u64,
        reason: cause.to_string(),
    })
}

/// Walks the records of a journal directory in order, verifying as it goes.
pub(crate) struct Walker {
    segments: Vec<SegmentFile>,
    /// Index of the segment loaded in `buf` (valid while `loaded`).
    index: usize,
    loaded: bool,
    done: bool,
    anchor: Anchor,
    buf: Vec<u8>,
    pos: usize,
    expected_seq: u64,
    head: Hash,
    last_timestamp_ns: u64,
    records: u64,
    torn: Option<TornTail>,
    last_segment: Option<SegmentEnd>,
    segment_count: u32,
    walked: Vec<WalkedSegment>,
    /// Records parsed ahead of `pos`, and their hashes.
    chunk: Vec<Parsed>,
    hashes: Vec<Hash>,
    /// Next entry of `chunk` to check and return.
    chunk_next: usize,
}

impl Walker {
    /// Walks all of `segments` (as listed by [`list_segments`]) starting at `start`.
    pub fn new(segments: Vec<SegmentFile>, start: usize, anchor: Anchor) -> Walker {
        let segment_count = u32::try_from(segments.len()).unwrap_or(u32::MAX);
        Walker {
            segments,
            index: start,
            loaded: false,
            done: false,
            anchor,
            buf: Vec::new(),
            pos: 0,
            expected_seq: 1,
            head: GENESIS_HASH,
            last_timestamp_ns: 0,
            records: 0,
            torn: None,
            last_segment: None,
            segment_count,
            walked: Vec::new(),
            chunk: Vec::new(),
            hashes: Vec::new(),
            chunk_next: 0,
        }
    }

    /// Walks `segments` from `start`, whose first record must be `next_seq` and link to
    /// `head`: the records before it were verified earlier (a checkpoint).
    pub fn resume(
        segments: Vec<SegmentFile>,
        start: usize,
        next_seq: u64,
        head: Hash,
        last_timestamp_ns: u64,
    ) -> Walker {
        let mut walker = Walker::new(segments, start, Anchor::Genesis);
        walker.expected_seq = next_seq;
        walker.head = head;
        walker.last_timestamp_ns = last_timestamp_ns;
        walker
    }

    /// The sequence number the next valid record must carry.
    pub fn expected_seq(&self) -> u64 {
        self.expected_seq
    }

    /// The torn tail that ended the walk, if any.
    pub fn torn(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    pub fn finish(self) -> WalkEnd {
        WalkEnd {
            records: self.records,
            segments: self.segment_count,
            next_seq: self.expected_seq,
            head_hash: self.head,
            last_timestamp_ns: self.last_timestamp_ns,
            torn: self.torn,
            last_segment: self.last_segment,
            walked: self.walked,
        }
    }

    fn is_last(&self) -> bool {
        self.index + 1 >= self.segments.len()
    }

    fn corrupt(&self, path: &Path, offset: usize, reason: Corruption) -> JournalError {
        JournalError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            seq: self.expected_seq,
            reason,
        }
    }

    /// Loads segment `self.index` and checks its header. Returns false when the walk ended
    /// because the (last) segment's header is torn.
    fn load(&mut self) -> Result<bool, JournalError> {
        let Some(segment) = self.segments.get(self.index).cloned() else {
            return Ok(false);
        };
        let path = segment.path.as_path();
        let mut file = File::open(path).map_err(JournalError::io(path))?;
        let len = file.metadata().map_err(JournalError::io(path))?.len();
        if len > SEGMENT_FILE_BYTES_MAX {
            return Err(self.corrupt(path, 0, Corruption::SegmentTooLarge { len }));
        }
        self.buf.clear();
        self.buf.reserve(len as usize);
        file.read_to_end(&mut self.buf).map_err(JournalError::io(path))?;

        let first_segment = self.records == 0 && self.last_segment.is_none();
        if first_segment {
            if let Anchor::FirstSegmentHeader = self.anchor {
                // Trust the header's position in the chain (it is checksummed, and the name
                // must still agree with it below).
                self.expected_seq = segment.first_seq;
                if let Ok(header) = SegmentHeader::decode(&self.buf) {
                    self.head = header.prev_hash;
                }
            }
        }
        let header = match SegmentHeader::decode(&self.buf) {
            Ok(header) => header,
            Err(cause) => {
                if segment.first_seq != self.expected_seq {
                    // A damaged header on a file that is also misplaced: report the gap.
                    return Err(JournalError::SeqGap {
                        path: segment.path,
                        offset: 0,
                        expected: self.expected_seq,
                        found: segment.first_seq,
                    });
                }
                if !self.is_last() {
                    return Err(self.corrupt(path, 0, cause));
                }
                let torn = torn_or_corrupt(path, &self.buf, 0, self.expected_seq, cause)?;
                self.torn = Some(torn);
                self.done = true;
                return Ok(false);
            }
        };
        if header.first_seq != segment.first_seq {
            return Err(self.corrupt(
                path,
                0,
                Corruption::NameMismatch {
                    name_seq: segment.first_seq,
                    header_seq: header.first_seq,
                },
            ));
        }
        if header.first_seq != self.expected_seq {
            return Err(JournalError::SeqGap {
                path: segment.path,
                offset: 0,
                expected: self.expected_seq,
                found: header.first_seq,
            });
        }
        if header.prev_hash != self.head {
            return Err(JournalError::ChainBreak {
                path: segment.path,
                offset: 0,
                seq: self.expected_seq,
                expected: self.head,
                found: header.prev_hash,
            });
        }
        self.pos = SEGMENT_HEADER_LEN;
        self.chunk.clear();
        self.chunk_next = 0;
        self.loaded = true;
        self.last_segment = Some(SegmentEnd {
            path: segment.path,
            data_end: SEGMENT_HEADER_LEN as u64,
        });
        self.walked.push(WalkedSegment {
            segment: SealedSegment {
                first_seq: header.first_seq,
                len,
                prev_hash: header.prev_hash,
            },
            last: None,
        });
        Ok(true)
    }

    /// The next verified record, or `None` at the end of the journal (clean or torn; see
    /// [`Walker::finish`]).
    ///
    /// Records are parsed and CRC-checked a chunk at a time, their hashes computed for the whole
    /// chunk (in parallel: each hash depends only on the record's own bytes), and the sequence,
    /// chain and timestamp checks are then made record by record in order, so errors are
    /// reported at the first bad record exactly as a one-by-one walk would.
    pub fn next_record(&mut self) -> Result<Option<RecordView<'_>>, JournalError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if !self.loaded && (self.index >= self.segments.len() || !self.load()?) {
                self.done = true;
                return Ok(None);
            }
            if let Some(parsed) = self.chunk.get(self.chunk_next) {
                let Parsed {
                    offset: pos,
                    end,
                    header,
                } = *parsed;
                let hash = self.hashes[self.chunk_next];
                let path = &self.segments[self.index].path;
                if header.seq != self.expected_seq {
                    return Err(JournalError::SeqGap {
                        path: path.clone(),
                        offset: pos as u64,
                        expected: self.expected_seq,
                        found: header.seq,
                    });
                }
                if header.prev_hash != self.head {
                    return Err(JournalError::ChainBreak {
                        path: path.clone(),
                        offset: pos as u64,
                        seq: header.seq,
                        expected: self.head,
                        found: header.prev_hash,
                    });
                }
                if header.timestamp_ns < self.last_timestamp_ns {
                    let reason = Corruption::TimestampRegression {
                        previous: self.last_timestamp_ns,
                        found: header.timestamp_ns,
                    };
                    return Err(self.corrupt(path, pos, reason));
                }
                self.chunk_next += 1;
                self.head = hash;
                self.expected_seq += 1;
                self.last_timestamp_ns = header.timestamp_ns;
                self.records += 1;
                self.pos = end;
                if let Some(last) = self.last_segment.as_mut() {
                    last.data_end = end as u64;
                }
                if let Some(walked) = self.walked.last_mut() {
                    walked.last = Some(LastRecord {
                        offset: pos as u64,
                        seq: header.seq,
                        timestamp_ns: header.timestamp_ns,
                        hash,
                    });
                }
                return Ok(Some(RecordView {
                    seq: header.seq,
                    timestamp_ns: header.timestamp_ns,
                    kind: header.kind,
                    prev_hash: header.prev_hash,
                    hash,
                    payload: &self.buf[pos + RECORD_HEADER_LEN..end],
                }));
            }
            if self.parse_chunk() {
                continue;
            }
            let pos = self.pos;
            match step(&self.buf, pos) {
                Step::Record { .. } => unreachable!("parse_chunk stops only before a non-record"),
                Step::End => {
                    self.loaded = false;
                    if self.is_last() {
                        self.done = true;
                    } else {
                        self.index += 1;
                    }
                }
                Step::Invalid(cause) => {
                    let path = self.segments[self.index].path.clone();
                    if !self.is_last() {
                        return Err(self.corrupt(&path, pos, cause));
                    }
                    let torn = torn_or_corrupt(&path, &self.buf, pos, self.expected_seq, cause)?;
                    self.torn = Some(torn);
                    self.done = true;
                }
            }
        }
    }

    /// Parses (and CRC-checks) up to [`CHUNK_RECORDS`] records from `self.pos`, stopping before
    /// anything that is not a record, and hashes them. Returns whether any record was found.
    fn parse_chunk(&mut self) -> bool {
        self.chunk.clear();
        self.chunk_next = 0;
        let mut pos = self.pos;
        while self.chunk.len() < CHUNK_RECORDS {
            match step(&self.buf, pos) {
                Step::Record { end, header } => {
                    self.chunk.push(Parsed {
                        offset: pos,
                        end,
                        header,
                    });
                    pos = end;
                }
                Step::End | Step::Invalid(_) => break,
            }
        }
        hash_records(&self.buf, &self.chunk, &mut self.hashes);
        !self.chunk.is_empty()
    }
}

/// Records parsed per chunk (bounds the memory of the look-ahead: about 100 bytes each).
const CHUNK_RECORDS: usize = 16 * 1024;
/// Chunks smaller than this are hashed on the calling thread only.
const PARALLEL_RECORDS_MIN: usize = 2048;
/// Most threads used to hash a chunk.
const HASH_THREADS_MAX: usize = 4;

/// A record whose CRC verified, not yet checked against the chain.
#[derive(Clone, Copy, Debug)]
struct Parsed {
    offset: usize,
    end: usize,
    header: RecordHeader,
}

fn hash_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(HASH_THREADS_MAX)
    })
}

/// Computes the hash of every record in `records` into `hashes`, spreading large chunks over
/// a few scoped threads. If a thread cannot be started, the work is done on this one.
fn hash_records(buf: &[u8], records: &[Parsed], hashes: &mut Vec<Hash>) {
    fn hash_into(buf: &[u8], records: &[Parsed], out: &mut [Hash]) {
        for (record, hash) in records.iter().zip(out) {
            *hash = record_hash(&buf[record.offset..record.end]);
        }
    }
    hashes.clear();
    hashes.resize(records.len(), GENESIS_HASH);
    let threads = hash_threads();
    if threads < 2 || records.len() < PARALLEL_RECORDS_MIN {
        hash_into(buf, records, hashes);
        return;
    }
    let per_thread = records.len().div_ceil(threads);
    let spawn_failed = std::thread::scope(|scope| {
        let mut parts = records.chunks(per_thread).zip(hashes.chunks_mut(per_thread));
        let mine = parts.next();
        for (records, out) in parts {
            let spawned = std::thread::Builder::new()
                .name("journal-hash".into())
                .spawn_scoped(scope, move || hash_into(buf, records, out));
            if let Err(error) = spawned {
                tracing::debug!(%error, "journal: cannot start a hashing thread");
                return true;
            }
        }
        if let Some((records, out)) = mine {
            hash_into(buf, records, out);
        }
        false
    });
    if spawn_failed {
        // Rare: redo everything here rather than track which parts were done.
        hash_into(buf, records, hashes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::encode_record;
    use crate::RecordIn;

    fn records(n: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut head = GENESIS_HASH;
        for seq in 1..=n {
            let rec = RecordIn {
                timestamp_ns: seq,
                kind: 1,
                payload: &[seq as u8; 20],
            };
            head = encode_record(&mut buf, seq, &rec, &head);
        }
        buf
    }

    #[test]
    fn finds_a_valid_record_after_damage() {
        let buf = records(3);
        let second = RECORD_HEADER_LEN + 20;
        assert_eq!(find_valid_record_after(&buf, 0, 2), Some((second, 2)));
        assert_eq!(find_valid_record_after(&buf, 0, 3), Some((2 * second, 3)));
        // Sequence numbers below the expected one do not count.
        assert_eq!(find_valid_record_after(&buf, second, 4), None);
        assert_eq!(find_valid_record_after(&[], 0, 1), None);
    }

    #[test]
    fn step_classifies_ends() {
        let buf = records(1);
        assert!(matches!(step(&buf, 0), Step::Record { .. }));
        assert!(matches!(step(&buf, buf.len()), Step::End));
        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0; 100]);
        assert!(matches!(step(&zeros, buf.len()), Step::End));
        zeros.push(1);
        assert!(matches!(
            step(&zeros, buf.len()),
            Step::Invalid(Corruption::GarbageAfterEnd)
        ));
        assert!(matches!(
            step(&buf[..buf.len() - 1], 0),
            Step::Invalid(Corruption::Truncated { .. })
        ));
    }
}
