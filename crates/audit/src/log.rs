//! [`AuditLog`]: the file-backed log, and the verifying readers it shares with `verify_dir`.

use crate::entry::{decode_line, line_bytes, line_index, parse_hash, record_bytes, Entry};
use crate::key::key_id;
use crate::merkle::{leaf_hash, verify_consistency, Tree};
use crate::{AuditError, CheckpointProblem, EntryProblem};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The entries file in a log's directory.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// The checkpoints file in a log's directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
/// Longest checkpoint line (they are about 300 bytes).
const CHECKPOINT_LINE_BYTES_MAX: usize = 1024;

const SIGNED_TEXT_HEADER: &str = "kinko-audit checkpoint v1";

/// A signed tree head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub tree_size: u64,
    /// The root of the tree of the first `tree_size` entries, 64 lower-case hex digits.
    pub root_hex: String,
    /// The caller's clock when it asked for the checkpoint.
    pub time_ns: u64,
    /// [`key_id`] of the signing key.
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::signed_text`], 128 lower-case hex digits.
    pub signature: String,
}

impl Checkpoint {
    /// What the signature covers:
    /// `"kinko-audit checkpoint v1\n{tree_size}\n{root_hex}\n{time_ns}\n"`.
    pub fn signed_text(&self) -> String {
        format!(
            "{SIGNED_TEXT_HEADER}\n{}\n{}\n{}\n",
            self.tree_size, self.root_hex, self.time_ns
        )
    }

    /// The root, if `root_hex` is 64 lower-case hex digits.
    pub fn root(&self) -> Option<[u8; 32]> {
        parse_hash(&self.root_hex)
    }

    /// Checks the key id and signature against `key`; gives the root.
    pub fn verify(&self, key: &VerifyingKey) -> Result<[u8; 32], CheckpointProblem> {
        let expected = key_id(key);
        if self.key_id != expected {
            return Err(CheckpointProblem::OtherKey {
                found: self.key_id.clone(),
                expected,
            });
        }
        let root = self.root().ok_or_else(|| {
            CheckpointProblem::Unparsable("root_hex is not 64 lower-case hex digits".into())
        })?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig).map_err(|_| CheckpointProblem::BadSignature)?;
        if hex::encode(sig) != self.signature {
            return Err(CheckpointProblem::BadSignature);
        }
        key.verify_strict(self.signed_text().as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| CheckpointProblem::BadSignature)?;
        Ok(root)
    }

    fn sign(tree_size: u64, root: &[u8; 32], time_ns: u64, key: &SigningKey) -> Checkpoint {
        let mut cp = Checkpoint {
            tree_size,
            root_hex: hex::encode(root),
            time_ns,
            key_id: key_id(&key.verifying_key()),
            signature: String::new(),
        };
        cp.signature = hex::encode(key.sign(cp.signed_text().as_bytes()).to_bytes());
        cp
    }
}

/// What opening cut off: bytes of a torn last line (0 when the file was whole).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    pub entries_bytes: u64,
    pub checkpoints_bytes: u64,
}

/// An open audit log. See the crate documentation for the files and guarantees.
pub struct AuditLog {
    dir: PathBuf,
    entries_path: PathBuf,
    checkpoints_path: PathBuf,
    key: SigningKey,
    key_id: String,
    tree: Tree,
    /// Byte offset of each entry's line.
    offsets: Vec<u64>,
    entries_len: u64,
    entries_id: (u64, u64),
    checkpoints_len: u64,
    checkpoints_id: (u64, u64),
    checkpoints: u64,
    latest_checkpoint: Option<Checkpoint>,
    repaired: Repaired,
    poisoned: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("key_id", &self.key_id)
            .field("size", &self.tree.size())
            .field("root", &hex::encode(self.tree.root()))
            .field("checkpoints", &self.checkpoints)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log in `dir` (creating the directory, mode 0700, and empty files, mode 0600,
    /// when missing), verifying every entry and checkpoint; a torn last line of either file
    /// is cut ([`AuditLog::repaired`]), anything else refuses with file, line and problem.
    pub fn open(dir: &Path, signing_key: SigningKey) -> Result<AuditLog, AuditError> {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let entries_path = dir.join(ENTRIES_FILE);
        let checkpoints_path = dir.join(CHECKPOINTS_FILE);
        let created_entries = create_if_missing(&entries_path)?;
        let created_checkpoints = create_if_missing(&checkpoints_path)?;
        if created_entries || created_checkpoints {
            sync_dir(dir)?;
        }

        let scan = scan_entries(&entries_path)?;
        if scan.torn_bytes > 0 {
            cut(&entries_path, scan.whole_len)?;
        }
        let cps = read_checkpoints(&checkpoints_path)?;
        if cps.torn_bytes > 0 {
            cut(&checkpoints_path, cps.whole_len)?;
        }
        let public = signing_key.verifying_key();
        check_checkpoints(&checkpoints_path, &cps.list, &public, &scan.tree)?;

        let entries_id = identity(&entries_path, scan.whole_len)?;
        let checkpoints_id = identity(&checkpoints_path, cps.whole_len)?;
        Ok(AuditLog {
            dir: dir.to_owned(),
            entries_path,
            checkpoints_path,
            key_id: key_id(&public),
            key: signing_key,
            tree: scan.tree,
            offsets: scan.offsets,
            entries_len: scan.whole_len,
            entries_id,
            checkpoints_len: cps.whole_len,
            checkpoints_id,
            checkpoints: cps.list.len() as u64,
            latest_checkpoint: cps.list.last().map(|(_, cp)| cp.clone()),
            repaired: Repaired {
                entries_bytes: scan.torn_bytes,
                checkpoints_bytes: cps.torn_bytes,
            },
            poisoned: false,
        })
    }

    /// Appends `entry`, returning its index, once its line is written and synced. An error
    /// means the entry is not in the log: refuse the action it records.
    pub fn append(&mut self, entry: &Entry) -> Result<u64, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        let index = self.tree.size();
        let record = record_bytes(index, entry)?;
        let leaf = leaf_hash(&record);
        let line = line_bytes(&record, &leaf);
        // What is written must read back as the same entry.
        match decode_line(&line[..line.len() - 1]) {
            Ok(d) if d.index == index && d.leaf == leaf && d.entry == *entry => {}
            Ok(_) => return Err(AuditError::InvalidEntry("does not read back as written".into())),
            Err(problem) => {
                return Err(AuditError::InvalidEntry(format!(
                    "does not read back as written: {problem}"
                )))
            }
        }
        let (path, len, id) = (&self.entries_path, self.entries_len, self.entries_id);
        append_line(path, id, len, &line, &mut self.poisoned)?;
        self.offsets.push(self.entries_len);
        self.entries_len += line.len() as u64;
        self.tree.push(leaf);
        Ok(index)
    }

    /// Signs the current tree head and appends it to `checkpoints.jsonl` (synced).
    pub fn checkpoint(&mut self, time_ns: u64) -> Result<Checkpoint, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        let root = self.tree.root();
        let cp = Checkpoint::sign(self.tree.size(), &root, time_ns, &self.key);
        assert_eq!(
            cp.verify(&self.key.verifying_key()),
            Ok(root),
            "a fresh checkpoint verifies"
        );
        let mut line = serde_json::to_vec(&cp).expect("a checkpoint serializes");
        line.push(b'\n');
        let (path, len, id) = (&self.checkpoints_path, self.checkpoints_len, self.checkpoints_id);
        append_line(path, id, len, &line, &mut self.poisoned)?;
        self.checkpoints_len += line.len() as u64;
        self.checkpoints += 1;
        self.latest_checkpoint = Some(cp.clone());
        Ok(cp)
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The root of the tree of all entries.
    pub fn root(&self) -> [u8; 32] {
        self.tree.root()
    }

    /// The root of the tree of the first `tree_size` entries.
    pub fn root_at(&self, tree_size: u64) -> Result<[u8; 32], AuditError> {
        self.tree.root_at(tree_size).ok_or_else(|| {
            AuditError::OutOfRange(format!(
                "no tree of size {tree_size}: the log holds {}",
                self.size()
            ))
        })
    }

    /// The leaf hash of entry `index`.
    pub fn leaf(&self, index: u64) -> Option<[u8; 32]> {
        self.tree.leaf(index)
    }

    /// Reads entry `index` back from the file (checked against the leaf held in memory).
    pub fn entry(&self, index: u64) -> Result<Entry, AuditError> {
        let i = usize::try_from(index)
            .ok()
            .filter(|i| *i < self.offsets.len())
            .ok_or_else(|| {
                AuditError::OutOfRange(format!("no entry {index}: the log holds {}", self.size()))
            })?;
        let start = self.offsets[i];
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.entries_len);
        let path = &self.entries_path;
        let file = File::open(path).map_err(io(path))?;
        let mut buf = vec![0u8; usize::try_from(end - start).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, start).map_err(io(path))?;
        let changed = |reason: String| AuditError::Changed {
            path: path.clone(),
            reason: format!("entry {index}: {reason}"),
        };
        let body = buf
            .strip_suffix(b"\n")
            .ok_or_else(|| changed("its line no longer ends where it did".into()))?;
        let d = decode_line(body).map_err(|p| changed(p.to_string()))?;
        if d.index != index || Some(d.leaf) != self.leaf(index) {
            return Err(changed(
                "the line on disk is not the entry the log holds (edited since opening)".into(),
            ));
        }
        Ok(d.entry)
    }

    /// The inclusion proof of entry `index` in the tree of the first `tree_size` entries.
    pub fn prove_inclusion(&self, index: u64, tree_size: u64) -> Result<Vec<[u8; 32]>, AuditError> {
        self.tree.inclusion_proof(index, tree_size).ok_or_else(|| {
            AuditError::OutOfRange(format!(
                "no inclusion proof of entry {index} in a tree of {tree_size}: the log holds {}",
                self.size()
            ))
        })
    }

    /// The consistency proof from the tree of `old_size` entries to the tree of `new_size`.
    pub fn prove_consistency(&self, old_size: u64, new_size: u64) -> Result<Vec<[u8; 32]>, AuditError> {
        self.tree.consistency_proof(old_size, new_size).ok_or_else(|| {
            AuditError::OutOfRange(format!(
                "no consistency proof from {old_size} to {new_size}: the log holds {}",
                self.size()
            ))
        })
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// [`key_id`] of the signing key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of checkpoints in `checkpoints.jsonl`.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }

    pub fn latest_checkpoint(&self) -> Option<&Checkpoint> {
        self.latest_checkpoint.as_ref()
    }

    /// What opening cut off (torn last lines).
    pub fn repaired(&self) -> Repaired {
        self.repaired
    }

    /// Whether a failed write closed the log for writing.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

/// Reads and parses `checkpoints.jsonl` in `dir` (a torn last line is left out), without
/// verifying signatures or roots: [`crate::verify_dir`] does that.
pub fn checkpoints(dir: &Path) -> Result<Vec<Checkpoint>, AuditError> {
    Ok(read_checkpoints(&dir.join(CHECKPOINTS_FILE))?
        .list
        .into_iter()
        .map(|(_, cp)| cp)
        .collect())
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn create_if_missing(path: &Path) -> Result<bool, AuditError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => {
            f.sync_all().map_err(io(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(AuditError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Cuts a torn tail: the file keeps its first `len` bytes.
fn cut(path: &Path, len: u64) -> Result<(), AuditError> {
    let f = OpenOptions::new().write(true).open(path).map_err(io(path))?;
    f.set_len(len).and_then(|()| f.sync_all()).map_err(io(path))
}

/// (device, inode) of `path`, which must be a regular file of `len` bytes.
fn identity(path: &Path, len: u64) -> Result<(u64, u64), AuditError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_file() || meta.len() != len {
        return Err(AuditError::Changed {
            path: path.to_owned(),
            reason: "changed while the log was being opened".into(),
        });
    }
    Ok((meta.dev(), meta.ino()))
}

/// Appends one line to the file at `path` and syncs it. The file must still be the one the
/// log opened (`id`), `len` bytes long. A failure after writing began poisons the log (and
/// the partial line is cut off if possible); a failure before leaves it as it was.
fn append_line(
    path: &Path,
    id: (u64, u64),
    len: u64,
    line: &[u8],
    poisoned: &mut bool,
) -> Result<(), AuditError> {
    let mut file = OpenOptions::new().append(true).open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    if !meta.is_file() || (meta.dev(), meta.ino()) != id || meta.len() != len {
        *poisoned = true;
        return Err(AuditError::Changed {
            path: path.to_owned(),
            reason: format!(
                "not the file the log opened (expected inode {} of {len} bytes, found inode {} \
                 of {} bytes): replaced or written by someone else",
                id.1,
                meta.ino(),
                meta.len()
            ),
        });
    }
    if let Err(source) = file.write_all(line).and_then(|()| file.sync_data()) {
        *poisoned = true;
        let _ = file.set_len(len).and_then(|()| file.sync_data());
        return Err(AuditError::Io {
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Reads a file line by line with a bounded line length, telling a torn last line (no
/// newline before the end of the file) from a complete one.
struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    /// Lines read so far (the number of the line just read, counting from 1).
    line: u64,
    /// Bytes of complete lines read so far.
    offset: u64,
    max: usize,
    buf: Vec<u8>,
}

enum Next {
    /// A complete line, without its newline, in `Lines::buf`; starts at the given offset.
    Line(u64),
    /// A torn last line of this many bytes.
    Torn(u64),
    End,
}

impl Lines {
    fn open(path: &Path, max: usize) -> Result<Lines, AuditError> {
        let file = File::open(path).map_err(io(path))?;
        let meta = file.metadata().map_err(io(path))?;
        if !meta.is_file() {
            return Err(AuditError::Changed {
                path: path.to_owned(),
                reason: "not a regular file".into(),
            });
        }
        Ok(Lines {
            reader: BufReader::new(file),
            path: path.to_owned(),
            line: 0,
            offset: 0,
            max,
            buf: Vec::new(),
        })
    }

    fn next(&mut self) -> Result<Next, std::io::Error> {
        self.buf.clear();
        // A line of `max` bytes and its newline, plus one byte to see it is longer.
        let limit = self.max as u64 + 2;
        let n = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(Next::End);
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            let start = self.offset;
            self.offset += n as u64;
            return Ok(Next::Line(start));
        }
        if (n as u64) < limit {
            // The file ended inside this line.
            return Ok(Next::Torn(n as u64));
        }
        // Longer than any line: the caller refuses it as too long.
        Ok(Next::Line(self.offset))
    }
}

pub(crate) struct EntryScan {
    pub(crate) tree: Tree,
    pub(crate) offsets: Vec<u64>,
    /// Bytes of complete lines.
    pub(crate) whole_len: u64,
    pub(crate) torn_bytes: u64,
}

/// Reads and verifies every line of an entries file (see [`decode_line`]), indexes dense from
/// 0. Tells deleted entries from reordered ones by looking for the missing index further on.
pub(crate) fn scan_entries(path: &Path) -> Result<EntryScan, AuditError> {
    let mut lines = Lines::open(path, crate::entry::LINE_BYTES_MAX)?;
    let mut tree = Tree::new();
    let mut offsets = Vec::new();
    loop {
        let start = match lines.next().map_err(io(path))? {
            Next::End => break,
            Next::Torn(bytes) => {
                return Ok(EntryScan {
                    tree,
                    offsets,
                    whole_len: lines.offset,
                    torn_bytes: bytes,
                })
            }
            Next::Line(start) => start,
        };
        let line = lines.line;
        let fail = |problem| AuditError::Entries {
            path: path.to_owned(),
            line,
            problem,
        };
        let d = decode_line(&lines.buf).map_err(fail)?;
        let expected = tree.size();
        if d.index > expected {
            return Err(fail(find_missing(&mut lines, expected, d.index)?));
        }
        if d.index < expected {
            return Err(fail(EntryProblem::Repeated {
                expected,
                found: d.index,
            }));
        }
        offsets.push(start);
        tree.push(d.leaf);
    }
    Ok(EntryScan {
        tree,
        offsets,
        whole_len: lines.offset,
        torn_bytes: 0,
    })
}

/// Looks through the rest of the file for entry `expected`: found means the entries were
/// reordered, not found means they were deleted.
fn find_missing(lines: &mut Lines, expected: u64, found: u64) -> Result<EntryProblem, AuditError> {
    loop {
        match lines.next().map_err(io(&lines.path))? {
            Next::Line(_) => {
                if line_index(&lines.buf) == Some(expected) {
                    return Ok(EntryProblem::Reordered {
                        expected,
                        found,
                        expected_at_line: lines.line,
                    });
                }
            }
            Next::Torn(_) | Next::End => {
                return Ok(EntryProblem::Deleted {
                    first: expected,
                    found,
                })
            }
        }
    }
}

pub(crate) struct CheckpointScan {
    /// Each checkpoint with its line number.
    pub(crate) list: Vec<(u64, Checkpoint)>,
    pub(crate) whole_len: u64,
    pub(crate) torn_bytes: u64,
}

pub(crate) fn read_checkpoints(path: &Path) -> Result<CheckpointScan, AuditError> {
    let mut lines = Lines::open(path, CHECKPOINT_LINE_BYTES_MAX)?;
    let mut list = Vec::new();
    let mut torn_bytes = 0;
    loop {
        match lines.next().map_err(io(path))? {
            Next::End => break,
            Next::Torn(bytes) => {
                torn_bytes = bytes;
                break;
            }
            Next::Line(_) => {}
        }
        let fail = |problem| AuditError::Checkpoints {
            path: path.to_owned(),
            line: lines.line,
            problem,
        };
        if lines.buf.len() > CHECKPOINT_LINE_BYTES_MAX {
            return Err(fail(CheckpointProblem::Unparsable(format!(
                "line longer than {CHECKPOINT_LINE_BYTES_MAX} bytes"
            ))));
        }
        let cp: Checkpoint = serde_json::from_slice(&lines.buf)
            .map_err(|e| fail(CheckpointProblem::Unparsable(e.to_string())))?;
        list.push((lines.line, cp));
    }
    Ok(CheckpointScan {
        list,
        whole_len: lines.offset,
        torn_bytes,
    })
}

/// Every checkpoint: this key, a valid signature, sizes never decreasing and within the
/// tree, and its root that of the tree at its size — shown by a consistency proof from it
/// to the head, checked with [`verify_consistency`].
pub(crate) fn check_checkpoints(
    path: &Path,
    list: &[(u64, Checkpoint)],
    key: &VerifyingKey,
    tree: &Tree,
) -> Result<(), AuditError> {
    let head = tree.size();
    let head_root = tree.root();
    let mut previous = 0u64;
    for (line, cp) in list {
        let fail = |problem| AuditError::Checkpoints {
            path: path.to_owned(),
            line: *line,
            problem,
        };
        let root = cp.verify(key).map_err(fail)?;
        if cp.tree_size < previous {
            return Err(fail(CheckpointProblem::OutOfOrder {
                tree_size: cp.tree_size,
                previous,
            }));
        }
        if cp.tree_size > head {
            return Err(fail(CheckpointProblem::BeyondLog {
                tree_size: cp.tree_size,
                entries: head,
            }));
        }
        let proof = tree
            .consistency_proof(cp.tree_size, head)
            .expect("sizes checked against the tree");
        if !verify_consistency(cp.tree_size, head, &root, &head_root, &proof) {
            return Err(fail(CheckpointProblem::RootMismatch {
                tree_size: cp.tree_size,
                verified_size: previous,
            }));
        }
        previous = cp.tree_size;
    }
    Ok(())
}
