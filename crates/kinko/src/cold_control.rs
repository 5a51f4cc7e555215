//! The cold keys' proof of control for the proof of reserves (docs/design/proofs.md): `kinko
//! proof cold-challenge` writes the file the cold keyholders sign offline (`kinko-signer
//! prove-control`); `kinko proof cold-submit` checks their signature files against the
//! configured cold multisig and the proof set's message and keeps the accepted proof beside the
//! set's roots, where `kinko proof reserves` checks it again. Refusals carry the stable codes of
//! `kinko_chain::control::ControlError`.

use crate::config::Config;
use anyhow::{anyhow, Context};
use kinko_api::proofs::{newest_set, read_roots};
use kinko_chain::control::{ColdChallenge, ColdProof, ColdSignature, ControlError};
use kinko_chain::keys::ColdKeys;
use serde::de::DeserializeOwned;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Largest signature file `cold-submit` reads (one is about 1 KiB).
const SIGNATURE_FILE_BYTES_MAX: u64 = 64 << 10;
/// Largest kept cold proof read (15 signatures and 15 keys are about 20 KiB).
const PROOF_FILE_BYTES_MAX: u64 = 256 << 10;

/// The accepted cold proof of `asset` in a proof set.
pub fn proof_file(set: &Path, asset: &str) -> PathBuf {
    set.join(format!("{asset}.cold-control.json"))
}

/// Where `cold-challenge` writes by default.
pub fn challenge_file(set: &Path, asset: &str) -> PathBuf {
    set.join(format!("{asset}.cold-challenge.json"))
}

/// The set given, or the newest under `<data_dir>/proofs`.
fn set_or_newest(config: &Config, set: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match set {
        Some(s) => Ok(s),
        None => Ok(newest_set(&crate::proof::proofs_dir(config))?),
    }
}

/// The asset's signed root in the set, and the nonce the control message binds (its root hash).
fn root_of(set: &Path, asset: &str) -> anyhow::Result<(kinko_verify::Root, [u8; 32])> {
    let roots = read_roots(set)?;
    let root = roots
        .roots
        .into_iter()
        .find(|r| r.asset == asset)
        .with_context(|| format!("the proof set {} has no {asset} root", set.display()))?;
    let nonce = kinko_verify::from_hex::<32>("root_hash", &root.root_hash)?;
    Ok((root, nonce))
}

/// The configured cold multisig of `asset`.
fn cold_keys(config: &Config, asset: &str) -> anyhow::Result<ColdKeys> {
    config
        .custody
        .iter()
        .find(|c| c.asset == asset)
        .with_context(|| format!("no [[custody]] section for {asset}: it has no cold keys"))?
        .cold()
}

fn coded(e: ControlError) -> anyhow::Error {
    anyhow!("{}: {e}", e.code())
}

/// At most `max` bytes of `path` as JSON of `T`; anything else is `BAD_FORMAT`.
fn read_json<T: DeserializeOwned>(path: &Path, max: u64, what: &str) -> anyhow::Result<T> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= max,
        "BAD_FORMAT: {} is larger than a {what} ({max} bytes)",
        path.display()
    );
    serde_json::from_slice(&bytes).map_err(|e| anyhow!("BAD_FORMAT: {} is not a {what}: {e}", path.display()))
}

/// Writes `value` as pretty JSON: into a temporary sibling, synced, then renamed.
fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    serde_json::to_writer_pretty(&mut f, value)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// `kinko proof cold-challenge ASSET`: the challenge for the asset's cold keyholders, over the
/// same message the hot key signs (asset, the set's sequence, its root hash as nonce).
pub fn challenge_cmd(
    config: &Config,
    set: Option<PathBuf>,
    asset: &str,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let set = set_or_newest(config, set)?;
    let asset = asset.to_ascii_uppercase();
    let (root, nonce) = root_of(&set, &asset)?;
    let cold = cold_keys(config, &asset)?;
    let challenge = ColdChallenge::new(&asset, root.sequence, &nonce, &cold).map_err(coded)?;
    let path = out.unwrap_or_else(|| challenge_file(&set, &asset));
    write_json(&path, &challenge)?;
    println!(
        "cold challenge for {asset} at sequence {} ({} of {} keys) written to {}",
        root.sequence,
        cold.threshold,
        cold.keys.len(),
        path.display()
    );
    println!(
        "each keyholder, offline: kinko-signer prove-control {} --keystore COLD.keystore",
        path.display()
    );
    Ok(())
}

/// `kinko proof cold-submit ASSET SIG_FILE...`: the keyholders' signatures checked against the
/// configured cold multisig and this set's message; any bad file refuses them all (its code in
/// the error); accepted, they are kept as `<ASSET>.cold-control.json` in the set.
pub fn submit_cmd(
    config: &Config,
    set: Option<PathBuf>,
    asset: &str,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let set = set_or_newest(config, set)?;
    let asset = asset.to_ascii_uppercase();
    let (root, nonce) = root_of(&set, &asset)?;
    let cold = cold_keys(config, &asset)?;
    let signatures = files
        .iter()
        .map(|f| read_json::<ColdSignature>(f, SIGNATURE_FILE_BYTES_MAX, "cold signature file"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let proof = ColdProof::accept(&asset, root.sequence, &nonce, &cold, signatures).map_err(coded)?;
    let path = proof_file(&set, &asset);
    write_json(&path, &proof)?;
    println!(
        "cold keys' control of {asset} proven at sequence {}: {} of {} keyholders signed (threshold {}); kept in {}",
        root.sequence,
        proof.signatures.len(),
        cold.keys.len(),
        cold.threshold,
        path.display()
    );
    Ok(())
}

/// For `kinko proof reserves`: the set's kept cold proof of `root`'s asset, checked again
/// against this set (a proof of another set is `WRONG_MESSAGE`) and the configured cold keys.
pub fn kept(config: &Config, set: &Path, root: &kinko_verify::Root) -> anyhow::Result<ColdProof> {
    let path = proof_file(set, &root.asset);
    if !path.exists() {
        anyhow::bail!(
            "none submitted for this proof set (kinko proof cold-challenge {0}, then kinko proof cold-submit {0})",
            root.asset
        );
    }
    let proof: ColdProof = read_json(&path, PROOF_FILE_BYTES_MAX, "cold proof")?;
    let nonce = kinko_verify::from_hex::<32>("root_hash", &root.root_hash)?;
    proof
        .check(
            &root.asset,
            root.sequence,
            &nonce,
            &cold_keys(config, &root.asset)?,
        )
        .map_err(coded)?;
    Ok(proof)
}
