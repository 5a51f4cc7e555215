//! Snapshot files: the engine's state at a journal position, written atomically.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::format::u64_in;
use crate::writer::{remove_temp_files, sync_dir};
use crate::Hash;

const SNAPSHOT_MAGIC: [u8; 8] = *b"KINKOSNP";
/// Version of the snapshot file layout written by this code.
pub const SNAPSHOT_FILE_VERSION: u32 = 1;
/// Length of the snapshot file header in bytes.
pub const SNAPSHOT_HEADER_LEN: usize = 140;
/// Largest snapshot payload written or read (snapshots are read into memory whole).
pub const SNAPSHOT_PAYLOAD_BYTES_MAX: u64 = 8 << 30;
/// Default number of snapshots [`SnapshotStore`] keeps.
pub const SNAPSHOT_KEEP_DEFAULT: usize = 3;

/// What a snapshot is a snapshot of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Version of the engine's state encoding in the payload (the journal does not interpret it).
    pub format_version: u32,
    /// Sequence number of the last journal record applied to the state.
    pub seq: u64,
    /// Hash of journal record `seq` (ties the snapshot to one chain).
    pub journal_hash: Hash,
    /// The engine's `state_hash()` at `seq`; replay must reproduce it.
    pub state_hash: Hash,
    /// Timestamp of record `seq`.
    pub timestamp_ns: u64,
}

/// One file in [`SnapshotStore::list`]: its path, and its metadata or why it does not verify.
pub type SnapshotEntry = (PathBuf, Result<SnapshotMeta, SnapshotInvalid>);

/// Why a snapshot file does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotInvalid {
    /// Reading the file failed; `step` says what was being read, `reason` is the I/O error's text.
    #[error("cannot {step}: {reason}")]
    Io { step: &'static str, reason: String },
    #[error("file is {len} bytes, shorter than the header")]
    TooShort { len: u64 },
    #[error("file is {len} bytes, larger than the limit")]
    TooLarge { len: u64 },
    #[error("header crc mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error("bad magic")]
    Magic,
    #[error("unsupported snapshot file version {0}")]
    FileVersion(u32),
    #[error("header says {header} payload bytes but the file holds {file}")]
    FileLength { header: u64, file: u64 },
    #[error("header says seq {0} but the file name does not")]
    FileName(u64),
    #[error("payload is {read} bytes, header says {header}")]
    PayloadLength { read: u64, header: u64 },
    #[error("payload checksum mismatch")]
    PayloadChecksum,
}

impl SnapshotInvalid {
    fn io(step: &'static str) -> impl Fn(std::io::Error) -> SnapshotInvalid {
        move |e| SnapshotInvalid::Io {
            step,
            reason: e.to_string(),
        }
    }
}

/// Result of [`SnapshotStore::latest_valid`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestSnapshot {
    /// The newest snapshot that verified, with its payload.
    pub found: Option<(SnapshotMeta, Vec<u8>)>,
    /// Newer snapshot files that did not verify, with the reason, newest first. The reason is
    /// text because recovery reports it beside reasons of its own.
    pub skipped: Vec<(PathBuf, String)>,
}

/// A directory of snapshot files named `NNNNNNNNNNNNNNNNNNNN.snap` after their `seq`.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    keep: usize,
}

impl SnapshotStore {
    /// Opens (creating if absent) a snapshot directory, keeping the newest
    /// [`SNAPSHOT_KEEP_DEFAULT`] snapshots. Leftover temporary files from an interrupted
    /// [`SnapshotStore::write`] are removed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, JournalError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(JournalError::io(&dir))?;
        remove_temp_files(&dir, ".snap.tmp")?;
        Ok(SnapshotStore {
            dir,
            keep: SNAPSHOT_KEEP_DEFAULT,
        })
    }

    /// A store to read from only: creates nothing and leaves temporary files alone (the
    /// sequencer may be writing one right now).
    pub fn reader(dir: impl Into<PathBuf>) -> Self {
        SnapshotStore {
            dir: dir.into(),
            keep: SNAPSHOT_KEEP_DEFAULT,
        }
    }

    /// Sets how many snapshots to keep (at least 1).
    pub fn with_keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a snapshot atomically (temporary file, fsync, rename, fsync of the directory),
    /// then deletes all but the newest `keep` snapshot files. A snapshot with the same `seq`
    /// is replaced. Returns the snapshot's path.
    pub fn write(&self, meta: &SnapshotMeta, payload: &[u8]) -> Result<PathBuf, JournalError> {
        let name = snapshot_file_name(meta.seq);
        let path = self.dir.join(&name);
        if payload.len() as u64 > SNAPSHOT_PAYLOAD_BYTES_MAX {
            return Err(JournalError::Snapshot {
                path,
                reason: format!(
                    "payload of {} bytes exceeds the limit of {SNAPSHOT_PAYLOAD_BYTES_MAX}",
                    payload.len()
                ),
            });
        }
        let tmp = self.dir.join(format!("{name}.tmp"));
        let header = encode_header(meta, payload);
        let written = File::create(&tmp).and_then(|mut file| {
            file.write_all(&header)?;
            file.write_all(payload)?;
            file.sync_all()
        });
        if let Err(source) = written {
            // A snapshot that failed (a full disk, most often) must not keep holding the space
            // the journal needs; nothing refers to the temporary file.
            let _ = fs::remove_file(&tmp);
            return Err(JournalError::Io { path: tmp, source });
        }
        fs::rename(&tmp, &path).map_err(JournalError::io(&path))?;
        sync_dir(&self.dir)?;

        let files = self.snapshot_files()?;
        let excess = files.len().saturating_sub(self.keep);
        let mut removed = false;
        for (_, old) in files.iter().take(excess) {
            if *old != path {
                fs::remove_file(old).map_err(JournalError::io(old))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(path)
    }

    /// The newest snapshot whose header and payload checksum verify. Newer files that fail are
    /// passed over, logged and returned in `skipped` with the reason.
    pub fn latest_valid(&self) -> Result<LatestSnapshot, JournalError> {
        self.latest_valid_at_most(u64::MAX)
    }

    /// The newest snapshot at or before `seq_max` whose header and payload checksum verify
    /// (what rebuilding the state as it was at `seq_max` starts from).
    pub fn latest_valid_at_most(&self, seq_max: u64) -> Result<LatestSnapshot, JournalError> {
        let mut skipped = Vec::new();
        for (_, path) in self
            .snapshot_files()?
            .into_iter()
            .rev()
            .filter(|(seq, _)| *seq <= seq_max)
        {
            match read_snapshot(&path) {
                Ok(found) => {
                    return Ok(LatestSnapshot {
                        found: Some(found),
                        skipped,
                    })
                }
                Err(reason) => {
                    tracing::warn!(file = %path.display(), %reason, "snapshot: skipping an invalid snapshot");
                    skipped.push((path, reason.to_string()));
                }
            }
        }
        Ok(LatestSnapshot { found: None, skipped })
    }

    /// Every snapshot file, oldest first, with its metadata if it verifies (header and payload)
    /// or the reason it does not.
    pub fn list(&self) -> Result<Vec<SnapshotEntry>, JournalError> {
        Ok(self
            .snapshot_files()?
            .into_iter()
            .map(|(_, path)| {
                let meta = read_snapshot(&path).map(|(meta, _)| meta);
                (path, meta)
            })
            .collect())
    }

    /// Snapshot files (by name), sorted by seq, oldest first.
    fn snapshot_files(&self) -> Result<Vec<(u64, PathBuf)>, JournalError> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(JournalError::io(&self.dir))? {
            let entry = entry.map_err(JournalError::io(&self.dir))?;
            let name = entry.file_name();
            if let Some(seq) = name.to_str().and_then(parse_snapshot_file_name) {
                files.push((seq, entry.path()));
            }
        }
        files.sort();
        Ok(files)
    }
}

fn snapshot_file_name(seq: u64) -> String {
    format!("{seq:020}.snap")
}

fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".snap")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Header layout (little endian):
/// magic (8) | file version u32 | format_version u32 | seq u64 | timestamp_ns u64 |
/// journal_hash (32) | state_hash (32) | payload length u64 | payload BLAKE3 (32) |
/// CRC32C of the preceding 136 bytes u32.
fn encode_header(meta: &SnapshotMeta, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut h = [0u8; SNAPSHOT_HEADER_LEN];
    h[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    h[8..12].copy_from_slice(&SNAPSHOT_FILE_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&meta.format_version.to_le_bytes());
    h[16..24].copy_from_slice(&meta.seq.to_le_bytes());
    h[24..32].copy_from_slice(&meta.timestamp_ns.to_le_bytes());
    h[32..64].copy_from_slice(&meta.journal_hash);
    h[64..96].copy_from_slice(&meta.state_hash);
    h[96..104].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[104..136].copy_from_slice(blake3::hash(payload).as_bytes());
    let crc = crc32c::crc32c(&h[..136]);
    h[136..140].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads and verifies one snapshot file.
fn read_snapshot(path: &Path) -> Result<(SnapshotMeta, Vec<u8>), SnapshotInvalid> {
    let mut file = File::open(path).map_err(SnapshotInvalid::io("open"))?;
    let len = file.metadata().map_err(SnapshotInvalid::io("stat"))?.len();
    if len < SNAPSHOT_HEADER_LEN as u64 {
        return Err(SnapshotInvalid::TooShort { len });
    }
    if len - SNAPSHOT_HEADER_LEN as u64 > SNAPSHOT_PAYLOAD_BYTES_MAX {
        return Err(SnapshotInvalid::TooLarge { len });
    }
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    file.read_exact(&mut header)
        .map_err(SnapshotInvalid::io("read header"))?;
    let meta = decode_header(&header)?;
    let (payload_len, payload_hash) = payload_fields(&header);
    if payload_len != len - SNAPSHOT_HEADER_LEN as u64 {
        return Err(SnapshotInvalid::FileLength {
            header: payload_len,
            file: len - SNAPSHOT_HEADER_LEN as u64,
        });
    }
    let name_seq = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_snapshot_file_name);
    if name_seq != Some(meta.seq) {
        return Err(SnapshotInvalid::FileName(meta.seq));
    }
    let mut payload = Vec::with_capacity(payload_len as usize);
    file.read_to_end(&mut payload)
        .map_err(SnapshotInvalid::io("read payload"))?;
    if payload.len() as u64 != payload_len {
        return Err(SnapshotInvalid::PayloadLength {
            read: payload.len() as u64,
            header: payload_len,
        });
    }
    if *blake3::hash(&payload).as_bytes() != payload_hash {
        return Err(SnapshotInvalid::PayloadChecksum);
    }
    Ok((meta, payload))
}

fn decode_header(h: &[u8; SNAPSHOT_HEADER_LEN]) -> Result<SnapshotMeta, SnapshotInvalid> {
    let stored = u32::from_le_bytes([h[136], h[137], h[138], h[139]]);
    let computed = crc32c::crc32c(&h[..136]);
    if stored != computed {
        return Err(SnapshotInvalid::HeaderCrc { stored, computed });
    }
    if h[0..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotInvalid::Magic);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != SNAPSHOT_FILE_VERSION {
        return Err(SnapshotInvalid::FileVersion(version));
    }
    let mut journal_hash = [0u8; 32];
    journal_hash.copy_from_slice(&h[32..64]);
    let mut state_hash = [0u8; 32];
    state_hash.copy_from_slice(&h[64..96]);
    Ok(SnapshotMeta {
        format_version: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
        seq: u64_in(h, 16).unwrap_or_default(),
        timestamp_ns: u64_in(h, 24).unwrap_or_default(),
        journal_hash,
        state_hash,
    })
}

fn payload_fields(h: &[u8; SNAPSHOT_HEADER_LEN]) -> (u64, Hash) {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&h[104..136]);
    (u64_in(h, 96).unwrap_or_default(), hash)
}
