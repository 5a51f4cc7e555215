//! `kinko backup`, `kinko backup verify`, `kinko restore`: a copy of the engine's durable state
//! that proves itself with `state_hash`.
//!
//! A backup directory holds
//!
//! ```text
//! manifest.json             what the backup is (below)
//! snapshots/<seq>.snap      one snapshot, taken for this backup
//! journal/<first seq>.seg   the whole journal from record 1 to the backup's end
//! ```
//!
//! The journal is copied whole, not only the records after the snapshot: its hash chain verifies
//! from the first record, and the state can be rebuilt from it alone if the snapshot is lost.
//!
//! **Consistency while the server runs.** The snapshot is asked of the running server (SIGUSR1,
//! as `kinko snapshot` does), so it is the state at a committed sequence `S`. Segment files
//! other than the last are never written again; the last one is copied while the sequencer may
//! be appending to it, so the copy is cut at the end of its last whole record (a half-written
//! batch is a torn tail in the copy, and is dropped), and copied again if the copy caught a
//! write in the middle. A second snapshot asked of the server afterwards proves that every
//! copied record had been made durable (the sequencer snapshots only applied commands, and
//! applies only fsync'd ones): the backup ends at a committed sequence `E >= S`. Without a
//! running server the data directory is locked for the whole copy.
//!
//! **Secrets.** A backup holds what the data directory's engine state holds: hashes of API
//! keys, sessions and recovery codes, Coinbase-style and TOTP secrets sealed under the master
//! key, passkeys' public keys, withdrawal proofs, addresses and public keys. It never holds the
//! master key (kept outside the data directory: without it the sealed secrets cannot be opened
//! and passwords cannot be checked), the audit checkpoint key, the operator token, the signer's
//! keystore, nor the rest of the data directory (audit log, witness cosignatures, mail cursor,
//! sign-in throttle) — those are backed up by their own owners (see README.md, "Running in
//! production").

use crate::config::Config;
use crate::serve::{self, DataDirLock};
use anyhow::{bail, ensure, Context};
use kinko_core::Engine;
use kinko_journal::SnapshotStore;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Version of the backup layout and manifest written by this code.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const JOURNAL: &str = "journal";
const SNAPSHOTS: &str = "snapshots";
/// Copies of the live last segment tried before giving up (each retry means a write was caught
/// in the middle).
const COPY_ATTEMPTS_MAX: u32 = 10;

/// `manifest.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// The kinko version that wrote the backup.
    pub kinko_version: String,
    /// When the backup was written (RFC 3339, UTC).
    pub created: String,
    /// The engine's state encoding version in the snapshot.
    pub state_format_version: u32,
    /// The snapshot's position: the state at this sequence.
    pub snapshot: Point,
    /// The journal's end: the state after replaying the journal to here.
    pub end: Point,
    /// Every file of the backup but the manifest, sorted by path.
    pub files: Vec<FileEntry>,
}

/// A position in the journal and the state there.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub seq: u64,
    /// Hash of journal record `seq` (hex).
    pub journal_hash: String,
    /// The engine's `state_hash` after record `seq` (hex).
    pub state_hash: String,
}

/// One file: its path inside the backup, its length and its BLAKE3 hash (hex).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub blake3: String,
}

/// `kinko backup DEST`.
pub fn backup(config: &Config, dest: &Path, timeout_s: u64) -> anyhow::Result<()> {
    if dest.exists()
        && fs::read_dir(dest)
            .with_context(|| format!("cannot read {}", dest.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: a backup goes into a new or empty directory",
            dest.display()
        );
    }
    fs::create_dir_all(dest.join(JOURNAL)).with_context(|| format!("cannot create {}", dest.display()))?;
    fs::create_dir_all(dest.join(SNAPSHOTS))?;
    let engine_config = config.engine_config();
    let live_journal = engine_config.journal_dir();
    let (snap, confirmed) = match DataDirLock::acquire(&config.data_dir) {
        Ok(_lock) => {
            let (path, _) =
                serve::offline_snapshot(config)?.context("the journal is empty: nothing to back up")?;
            let snap = copy_snapshot(&path, dest)?;
            let end = copy_journal(&live_journal, &dest.join(JOURNAL))?;
            (snap, end)
        }
        Err(_) => {
            let (path, pid) = serve::server_snapshot(config, timeout_s)?;
            tracing::info!(pid, snapshot = %path.display(), "backup: the running server wrote a snapshot");
            let snap = copy_snapshot(&path, dest)?;
            let end = copy_journal(&live_journal, &dest.join(JOURNAL))?;
            // Every record copied was durable if the server has applied it since.
            let (after, _) = serve::server_snapshot(config, timeout_s)?;
            let applied = snapshot_seq_of(&after)?;
            ensure!(
                applied >= end,
                "the copied journal ends at seq {end} but the server has applied only {applied}: not every copied record is known to be durable"
            );
            (snap, end)
        }
    };
    let replayed = replay(dest)?;
    ensure!(
        replayed.end.seq == confirmed,
        "replay ended at seq {} instead of {confirmed}",
        replayed.end.seq
    );
    let manifest = Manifest {
        format: "kinko-backup".into(),
        format_version: BACKUP_FORMAT_VERSION,
        kinko_version: env!("CARGO_PKG_VERSION").into(),
        created: kinko_api::wire::rfc3339(now_ns()),
        state_format_version: snap.format_version,
        snapshot: replayed.snapshot,
        end: replayed.end,
        files: list_files(dest)?,
    };
    let mut json = serde_json::to_string_pretty(&manifest)?;
    json.push('\n');
    write_synced(&dest.join(MANIFEST), json.as_bytes())?;
    sync_dir(dest)?;
    println!("backup {}", dest.display());
    print_summary(&manifest);
    println!(
        "ok: backup written; `kinko backup verify {}` checks it",
        dest.display()
    );
    Ok(())
}

/// `kinko backup verify DIR`: every file against the manifest, then a replay that must end at
/// the manifest's `state_hash`. Returns the manifest.
pub fn verify(dir: &Path) -> anyhow::Result<Manifest> {
    let manifest = read_manifest(dir)?;
    let found = list_files(dir)?;
    for f in &manifest.files {
        let Some(g) = found.iter().find(|g| g.path == f.path) else {
            bail!("{} is missing from the backup", f.path);
        };
        ensure!(
            g.bytes == f.bytes,
            "{} is {} bytes, the manifest says {}",
            f.path,
            g.bytes,
            f.bytes
        );
        ensure!(
            g.blake3 == f.blake3,
            "{} does not match its checksum in the manifest",
            f.path
        );
    }
    if let Some(extra) = found
        .iter()
        .find(|g| !manifest.files.iter().any(|f| f.path == g.path))
    {
        bail!("{} is in the backup but not in its manifest", extra.path);
    }
    let replayed = replay(dir)?;
    ensure!(
        replayed.snapshot == manifest.snapshot,
        "the snapshot is at seq {} with state_hash {}, the manifest says seq {} with {}",
        replayed.snapshot.seq,
        replayed.snapshot.state_hash,
        manifest.snapshot.seq,
        manifest.snapshot.state_hash
    );
    ensure!(
        replayed.end == manifest.end,
        "replay ends at seq {} with state_hash {}, the manifest says seq {} with {}",
        replayed.end.seq,
        replayed.end.state_hash,
        manifest.end.seq,
        manifest.end.state_hash
    );
    Ok(manifest)
}

/// `kinko backup verify DIR`, printed.
pub fn verify_cmd(dir: &Path) -> anyhow::Result<()> {
    let m = verify(dir).with_context(|| format!("backup {} failed verification", dir.display()))?;
    println!("backup {}", dir.display());
    print_summary(&m);
    println!("ok: every checksum verifies and replay reproduces the manifest's state_hash");
    Ok(())
}

/// `kinko restore SRC`: verifies the backup, puts its journal and snapshot into the configured
/// data directory (which must be empty, or `force`), recovers from them as `kinko serve` would,
/// and proves the result against the manifest.
pub fn restore(config: &Config, src: &Path, force: bool) -> anyhow::Result<()> {
    let manifest = verify(src).with_context(|| format!("backup {} failed verification", src.display()))?;
    let data = &config.data_dir;
    let occupied = data.exists()
        && fs::read_dir(data)
            .with_context(|| format!("cannot read {}", data.display()))?
            .flatten()
            .any(|e| e.file_name() != "LOCK");
    if occupied && !force {
        bail!(
            "data directory {} is not empty; restore into a new directory, or pass --force to replace its journal and snapshots",
            data.display()
        );
    }
    let _lock =
        DataDirLock::acquire(data).context("stop kinko serve before restoring into its data directory")?;
    let engine_config = config.engine_config();
    for (from, to) in [
        (src.join(JOURNAL), engine_config.journal_dir()),
        (src.join(SNAPSHOTS), engine_config.snapshot_dir()),
    ] {
        if to.exists() {
            fs::remove_dir_all(&to).with_context(|| format!("cannot remove {}", to.display()))?;
        }
        fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
        for e in fs::read_dir(&from)? {
            let e = e?;
            let bytes = fs::read(e.path())?;
            write_synced(&to.join(e.file_name()), &bytes)?;
        }
        sync_dir(&to)?;
    }
    sync_dir(data)?;
    let (_engine, _journal, report) =
        kinko_engine::recover(&engine_config).context("recovery of the restored data failed")?;
    serve::log_recovery(&report);
    let state_hash = hex::encode(report.state_hash);
    ensure!(
        report.head_seq == manifest.end.seq && state_hash == manifest.end.state_hash,
        "the restored data recovers to seq {} with state_hash {state_hash}, the manifest says seq {} with {}",
        report.head_seq,
        manifest.end.seq,
        manifest.end.state_hash
    );
    println!("restored {} into {}", src.display(), data.display());
    println!("head_seq    {}", report.head_seq);
    println!("state_hash  {state_hash}");
    println!("ok: the restored state_hash equals the backup manifest's");
    Ok(())
}

fn print_summary(m: &Manifest) {
    println!("kinko       {}", m.kinko_version);
    println!("created     {}", m.created);
    println!(
        "snapshot    seq {} state_hash {}",
        m.snapshot.seq, m.snapshot.state_hash
    );
    println!("end         seq {} state_hash {}", m.end.seq, m.end.state_hash);
    println!("files       {}", m.files.len());
}

fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a backup manifest", path.display()))?;
    ensure!(
        m.format == "kinko-backup",
        "{} is not a kinko backup manifest",
        path.display()
    );
    ensure!(
        m.format_version == BACKUP_FORMAT_VERSION,
        "backup format version {} is not supported (this kinko reads {BACKUP_FORMAT_VERSION})",
        m.format_version
    );
    Ok(m)
}

/// What replaying a backup directory found.
struct Replayed {
    snapshot: Point,
    end: Point,
}

/// Reads the backup's snapshot and replays its journal, touching nothing: the whole journal's
/// chain is verified first (no torn tail allowed), the snapshot must belong to it, and the
/// state after the last record must pass the audit.
fn replay(dir: &Path) -> anyhow::Result<Replayed> {
    let journal = dir.join(JOURNAL);
    let v = kinko_journal::verify(&journal).context("the backup's journal does not verify")?;
    ensure!(
        v.torn_tail.is_none(),
        "the backup's journal ends in a torn record"
    );
    let store = SnapshotStore::reader(dir.join(SNAPSHOTS));
    let list = store.list()?;
    ensure!(
        list.len() == 1,
        "a backup holds exactly one snapshot, found {}",
        list.len()
    );
    let latest = store.latest_valid()?;
    let (meta, payload) = latest.found.context("the backup's snapshot does not verify")?;
    let mut engine = Engine::from_snapshot_bytes(&payload)
        .map_err(|e| anyhow::anyhow!("the backup's snapshot does not load: {e}"))?;
    ensure!(
        engine.state_hash() == meta.state_hash && engine.last_seq() == meta.seq,
        "the backup's snapshot does not match its own header"
    );
    let at = kinko_journal::read_from(&journal, meta.seq)?.next().transpose()?;
    ensure!(
        at.map(|r| r.hash) == Some(meta.journal_hash),
        "the backup's snapshot does not belong to its journal (record {} differs)",
        meta.seq
    );
    kinko_engine::replay_journal(&mut engine, &journal)?;
    ensure!(
        engine.last_seq() == v.head_seq,
        "replay stopped at seq {} before the journal's end {}",
        engine.last_seq(),
        v.head_seq
    );
    engine
        .audit()
        .map_err(|e| anyhow::anyhow!("the replayed state fails the audit: {e}"))?;
    Ok(Replayed {
        snapshot: Point {
            seq: meta.seq,
            journal_hash: hex::encode(meta.journal_hash),
            state_hash: hex::encode(meta.state_hash),
        },
        end: Point {
            seq: v.head_seq,
            journal_hash: hex::encode(v.head_hash),
            state_hash: hex::encode(engine.state_hash()),
        },
    })
}

/// Copies a snapshot file into the backup; returns its metadata.
fn copy_snapshot(path: &Path, dest: &Path) -> anyhow::Result<kinko_journal::SnapshotMeta> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.file_name().context("snapshot path without a file name")?;
    write_synced(&dest.join(SNAPSHOTS).join(name), &bytes)?;
    sync_dir(&dest.join(SNAPSHOTS))?;
    let latest = SnapshotStore::reader(dest.join(SNAPSHOTS)).latest_valid()?;
    Ok(latest.found.context("the copied snapshot does not verify")?.0)
}

fn snapshot_seq_of(path: &Path) -> anyhow::Result<u64> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{} is not named after a sequence", path.display()))
}

/// Copies every segment of a live journal into `to`, the last one cut at the end of its last
/// whole record. Returns the copy's last sequence.
fn copy_journal(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let mut segments: Vec<PathBuf> = fs::read_dir(from)
        .with_context(|| format!("cannot read {}", from.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let Some(last) = segments.pop() else {
        bail!("{} holds no journal segment", from.display());
    };
    // Segments before the last are complete and never written again.
    for s in &segments {
        copy_file(s, &to.join(s.file_name().context("segment name")?))?;
    }
    let target = to.join(last.file_name().context("segment name")?);
    let mut why = String::new();
    for _ in 0..COPY_ATTEMPTS_MAX {
        copy_file(&last, &target)?;
        match kinko_journal::verify(to) {
            Ok(v) => {
                if let Some(t) = v.torn_tail {
                    // The remains of a batch being written: cut them off, as recovery would.
                    ensure!(
                        t.segment.file_name() == target.file_name(),
                        "a torn record outside the last segment"
                    );
                    let f = fs::OpenOptions::new().write(true).open(&target)?;
                    f.set_len(t.offset)?;
                    f.sync_all()?;
                }
                let v = kinko_journal::verify(to).context("the copied journal does not verify")?;
                ensure!(
                    v.torn_tail.is_none(),
                    "the copied journal still ends in a torn record"
                );
                sync_dir(to)?;
                return Ok(v.head_seq);
            }
            // A write landed in the middle of the copy; copy the last segment again.
            Err(e) => why = e.to_string(),
        }
    }
    bail!(
        "the journal's last segment could not be copied consistently in {COPY_ATTEMPTS_MAX} attempts: {why}"
    )
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    fs::File::open(from)
        .with_context(|| format!("cannot open {}", from.display()))?
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", from.display()))?;
    write_synced(to, &bytes)
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// Every file under `journal/` and `snapshots/`, with length and BLAKE3, sorted by path.
fn list_files(dir: &Path) -> anyhow::Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    for sub in [JOURNAL, SNAPSHOTS] {
        let d = dir.join(sub);
        for e in fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let mut hasher = blake3::Hasher::new();
            let mut f = fs::File::open(e.path())?;
            let bytes = std::io::copy(&mut f, &mut hasher)?;
            out.push(FileEntry {
                path: format!("{sub}/{name}"),
                bytes,
                blake3: hasher.finalize().to_hex().to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
