//! The writer: recovery on open, group commit, segment rotation and preallocation.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Author, Checkpoint, LastRecord, SealedSegment, Unusable};
use crate::error::JournalError;
use crate::format::{
    encode_record, segment_file_name, SegmentHeader, BATCH_BYTES_MAX, PAYLOAD_BYTES_MAX, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::scan::{list_segments, Anchor, SegmentFile, WalkEnd, Walker};
use crate::{Hash, RecordIn, RecoveryReport};

/// Default for [`JournalConfig::segment_bytes_max`]: 64 MiB.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Largest allowed [`JournalConfig::segment_bytes_max`]: 1 GiB.
pub const SEGMENT_BYTES_MAX_LIMIT: u64 = 1 << 30;
/// Smallest allowed [`JournalConfig::segment_bytes_max`]: a header and one empty record.
pub const SEGMENT_BYTES_MIN: u64 = (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN) as u64;

/// Zero-filled space a new segment starts with, and the smallest step it grows by.
const PREALLOC_BYTES_MIN: u64 = 1 << 20;
/// The largest step a segment's zero-filled space grows by (bounds the latency of the batch
/// that pays for it).
const PREALLOC_STEP_BYTES_MAX: u64 = 8 << 20;

/// Where and how the journal is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// Directory holding the segment files (created if absent).
    pub dir: PathBuf,
    /// Size at which a segment is closed and a new one started. A batch never spans segments:
    /// if a batch does not fit in the current segment a new one is started first, and a batch
    /// larger than this on its own gets a segment of its own that exceeds it.
    pub segment_bytes_max: u64,
}

impl JournalConfig {
    /// A config for `dir` with the default segment size.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
        }
    }

    fn validate(&self) -> Result<(), JournalError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX_LIMIT).contains(&self.segment_bytes_max) {
            return Err(JournalError::Config(format!(
                "segment_bytes_max {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX_LIMIT}",
                self.segment_bytes_max
            )));
        }
        Ok(())
    }
}

/// The segment currently written.
#[derive(Debug)]
struct OpenSegment {
    path: PathBuf,
    file: File,
    /// Its first sequence number and header prev hash (what a checkpoint records of it).
    first_seq: u64,
    prev_hash: Hash,
    /// Its last record, once it has one.
    last_record: Option<LastRecord>,
    /// Where the next record goes.
    write_pos: u64,
    /// File length; everything from `write_pos` to here is zero.
    alloc_end: u64,
}

/// The journal writer. Owned by one thread (the sequencer); appends are group commits.
#[derive(Debug)]
pub struct Journal {
    config: JournalConfig,
    segment: Option<OpenSegment>,
    next_seq: u64,
    head_hash: Hash,
    last_timestamp_ns: u64,
    poisoned: bool,
    /// Reused encoding buffer.
    buf: Vec<u8>,
    /// The sealed segments verified at open or written and sealed since, from the first, in
    /// order: what the next checkpoint covers. `None` after a failure to record one (the list
    /// would have a gap): no checkpoint is written until the next open.
    sealed: Option<Sealed>,
    /// A segment the writer moved away from whose successor could not be created yet (a full
    /// disk): it joins `sealed` once the successor exists.
    to_seal: Option<(SealedSegment, LastRecord)>,
}

/// Sealed segments without a gap from the first, and the sequence number after them.
#[derive(Clone, Debug)]
pub(crate) struct Sealed {
    segments: Vec<SealedSegment>,
    next_seq: u64,
}

impl Sealed {
    /// None yet: the next is the first segment.
    pub(crate) fn none() -> Sealed {
        Sealed {
            segments: Vec::new(),
            next_seq: 1,
        }
    }
}

impl Journal {
    /// Opens the journal in `config.dir`, creating the directory if absent.
    ///
    /// Verifies the segments (CRCs, hash chain, contiguous sequence numbers) after the
    /// verified-prefix checkpoint, or every segment when there is no usable checkpoint. The
    /// segments the checkpoint covers are only checked to be there unchanged in length and
    /// header, with the last verified record in place ([`JournalError::CheckpointMismatch`]
    /// otherwise); a missing or damaged checkpoint file means a full verification (with a
    /// warning for a damaged one). A torn tail in the last segment (bytes from a write
    /// interrupted by a crash, with no valid record after them) is cut off, made durable and
    /// reported. Any other damage is refused with an error naming the segment, offset and
    /// sequence number; nothing is skipped silently. Afterwards the checkpoint covers every
    /// segment but the last.
    pub fn open(config: JournalConfig) -> Result<(Journal, RecoveryReport), JournalError> {
        config.validate()?;
        let dir = config.dir.as_path();
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(JournalError::io(dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        remove_temp_files(dir, ".seg.tmp")?;
        remove_temp_files(dir, ".ckpt.tmp")?;

        let segments = list_segments(dir)?;
        let (mut walker, sealed) = start_walk(dir, segments)?;
        let checkpoint_seq = walker.expected_seq() - 1;
        while walker.next_record()?.is_some() {}
        let end = walker.finish();
        let mut segment_count = end.segments;
        let (sealed, _) = advance_checkpoint(dir, sealed, &end, Author::Writer);

        if let Some(torn) = &end.torn {
            torn.warn("cutting off a torn tail left by an interrupted write");
            if torn.offset == 0 {
                // The segment's own header never became valid: the file holds nothing.
                fs::remove_file(&torn.segment).map_err(JournalError::io(&torn.segment))?;
                sync_dir(dir)?;
                segment_count -= 1;
            } else {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&torn.segment)
                    .map_err(JournalError::io(&torn.segment))?;
                file.set_len(torn.offset)
                    .map_err(JournalError::io(&torn.segment))?;
                file.sync_all().map_err(JournalError::io(&torn.segment))?;
            }
        }

        let segment = match &end.last_segment {
            None => None,
            Some(last) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&last.path)
                    .map_err(JournalError::io(&last.path))?;
                let alloc_end = file.metadata().map_err(JournalError::io(&last.path))?.len();
                if alloc_end < last.data_end {
                    return Err(JournalError::Io {
                        path: last.path.clone(),
                        source: io::Error::other("segment file shrank while the journal was opening"),
                    });
                }
                // The last segment with a valid header is the last one walked.
                let Some(walked) = end.walked.last() else {
                    unreachable!("a segment with a valid header was walked");
                };
                Some(OpenSegment {
                    path: last.path.clone(),
                    file,
                    first_seq: walked.segment.first_seq,
                    prev_hash: walked.segment.prev_hash,
                    last_record: walked.last,
                    write_pos: last.data_end,
                    alloc_end,
                })
            }
        };

        let report = RecoveryReport {
            records: end.next_seq - 1,
            records_verified: end.records,
            checkpoint_seq,
            segments: segment_count,
            head_seq: end.next_seq - 1,
            head_hash: end.head_hash,
            torn_tail: end.torn,
        };
        let journal = Journal {
            config,
            segment,
            next_seq: end.next_seq,
            head_hash: end.head_hash,
            last_timestamp_ns: end.last_timestamp_ns,
            poisoned: false,
            buf: Vec::new(),
            sealed,
            to_seal: None,
        };
        Ok((journal, report))
    }

    /// The sequence number the next record will get (the first record ever has seq 1).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hash of the last record, [`crate::GENESIS_HASH`] if the journal is empty.
    pub fn head_hash(&self) -> Hash {
        self.head_hash
    }

    /// Timestamp of the last record, 0 if the journal is empty. Appended timestamps must not be
    /// older than this.
    pub fn last_timestamp_ns(&self) -> u64 {
        self.last_timestamp_ns
    }

    /// The directory the journal lives in.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Whether an earlier I/O error has poisoned the writer.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Group commit: appends `records` with consecutive sequence numbers and returns the first.
    ///
    /// All records are encoded into one buffer and written with one positional write followed by
    /// one `fdatasync`; nothing is durable before this returns `Ok`. If the batch does not fit
    /// in the current segment, a new segment is started first (a batch never spans segments).
    /// An empty batch writes nothing and returns [`Journal::next_seq`].
    ///
    /// Records are only ever written into space that already exists: room is made first (a new
    /// segment, or zero-filled growth of this one, made durable on its own), so a full disk
    /// fails before any record reaches the file.
    ///
    /// Invalid input (payload or batch too large, timestamp older than the previous one) is
    /// refused before anything is written. A failure says what became of the batch:
    /// [`JournalError::Full`] (not written; the writer still works and the next call tries
    /// again), [`JournalError::NotWritten`] (not written; poisoned) or
    /// [`JournalError::OutcomeUnknown`] (maybe durable; poisoned). A poisoned writer refuses
    /// every later call with [`JournalError::Poisoned`]; the caller must stop and reopen.
    pub fn append_batch(&mut self, records: &[RecordIn<'_>]) -> Result<u64, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        let first_seq = self.next_seq;
        if records.is_empty() {
            return Ok(first_seq);
        }
        let mut batch_len = 0usize;
        let mut previous = self.last_timestamp_ns;
        for (index, record) in records.iter().enumerate() {
            let len = record.payload.len();
            if len > PAYLOAD_BYTES_MAX {
                return Err(JournalError::PayloadTooLarge {
                    index,
                    len,
                    max: PAYLOAD_BYTES_MAX,
                });
            }
            if record.timestamp_ns < previous {
                return Err(JournalError::TimestampRegression {
                    index,
                    previous,
                    given: record.timestamp_ns,
                });
            }
            previous = record.timestamp_ns;
            batch_len += RECORD_HEADER_LEN + len;
            if batch_len > BATCH_BYTES_MAX {
                return Err(JournalError::BatchTooLarge { max: BATCH_BYTES_MAX });
            }
        }

        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(batch_len);
        let mut head = self.head_hash;
        let mut last_start = 0;
        for (seq, record) in (first_seq..).zip(records) {
            last_start = buf.len();
            head = encode_record(&mut buf, seq, record, &head);
        }
        assert_eq!(buf.len(), batch_len);

        let written = self.write_batch(&buf);
        self.buf = buf;
        written.map_err(|error| self.failed(error))?;
        self.next_seq = first_seq + records.len() as u64;
        self.head_hash = head;
        self.last_timestamp_ns = previous;
        if let Some(segment) = self.segment.as_mut() {
            segment.last_record = Some(LastRecord {
                offset: segment.write_pos - (batch_len - last_start) as u64,
                seq: self.next_seq - 1,
                timestamp_ns: previous,
                hash: head,
            });
        }
        Ok(first_seq)
    }

    /// Makes sure the next `bytes` of records can be written into space that already exists
    /// (starting a new segment if they would not fit in this one, or growing this one), without
    /// writing any record. While the disk is full the caller retries with this to learn when
    /// space has come back. Fails like [`Journal::append_batch`]: [`JournalError::Full`] leaves
    /// the writer usable, anything else poisons it.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        self.make_room(bytes).map_err(|error| self.failed(error))
    }

    /// Poisons the writer for every failure but a full disk, and logs it.
    fn failed(&mut self, error: JournalError) -> JournalError {
        if matches!(error, JournalError::Full { .. }) {
            tracing::warn!(%error, "journal: disk full; nothing was written, the next append tries again");
        } else {
            self.poisoned = true;
            tracing::error!(%error, "journal: append failed; the journal is poisoned until it is reopened");
        }
        error
    }

    /// Writes the encoded batch in `buf` into space made for it beforehand, and syncs it.
    fn write_batch(&mut self, buf: &[u8]) -> Result<(), JournalError> {
        let batch_len = buf.len() as u64;
        self.make_room(batch_len)?;
        let Some(segment) = self.segment.as_mut() else {
            unreachable!("make_room ensures a segment");
        };
        let start = segment.write_pos;
        let end = start + batch_len;
        assert!(
            end <= segment.alloc_end,
            "records are written only into allocated space"
        );
        if let Err(source) = segment.file.write_all_at(buf, start) {
            return Err(cut_back(segment, start, end, source));
        }
        if let Err(source) = segment.file.sync_data() {
            // PostgreSQL's fsync lesson: after a failed fsync the page cache cannot be trusted,
            // neither to hold the records nor to have dropped them. The outcome is unknown.
            return Err(JournalError::OutcomeUnknown {
                path: segment.path.clone(),
                source,
            });
        }
        segment.write_pos = end;
        Ok(())
    }

    /// Starts a new segment or grows the current one so that `batch_len` more bytes fit into
    /// zero-filled space whose size is durable.
    fn make_room(&mut self, batch_len: u64) -> Result<(), JournalError> {
        let max = self.config.segment_bytes_max;
        let rotate = match &self.segment {
            None => true,
            Some(s) => s.write_pos > SEGMENT_HEADER_LEN as u64 && s.write_pos + batch_len > max,
        };
        if rotate {
            if let Some(old) = self.segment.take() {
                self.to_seal = self.seal_entry(&old);
            }
            self.segment = Some(self.create_segment()?);
            if let Some((segment, last)) = self.to_seal.take() {
                self.seal(segment, last);
            }
        }
        let Some(segment) = self.segment.as_mut() else {
            unreachable!("a segment was just ensured");
        };
        let need = segment.write_pos + batch_len;
        if need <= segment.alloc_end {
            return Ok(());
        }
        // Grow by a step, so that most batches overwrite allocated blocks and their fdatasync
        // has no file size to flush; on a nearly full disk, by just what this batch needs.
        let step = segment
            .alloc_end
            .clamp(PREALLOC_BYTES_MIN, PREALLOC_STEP_BYTES_MAX);
        let wanted = need.max((segment.alloc_end + step).min(max));
        match grow(segment, wanted) {
            Err(JournalError::Full { .. }) if wanted > need => grow(segment, need),
            other => other,
        }
    }

    /// What the checkpoint records of a segment the writer moves away from, if it holds
    /// records (it always does: a segment is left only once it has some).
    fn seal_entry(&mut self, segment: &OpenSegment) -> Option<(SealedSegment, LastRecord)> {
        let last = segment.last_record?;
        match segment.file.metadata() {
            Ok(m) => Some((
                SealedSegment {
                    first_seq: segment.first_seq,
                    len: m.len(),
                    prev_hash: segment.prev_hash,
                },
                last,
            )),
            Err(error) => {
                tracing::warn!(%error, segment = %segment.path.display(), "journal: cannot stat a sealed segment; no checkpoint until the next open");
                self.sealed = None;
                None
            }
        }
    }

    /// Adds a segment that was just sealed (its successor exists, durably) to the checkpoint.
    /// The records in it were written and hashed by this writer, or verified at open, and
    /// synced before the next segment was created. A checkpoint that cannot be written is
    /// only logged: the next open verifies more.
    fn seal(&mut self, segment: SealedSegment, last: LastRecord) {
        let Some(sealed) = self.sealed.as_mut() else {
            return;
        };
        if segment.first_seq != sealed.next_seq {
            // Never write a checkpoint with a gap (it would refuse the next open).
            tracing::warn!(
                first_seq = segment.first_seq,
                expected = sealed.next_seq,
                "journal: sealed segments are not contiguous; no checkpoint until the next open"
            );
            self.sealed = None;
            return;
        }
        sealed.segments.push(segment);
        sealed.next_seq = last.seq + 1;
        let checkpoint = Checkpoint {
            sealed: sealed.segments.clone(),
            last,
        };
        if let Err(error) = checkpoint::write(&self.config.dir, &checkpoint, Author::Writer) {
            tracing::warn!(%error, "journal: cannot write the checkpoint; the next open verifies from the previous one");
        }
    }

    /// Creates the segment whose first record is `self.next_seq`: header and initial zero-filled
    /// space are written to a temporary file, synced, renamed into place, and the directory is
    /// synced, so a segment file with its final name always has a complete header. A failure
    /// before the rename removes the temporary file (giving its space back).
    fn create_segment(&self) -> Result<OpenSegment, JournalError> {
        let dir = self.config.dir.as_path();
        let name = segment_file_name(self.next_seq);
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        if path.exists() {
            let source = io::Error::new(io::ErrorKind::AlreadyExists, "segment exists already");
            return Err(JournalError::NotWritten { path, source });
        }
        let header = SegmentHeader {
            first_seq: self.next_seq,
            prev_hash: self.head_hash,
        };
        let alloc_end = self
            .config
            .segment_bytes_max
            .min(SEGMENT_HEADER_LEN as u64 + PREALLOC_BYTES_MIN);
        let mut initial = vec![0u8; alloc_end as usize];
        initial[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());

        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .and_then(|file| {
                file.write_all_at(&initial, 0)?;
                file.sync_all()?;
                fs::rename(&tmp, &path)?;
                Ok(file)
            });
        let file = match created {
            Ok(file) => file,
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                return Err(not_written(&tmp, source));
            }
        };
        // The file is in place but its name may not be durable: that is a failed fsync, and
        // `not_written` treats it as one (poisoned), though no record was written.
        sync_dir(dir).map_err(|e| match e {
            JournalError::Io { path, source } => JournalError::NotWritten { path, source },
            other => other,
        })?;
        tracing::debug!(segment = %path.display(), "journal: new segment");
        Ok(OpenSegment {
            path,
            file,
            first_seq: header.first_seq,
            prev_hash: header.prev_hash,
            last_record: None,
            write_pos: SEGMENT_HEADER_LEN as u64,
            alloc_end,
        })
    }
}

/// Where the verification at open starts: after the checkpoint if there is a usable one (its
/// sealed segments checked to be there unchanged), else at the first record. Returns the
/// walker and the sealed segments already covered.
fn start_walk(dir: &Path, segments: Vec<SegmentFile>) -> Result<(Walker, Sealed), JournalError> {
    match checkpoint::read(dir) {
        Ok(cp) => {
            let start = checkpoint::check(dir, &segments, &cp)?;
            let walker = Walker::resume(segments, start, cp.next_seq(), cp.last.hash, cp.last.timestamp_ns);
            let sealed = Sealed {
                next_seq: cp.next_seq(),
                segments: cp.sealed,
            };
            Ok((walker, sealed))
        }
        Err(unusable) => {
            if let Unusable::Damaged(reason) = unusable {
                tracing::warn!(%reason, dir = %dir.display(), "journal: checkpoint unusable; verifying the whole journal");
            }
            Ok((Walker::new(segments, 0, Anchor::Genesis), Sealed::none()))
        }
    }
}

/// After the walk at open: extends the checkpoint to every segment but the last (the one the
/// writer continues), syncing the newly covered ones first so that the checkpoint never names
/// a record that is not durable. Returns the sealed segments the writer's next checkpoint
/// builds on (`None` if a segment could not be synced), and the sequence number a checkpoint
/// written now covers (`None`: nothing new, or it could not be written). A failure is only
/// logged: the next open verifies more.
pub(crate) fn advance_checkpoint(
    dir: &Path,
    mut sealed: Sealed,
    end: &WalkEnd,
    author: Author,
) -> (Option<Sealed>, Option<u64>) {
    let Some((_, newly)) = end.walked.split_last() else {
        return (Some(sealed), None);
    };
    let Some(last) = newly.last().and_then(|w| w.last) else {
        return (Some(sealed), None);
    };
    let synced = newly.iter().try_for_each(|w| {
        let path = dir.join(segment_file_name(w.segment.first_seq));
        File::open(&path)
            .and_then(|f| f.sync_data())
            .map_err(JournalError::io(&path))
    });
    if let Err(error) = synced {
        tracing::warn!(%error, "journal: cannot sync a verified segment; no checkpoint until the next open");
        return (None, None);
    }
    sealed.segments.extend(newly.iter().map(|w| w.segment));
    sealed.next_seq = last.seq + 1;
    let checkpoint = Checkpoint {
        sealed: sealed.segments.clone(),
        last,
    };
    let written = match checkpoint::write(dir, &checkpoint, author) {
        Ok(()) => {
            tracing::info!(
                sealed_segments = checkpoint.sealed.len(),
                newly = newly.len(),
                seq = last.seq,
                "journal: checkpoint advanced"
            );
            Some(last.seq)
        }
        Err(error) => {
            tracing::warn!(%error, "journal: cannot write the checkpoint; the next open verifies from the previous one");
            None
        }
    };
    (Some(sealed), written)
}

/// Zero-filled bytes written in chunks of this size when a segment grows.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Grows `segment`'s zero-filled space to `to` and makes the new size durable, before any
/// record is written there. A failed write gives back what it took; a failed sync poisons.
fn grow(segment: &mut OpenSegment, to: u64) -> Result<(), JournalError> {
    let from = segment.alloc_end;
    if let Err(source) = write_zeros(&segment.file, from, to) {
        // The bytes past `from` are zeros either way; cutting them off frees their blocks.
        if let Err(error) = segment.file.set_len(from) {
            tracing::warn!(%error, segment = %segment.path.display(), "journal: could not give back a failed growth");
        }
        return Err(not_written(&segment.path, source));
    }
    if let Err(source) = segment.file.sync_data() {
        return Err(JournalError::NotWritten {
            path: segment.path.clone(),
            source,
        });
    }
    segment.alloc_end = to;
    Ok(())
}

/// After a failed write of records at `start..end`: overwrites them with zeros and syncs, so
/// the journal ends where it did before the batch (what [`Journal::open`] then finds). If that
/// fails too, the records may be durable.
fn cut_back(segment: &OpenSegment, start: u64, end: u64, source: io::Error) -> JournalError {
    let zeroed = write_zeros(&segment.file, start, end).and_then(|()| segment.file.sync_data());
    match zeroed {
        Ok(()) => not_written(&segment.path, source),
        Err(error) => {
            tracing::error!(%error, segment = %segment.path.display(), offset = start, "journal: could not cut back a failed write");
            JournalError::OutcomeUnknown {
                path: segment.path.clone(),
                source,
            }
        }
    }
}

/// A failure after which nothing of the batch is in the file: [`JournalError::Full`] when the
/// disk is full (the writer may try again), [`JournalError::NotWritten`] otherwise.
fn not_written(path: &Path, source: io::Error) -> JournalError {
    let path = path.to_path_buf();
    if is_disk_full(&source) {
        JournalError::Full { path, source }
    } else {
        JournalError::NotWritten { path, source }
    }
}

/// `ENOSPC` or `EDQUOT`.
fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(JournalError::io(dir))
}

/// Removes the files of `dir` whose names end in `suffix`: temporary files left by a write that
/// a crash interrupted before their rename (so they never hold anything acknowledged).
pub(crate) fn remove_temp_files(dir: &Path, suffix: &str) -> Result<(), JournalError> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(JournalError::io(dir))? {
        let entry = entry.map_err(JournalError::io(dir))?;
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(suffix));
        if is_temp {
            let path = entry.path();
            tracing::warn!(file = %path.display(), "journal: removing an unfinished temporary file");
            fs::remove_file(&path).map_err(JournalError::io(&path))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}
