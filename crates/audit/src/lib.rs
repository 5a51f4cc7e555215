//! kinko's tamper-evident audit log: admin actions and security events as the leaves of an
//! append-only Merkle tree hashed as RFC 6962 (Certificate Transparency) defines, with
//! checkpoints signed by an Ed25519 key, and a verifier for the whole directory.
//!
//! # Files (in the log's directory)
//!
//! - `entries.jsonl` — one entry a line:
//!   `{"index":…,"time_ns":…,"kind":…,"actor":…,"subject":…,"detail":{…},"leaf_hash":"…"}`.
//!   The leaf data of entry `i` is the same object without `leaf_hash`, written canonically
//!   (see [`Entry`]: compact, fields in that order, `detail`'s keys sorted, integers only);
//!   `leaf_hash` is `SHA-256(0x00 ‖ leaf data)` in hex. The line is exactly
//!   `leaf data` with `,"leaf_hash":"<hex>"` inserted before its final `}`, so anyone can
//!   recompute a leaf with a text editor's help and a SHA-256 tool.
//! - `checkpoints.jsonl` — one signed checkpoint a line:
//!   `{"tree_size":…,"root_hex":…,"time_ns":…,"key_id":…,"signature":…}`, the signature being
//!   Ed25519 over [`Checkpoint::signed_text`]:
//!   `"kinko-audit checkpoint v1\n{tree_size}\n{root_hex}\n{time_ns}\n"`.
//!
//! # Durability
//!
//! [`AuditLog::append`] and [`AuditLog::checkpoint`] write one line and `fdatasync` before
//! they return: an index returned is on disk, and callers refuse the action when append
//! fails. A failed write or sync poisons the log (a sync error may have lost pages the kernel
//! no longer reports): reopen it, which verifies the file again. Each append opens the file
//! by name and checks it is still the inode, and the length, the log was opened with, so a
//! file moved, replaced or written by someone else refuses appends instead of receiving them.
//! One writer per directory: the owner (the binary) holds the data-directory lock.
//!
//! # What is tamper-evident, and what is not
//!
//! Opening verifies every line (parses, canonical form, dense indexes from 0, stored leaf
//! hash recomputes) and every checkpoint (this log's key, a valid signature, sizes
//! non-decreasing and within the log, root equal to the entries' tree at that size, checked
//! with a consistency proof to the current head). A torn last line — no trailing newline,
//! a crash mid-write, never acknowledged — is cut and reported ([`AuditLog::repaired`]);
//! anything else refuses to open, naming the file, line and problem. [`verify_dir`] does the
//! same checks read-only, given only the public key, plus an inclusion proof per entry.
//!
//! The stored leaf hash is unkeyed: it catches corruption and careless edits, not someone
//! who recomputes it. What such a person cannot forge is a checkpoint: every entry below a
//! signed checkpoint's size is fixed by its root. Entries after the latest checkpoint are
//! only as good as the file ([`VerifyReport::unsigned_entries`] says how many), and deleting
//! checkpoint lines from the end of `checkpoints.jsonl` together with the entries they
//! covered is only detectable against a checkpoint kept elsewhere: [`witness`] holds the
//! signer's cosignatures of checkpoints, which the host cannot make, and the check of a log
//! against them.
//!
//! The proofs bind leaves and roots, not tree sizes (no RFC 6962 hash encodes the size): a
//! proof verified for one size can verify for another whose proof has the same shape. The
//! sizes a verifier trusts come from signed checkpoints.
#![forbid(unsafe_code)]

mod entry;
mod key;
mod log;
mod merkle;
mod verify;
pub mod witness;

pub use entry::{Entry, DETAIL_BYTES_MAX, DETAIL_DEPTH_MAX, FIELD_BYTES_MAX, LINE_BYTES_MAX};
pub use key::{key_id, load_or_create_key, parse_public_key, public_key_hex};
pub use log::{checkpoints, AuditLog, Checkpoint, Repaired, CHECKPOINTS_FILE, ENTRIES_FILE};
pub use merkle::{
    consistency_proof, inclusion_proof, leaf_hash, node_hash, root, verify_consistency, verify_inclusion,
    EMPTY_ROOT, PROOF_HASHES_MAX,
};
pub use verify::{verify_dir, VerifyReport, INCLUSION_PROOFS_MAX};

use std::path::PathBuf;

/// Everything the audit log refuses, and why.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A field of an entry is over its limit (callers refuse the action).
    #[error("{field} is {bytes} bytes, more than the {max} allowed")]
    TooLarge {
        field: &'static str,
        bytes: usize,
        max: usize,
    },
    /// An entry that cannot be written: `detail` not an object, floats, nested too deeply.
    #[error("invalid entry: {0}")]
    InvalidEntry(String),
    /// `entries.jsonl` is damaged or was tampered with; `line` counts from 1.
    #[error("{}, line {line}: {problem}", path.display())]
    Entries {
        path: PathBuf,
        line: u64,
        problem: EntryProblem,
    },
    /// `checkpoints.jsonl` is damaged, was tampered with, or disagrees with the entries;
    /// `line` counts from 1.
    #[error("{}, line {line}: {problem}", path.display())]
    Checkpoints {
        path: PathBuf,
        line: u64,
        problem: CheckpointProblem,
    },
    /// A file changed under the open log (replaced, moved, written by someone else).
    #[error("{}: {reason}", path.display())]
    Changed { path: PathBuf, reason: String },
    #[error("an earlier write failed; reopen the log (which verifies it) before writing again")]
    Poisoned,
    #[error("key file {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("bad public key: {0}")]
    BadPublicKey(String),
    /// A proof, root or entry asked for beyond the tree.
    #[error("{0}")]
    OutOfRange(String),
}

/// What is wrong with a line of `entries.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("line longer than {max} bytes")]
    TooLong { max: usize },
    #[error("not an entry line: {0}")]
    Unparsable(String),
    #[error("entry breaks the limits: {0}")]
    Invalid(String),
    #[error("not in the canonical form this log writes (edited by hand)")]
    NotCanonical,
    #[error("entry {index} was edited: its contents do not match its stored leaf hash")]
    Edited { index: u64 },
    #[error("entries {first}..{found} are missing (deleted): index {found} where {first} was expected")]
    Deleted { first: u64, found: u64 },
    #[error(
        "entries are out of order: index {found} where {expected} was expected \
         (entry {expected} is on line {expected_at_line})"
    )]
    Reordered {
        expected: u64,
        found: u64,
        expected_at_line: u64,
    },
    #[error(
        "index {found} where {expected} was expected: entry {found} appears twice or was moved \
         back (inserted or reordered)"
    )]
    Repeated { expected: u64, found: u64 },
    #[error("entry {index}'s inclusion proof does not verify against the head")]
    InclusionFailed { index: u64 },
}

/// What is wrong with a line of `checkpoints.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointProblem {
    #[error("not a checkpoint line: {0}")]
    Unparsable(String),
    #[error("signed by another key (key id {found}; this log's key id is {expected})")]
    OtherKey { found: String, expected: String },
    #[error("bad signature (forged, or the checkpoint was edited after signing)")]
    BadSignature,
    #[error(
        "tree size {tree_size} is below the {previous} of the checkpoint before it \
         (checkpoints reordered or edited)"
    )]
    OutOfOrder { tree_size: u64, previous: u64 },
    #[error(
        "signed for {tree_size} entries but the log holds {entries}: \
         entries {entries}..{tree_size} were deleted"
    )]
    BeyondLog { tree_size: u64, entries: u64 },
    #[error(
        "root differs from the tree of the first {tree_size} entries (consistency proof to the \
         head fails): entries in {verified_size}..{tree_size} were edited, deleted, inserted or \
         reordered after this checkpoint was signed, or the log forked"
    )]
    RootMismatch { tree_size: u64, verified_size: u64 },
}
