//! The signer's own append-only log: one JSON object a line,
//! `{seq, time_ns, prev, entry, hash}`, where `hash` is BLAKE3 (derive-key mode, context
//! [`HASH_CONTEXT`]) over `seq` (8 bytes big-endian), `time_ns` (8 bytes big-endian), `prev`
//! (32 bytes) and the entry's JSON as this module writes it, and `prev` is the hash of the line
//! before (zeros for the first). Every append is written and `fsync`ed before the signer answers.
//!
//! Opening reads and verifies the whole chain: sequence numbers dense from 1, each `prev` the
//! hash before, each hash right. A broken chain refuses to open, naming the line. A torn last
//! line (no trailing newline: a crash during the write, before the answer was sent) is cut off
//! and reported. The file is locked (`flock`) so two signers never write one log.
//!
//! What is logged: every signing request as received ([`Entry::Request`]) and its decision
//! ([`Entry::Signed`] or [`Entry::Refused`], with [`Entry::Halted`] after a tamper refusal);
//! forwarded halts ([`Entry::HaltRequested`]), admin ceremonies ([`Entry::AdminChanged`]) and
//! alerts ([`Entry::Alerted`]);
//! each registration that changes something (a repeat that changes nothing is answered `ok`
//! without a line); refused clears, clears, refused peers, each start, and each
//! head it witnessed ([`Entry::Witnessed`]: a new head, or the same one an hour after it was
//! last logged), and each proof-of-liabilities root it signed
//! ([`Entry::SignedLiabilitiesRoot`]). Read-only requests
//! (`hello`, `status`, `clear_challenge`) leave no line.
//!
//! Nothing secret is ever written: TOTP secrets appear only sealed (under a key derived from
//! the keystore seed) and as a fingerprint; PSBTs appear only as txids and amounts.

use kinko_core::wallet::{AddressId, WithdrawalId};
use kinko_core::{AssetId, UserId};
use kinko_signer_proto::protocol::{hex_arr, hex_vec, AdminChange};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The BLAKE3 derive-key context of line hashes.
pub const HASH_CONTEXT: &str = "kinko-signer log v1";
/// Longest line read back (entries are small; anything longer is damage).
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub seq: u64,
    pub time_ns: u64,
    #[serde(with = "hex_arr")]
    pub prev: [u8; 32],
    pub entry: Entry,
    #[serde(with = "hex_arr")]
    pub hash: [u8; 32],
}

/// What was signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignedWhat {
    Withdrawal,
    Sweep,
    /// Ethereum: ETH from hot to one of our deposit addresses, the gas of a token sweep.
    GasTopup,
    /// Ethereum: the excess of ETH or a token from hot to the configured cold contract.
    ColdSweep,
    /// Ethereum: the hot key's call of the cold contract's `execute`, paying hot.
    Refill,
}

/// Which factor a signed withdrawal's proof used, kept so a proof is never accepted twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "factor", rename_all = "snake_case", deny_unknown_fields)]
pub enum FactorUse {
    Passkey {
        #[serde(with = "hex_vec")]
        credential_id: Vec<u8>,
        sign_count: u32,
    },
    Totp {
        step: u64,
    },
}

/// The proof behind a signed withdrawal: its challenge nonce, when it was issued, its factor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofUse {
    #[serde(with = "hex_arr")]
    pub nonce: [u8; 16],
    pub issued_ns: u64,
    pub factor: FactorUse,
}

/// The user's approval behind a registration or a forget: its challenge nonce (an approval is
/// good once) and the factor the signer verified it with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalUse {
    #[serde(with = "hex_arr")]
    pub nonce: [u8; 16],
    pub factor: FactorUse,
}

/// What a line records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// The server started with this configuration.
    Started {
        version: String,
        network: String,
        asset: String,
        hot: String,
        pid: u32,
        /// Bytes of a torn last line cut off while opening.
        repaired_tail_bytes: u64,
    },
    RegisteredAddress {
        user: UserId,
        address_id: AddressId,
        asset: AssetId,
        destination: String,
        /// Approved by TOTP alone: withdrawals to it count against the TOTP budget.
        #[serde(default)]
        totp_grade: bool,
        #[serde(default)]
        approval: Option<ApprovalUse>,
    },
    /// A passkey; without `approval` it is the user's first, and matures slowly.
    RegisteredPasskey {
        user: UserId,
        #[serde(with = "hex_vec")]
        credential_id: Vec<u8>,
        #[serde(with = "hex_vec")]
        public_key: Vec<u8>,
        #[serde(default)]
        approval: Option<ApprovalUse>,
    },
    /// A TOTP secret, sealed (`nonce ‖ XChaCha20-Poly1305`) under the keystore's TOTP key;
    /// `fingerprint` is a BLAKE3 fingerprint of the secret, to recognise re-registrations.
    RegisteredTotp {
        user: UserId,
        #[serde(with = "hex_vec")]
        sealed: Vec<u8>,
        #[serde(with = "hex_arr")]
        fingerprint: [u8; 32],
        #[serde(default)]
        approval: Option<ApprovalUse>,
    },
    /// Every factor of the user forgotten (written by earlier versions only).
    ForgotFactors {
        user: UserId,
    },
    /// One factor forgotten with the user's approval: the TOTP secret, or a passkey.
    ForgotFactor {
        user: UserId,
        #[serde(with = "hex_vec")]
        credential_id: Vec<u8>,
        totp: bool,
        approval: ApprovalUse,
    },
    /// A signing request as received (before the decision).
    Request {
        request: String,
        peer_uid: u32,
        withdrawal: Option<WithdrawalId>,
        user: Option<UserId>,
        amount_sats: Option<u64>,
        destination: Option<String>,
        txid: Option<String>,
    },
    Signed {
        what: SignedWhat,
        withdrawal: Option<WithdrawalId>,
        user: Option<UserId>,
        txid: String,
        /// For a withdrawal: the amount paid to the destination; for a sweep: paid to cold.
        amount_sats: u64,
        fee_sats: u64,
        destinations: Vec<String>,
        /// The same withdrawal and transaction signed again (not counted twice).
        resign: bool,
        proof: Option<ProofUse>,
        /// Approved by TOTP alone (counts against the TOTP budget).
        #[serde(default)]
        totp_grade: bool,
        /// An Ethereum signer's token withdrawal: the token's asset (its own limits, never
        /// counted with the signer's own asset). None: the signer's asset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asset: Option<kinko_core::AssetId>,
    },
    Refused {
        request: String,
        withdrawal: Option<WithdrawalId>,
        code: String,
        reason: String,
        tamper: bool,
    },
    Halted {
        reason: String,
    },
    Cleared {
        reason: String,
        /// The admins whose assertions resumed signing (none before admins were enrolled).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approvers: Vec<u64>,
    },
    /// A halt forwarded by kinko (an engine halt) or asked for by anyone on the socket.
    HaltRequested {
        reason: String,
        source: String,
    },
    /// An admin ceremony: the change and the admins who approved it (none at `init`).
    AdminChanged {
        change: AdminChange,
        approvers: Vec<u64>,
    },
    /// Something the signer's admins must hear of (refused reviews, halts, resumes, ceremonies).
    Alerted {
        alert: String,
        detail: String,
    },
    /// A connection from a uid not in the allowlist.
    PeerRefused {
        uid: u32,
    },
    /// A head of kinko's journal or audit log the signer cosigned (witness): the cosignature
    /// of `kinko_audit::witness`, kept so `kinko-signer witness export` can give it back.
    Witnessed {
        log: String,
        size: u64,
        #[serde(with = "hex_arr")]
        root: [u8; 32],
        time_s: u64,
        key_id: String,
        signature: String,
    },
    /// A proof-of-liabilities root signed with the witness key (docs/design/proofs.md): its
    /// statement's fields and the signature, so the signer's admins can see every root it
    /// vouched for.
    SignedLiabilitiesRoot {
        asset: String,
        decimals: u8,
        sequence: u64,
        time: String,
        leaves: u64,
        root_hash: String,
        total: String,
        signature: String,
    },
    /// An Ethereum transaction signed (docs/design/ethereum.md): the signing key's address,
    /// its nonce, what it pays and its fees. The nonce book is rebuilt from these lines.
    /// Amounts and fees are decimal strings (exact `u128`).
    EthSigned {
        key: String,
        nonce: u64,
        /// The token contract; none for ETH.
        token: Option<String>,
        destination: String,
        amount: String,
        max_fee_per_gas: String,
        max_priority_fee_per_gas: String,
        #[serde(with = "hex_arr")]
        unsigned_hash: [u8; 32],
        #[serde(with = "hex_arr")]
        tx_hash: [u8; 32],
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("log {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("log {path} is broken at line {line}: {reason}; refusing to start")]
    Broken {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("log entry could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("log append failed earlier; the log is closed for writing")]
    Poisoned,
}

/// The hash of a line from its parts.
pub fn line_hash(
    seq: u64,
    time_ns: u64,
    prev: &[u8; 32],
    entry: &Entry,
) -> Result<[u8; 32], serde_json::Error> {
    let json = serde_json::to_vec(entry)?;
    let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    h.update(&seq.to_be_bytes());
    h.update(&time_ns.to_be_bytes());
    h.update(prev);
    h.update(&json);
    Ok(*h.finalize().as_bytes())
}

/// An open log, locked for writing.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: Flock<File>,
    len: u64,
    seq: u64,
    last: [u8; 32],
    poisoned: bool,
}

/// A log opened and verified: the writer, every line, and what was repaired.
#[derive(Debug)]
pub struct Opened {
    pub log: Log,
    pub lines: Vec<LogLine>,
    /// Bytes of a torn last line that were cut off (0 when the file was whole).
    pub repaired_tail_bytes: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Parses and verifies complete lines (each ending in `\n`).
fn verify_lines(path: &Path, text: &[u8]) -> Result<(Vec<LogLine>, [u8; 32]), LogError> {
    let mut lines = Vec::new();
    let mut prev = [0u8; 32];
    let mut expected_seq: u64 = 1;
    for raw in text.split_inclusive(|b| *b == b'\n') {
        let broken = |reason: String| LogError::Broken {
            path: path.to_owned(),
            line: expected_seq,
            reason,
        };
        let body = raw.strip_suffix(b"\n").unwrap_or(raw);
        if body.len() > LINE_BYTES_MAX {
            return Err(broken(format!("line longer than {LINE_BYTES_MAX} bytes")));
        }
        let line: LogLine =
            serde_json::from_slice(body).map_err(|e| broken(format!("not a valid log line: {e}")))?;
        if line.seq != expected_seq {
            return Err(broken(format!(
                "sequence {} where {expected_seq} was expected",
                line.seq
            )));
        }
        if line.prev != prev {
            return Err(broken(
                "does not link to the line before (prev hash differs)".into(),
            ));
        }
        let want = line_hash(line.seq, line.time_ns, &line.prev, &line.entry)?;
        if want != line.hash {
            return Err(broken("hash does not match the line's contents".into()));
        }
        prev = line.hash;
        expected_seq = expected_seq.saturating_add(1);
        lines.push(line);
    }
    Ok((lines, prev))
}

/// The witness cosignatures a log holds, in order (what `kinko-signer witness export` prints).
pub fn cosignatures(lines: &[LogLine]) -> Vec<kinko_audit::witness::Cosignature> {
    lines
        .iter()
        .filter_map(|l| match &l.entry {
            Entry::Witnessed {
                log,
                size,
                root,
                time_s,
                key_id,
                signature,
            } => Some(kinko_audit::witness::Cosignature {
                log: log.clone(),
                size: *size,
                root: hex::encode(root),
                time_s: *time_s,
                key_id: key_id.clone(),
                signature: signature.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Reads and verifies a log without opening it for writing (a torn tail is ignored, not cut).
pub fn verify(path: &Path) -> Result<Vec<LogLine>, LogError> {
    let text = std::fs::read(path).map_err(io_err(path))?;
    let whole = match text.iter().rposition(|b| *b == b'\n') {
        Some(i) => &text[..=i],
        None => &text[..0],
    };
    Ok(verify_lines(path, whole)?.0)
}

impl Log {
    /// Opens (creating if missing, mode 0600), locks, verifies, and repairs a torn tail.
    pub fn open(path: &Path) -> Result<Opened, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
        let mut file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| LogError::Locked {
            path: path.to_owned(),
        })?;
        let mut text = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
        file.read_to_end(&mut text).map_err(io_err(path))?;
        let whole_len = match text.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        let (lines, last) = verify_lines(path, &text[..whole_len])?;
        let repaired = (text.len() - whole_len) as u64;
        if repaired > 0 {
            file.set_len(whole_len as u64).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))?;
        }
        let seq = lines.last().map_or(0, |l| l.seq);
        Ok(Opened {
            log: Log {
                path: path.to_owned(),
                file,
                len: whole_len as u64,
                seq,
                last,
                poisoned: false,
            },
            lines,
            repaired_tail_bytes: repaired,
        })
    }

    /// The sequence number of the last line (0 when empty).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and makes it durable. After a failed append the log refuses further
    /// appends (the caller must not act on an unlogged decision).
    pub fn append(&mut self, time_ns: u64, entry: Entry) -> Result<LogLine, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let seq = self.seq.checked_add(1).ok_or(LogError::Poisoned)?;
        let hash = line_hash(seq, time_ns, &self.last, &entry)?;
        let line = LogLine {
            seq,
            time_ns,
            prev: self.last,
            entry,
            hash,
        };
        let mut buf = serde_json::to_vec(&line)?;
        buf.push(b'\n');
        let res = (|| {
            self.file.seek(SeekFrom::Start(self.len))?;
            self.file.write_all(&buf)?;
            self.file.sync_data()
        })();
        if let Err(e) = res {
            // Undo a partial write if we can; either way, stop writing.
            let _ = self.file.set_len(self.len);
            self.poisoned = true;
            return Err(LogError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        self.len += buf.len() as u64;
        self.seq = seq;
        self.last = hash;
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halted(r: &str) -> Entry {
        Entry::Halted { reason: r.into() }
    }

    #[test]
    fn append_reopen_verify() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("signer.log");
        {
            let mut o = Log::open(&p).unwrap();
            assert!(o.lines.is_empty());
            o.log.append(10, halted("a")).unwrap();
            o.log
                .append(
                    11,
                    Entry::Cleared {
                        reason: "b".into(),
                        approvers: vec![],
                    },
                )
                .unwrap();
            // A second open while locked is refused.
            assert!(matches!(Log::open(&p), Err(LogError::Locked { .. })));
        }
        let o = Log::open(&p).unwrap();
        assert_eq!(o.lines.len(), 2);
        assert_eq!(o.log.seq(), 2);
        assert_eq!(o.lines[1].prev, o.lines[0].hash);
        assert_eq!(verify(&p).unwrap().len(), 2);
        let mode = std::fs::metadata(&p).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn tampered_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("signer.log");
        {
            let mut o = Log::open(&p).unwrap();
            for i in 0..3 {
                o.log.append(i, halted(&format!("reason {i}"))).unwrap();
            }
        }
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("reason 1", "reason 9")).unwrap();
        let err = Log::open(&p).unwrap_err();
        assert!(matches!(err, LogError::Broken { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
        // A deleted line breaks the sequence.
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&p, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(matches!(Log::open(&p), Err(LogError::Broken { line: 2, .. })));
    }

    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("signer.log");
        {
            let mut o = Log::open(&p).unwrap();
            o.log.append(1, halted("x")).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"seq":2,"time_ns":5,"pr"#).unwrap();
        drop(f);
        let mut o = Log::open(&p).unwrap();
        assert_eq!(o.repaired_tail_bytes, 24);
        assert_eq!(o.lines.len(), 1);
        o.log.append(2, halted("y")).unwrap();
        drop(o);
        assert_eq!(Log::open(&p).unwrap().lines.len(), 2);
    }
}
