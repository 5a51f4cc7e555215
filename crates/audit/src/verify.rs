//! [`verify_dir`]: the read-only check behind `kinko audit verify`.

use crate::log::{check_checkpoints, read_checkpoints, scan_entries, Checkpoint};
use crate::merkle::verify_inclusion;
use crate::{AuditError, EntryProblem, CHECKPOINTS_FILE, ENTRIES_FILE};
use ed25519_dalek::VerifyingKey;
use std::path::Path;

/// Most inclusion proofs `verify_dir` checks: every entry of a log up to this size, this many
/// evenly spread ones (first and last included) beyond.
pub const INCLUSION_PROOFS_MAX: u64 = 100_000;

/// What [`verify_dir`] found in a log that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    /// The tree of all entries: its size (= `entries`) and root.
    pub head_size: u64,
    pub head_root: [u8; 32],
    pub latest_checkpoint: Option<Checkpoint>,
    /// Entries after the latest checkpoint: no signature covers them yet.
    pub unsigned_entries: u64,
    pub inclusion_proofs_checked: u64,
    /// Bytes of a torn last line of each file (the next open cuts them).
    pub entries_torn_bytes: u64,
    pub checkpoints_torn_bytes: u64,
}

impl VerifyReport {
    pub fn head_root_hex(&self) -> String {
        hex::encode(self.head_root)
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "entries: {}", self.entries)?;
        writeln!(f, "checkpoints: {}", self.checkpoints)?;
        writeln!(f, "head: size {} root {}", self.head_size, self.head_root_hex())?;
        match &self.latest_checkpoint {
            Some(cp) => writeln!(
                f,
                "latest checkpoint: size {} root {} time_ns {} key {}",
                cp.tree_size, cp.root_hex, cp.time_ns, cp.key_id
            )?,
            None => writeln!(f, "latest checkpoint: none")?,
        }
        writeln!(f, "entries not yet under a checkpoint: {}", self.unsigned_entries)?;
        writeln!(f, "inclusion proofs checked: {}", self.inclusion_proofs_checked)?;
        if self.entries_torn_bytes > 0 || self.checkpoints_torn_bytes > 0 {
            writeln!(
                f,
                "torn last lines (cut at next open): entries {} bytes, checkpoints {} bytes",
                self.entries_torn_bytes, self.checkpoints_torn_bytes
            )?;
        }
        Ok(())
    }
}

/// Verifies the log in `dir` against `public_key`, changing nothing:
///
/// 1. every entry line parses, is in canonical form, and its stored leaf hash recomputes
///    (edited entries); indexes run 0, 1, 2, … (deleted, reordered or repeated entries);
/// 2. the tree is rebuilt from the recomputed leaves;
/// 3. every checkpoint names this key and its signature verifies (forged, edited or foreign
///    checkpoints); sizes never decrease and never exceed the entries (deleted tail); its root
///    is the root of the tree at its size, shown by a consistency proof from it to the head
///    (entries changed after signing, or a fork);
/// 4. an inclusion proof against the head for every entry (evenly spread
///    [`INCLUSION_PROOFS_MAX`] of them in a larger log).
///
/// The first failure is returned, naming the file, line and what failed. A torn last line
/// is not a failure (it was never acknowledged); the report counts its bytes.
pub fn verify_dir(dir: &Path, public_key: &VerifyingKey) -> Result<VerifyReport, AuditError> {
    let entries_path = dir.join(ENTRIES_FILE);
    let checkpoints_path = dir.join(CHECKPOINTS_FILE);
    let scan = scan_entries(&entries_path)?;
    let cps = read_checkpoints(&checkpoints_path)?;
    check_checkpoints(&checkpoints_path, &cps.list, public_key, &scan.tree)?;

    let tree = &scan.tree;
    let head = tree.size();
    let head_root = tree.root();
    let mut checked = 0u64;
    for index in sample(head) {
        let leaf = tree.leaf(index).expect("sampled below the size");
        let proof = tree.inclusion_proof(index, head).expect("sampled below the size");
        if !verify_inclusion(&leaf, index, head, &proof, &head_root) {
            return Err(AuditError::Entries {
                path: entries_path,
                line: index + 1,
                problem: EntryProblem::InclusionFailed { index },
            });
        }
        checked += 1;
    }

    let latest = cps.list.last().map(|(_, cp)| cp.clone());
    Ok(VerifyReport {
        entries: head,
        checkpoints: cps.list.len() as u64,
        head_size: head,
        head_root,
        unsigned_entries: head - latest.as_ref().map_or(0, |cp| cp.tree_size),
        latest_checkpoint: latest,
        inclusion_proofs_checked: checked,
        entries_torn_bytes: scan.torn_bytes,
        checkpoints_torn_bytes: cps.torn_bytes,
    })
}

/// Indexes to prove: all of `0..size` up to [`INCLUSION_PROOFS_MAX`], else that many spread
/// evenly over it, ending with the last.
fn sample(size: u64) -> impl Iterator<Item = u64> {
    let count = size.min(INCLUSION_PROOFS_MAX);
    (0..count).map(move |j| {
        if j + 1 == count {
            size - 1
        } else {
            // j·size/count < size, and fits u64 again.
            (u128::from(j) * u128::from(size) / u128::from(count)) as u64
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_all_when_small_and_spread_when_large() {
        assert_eq!(sample(0).count(), 0);
        assert_eq!(sample(5).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        let big = 10 * INCLUSION_PROOFS_MAX + 3;
        let s: Vec<u64> = sample(big).collect();
        assert_eq!(s.len() as u64, INCLUSION_PROOFS_MAX);
        assert_eq!(s[0], 0);
        assert_eq!(*s.last().unwrap(), big - 1);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        let s: Vec<u64> = sample(u64::MAX).take(3).collect();
        assert_eq!(s[0], 0);
        assert!(s[1] > 0);
    }
}
