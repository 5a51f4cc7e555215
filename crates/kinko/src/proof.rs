//! `kinko proof build` and `kinko proof user`: the proof of liabilities (docs/design/proofs.md),
//! built from one engine state at one sequence and signed by the signer's witness key when a
//! witness is configured (socket and `witness.public_key`), by the audit key otherwise; and
//! `kinko bench proof`, its measurement.

use crate::config::Config;
use crate::serve::{self, DataDirLock};
use anyhow::{bail, Context};
use kinko_api::proofs::{newest_set, read_roots, read_tree, write_set};
use kinko_core::ledger::Owner;
use kinko_core::AssetId;
use kinko_core::Engine;
use kinko_journal::SnapshotStore;
use kinko_verify::tree::{build, salt, sign_root, LeafInput, Tree};
use kinko_verify::{Root, Roots, KEY_AUDIT, KEY_WITNESS, ROOTS_FORMAT, VERSION};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The master-key purpose the per-user salts are derived under.
pub const SALT_PURPOSE: &str = "proof-of-liabilities salts";

/// Where `kinko serve` looks for published proof sets.
pub fn proofs_dir(config: &Config) -> PathBuf {
    config.data_dir.join("proofs")
}

/// Every asset's customers: (code, decimals, leaves). A customer's balance is the account's
/// total (held funds included): credits − debits, negative if the ledger ever said so.
pub fn customer_leaves(
    engine: &Engine,
    secret: &[u8; 32],
) -> anyhow::Result<Vec<(String, u8, Vec<LeafInput>)>> {
    let seq = engine.last_seq();
    let mut by_asset: BTreeMap<AssetId, Vec<LeafInput>> = BTreeMap::new();
    for acc in engine.ledger().accounts() {
        let Owner::Customer(user) = acc.owner else {
            continue;
        };
        let code = engine
            .asset(acc.asset)
            .with_context(|| format!("an account of unknown asset {}", acc.asset))?
            .code
            .as_str();
        let balance = if acc.credits >= acc.debits {
            i128::try_from(acc.credits - acc.debits)
        } else {
            i128::try_from(acc.debits - acc.credits).map(|d| -d)
        }
        .map_err(|_| anyhow::anyhow!("user {} has a {code} balance beyond 2^127: refused", user.0))?;
        by_asset.entry(acc.asset).or_default().push(LeafInput {
            user: user.0,
            salt: salt(secret, code, seq, user.0),
            balance,
        });
    }
    Ok(engine
        .assets()
        .iter()
        .filter_map(|a| {
            let id = engine.asset_by_code(a.code.as_str())?;
            Some((
                a.code.as_str().to_owned(),
                a.decimals,
                by_asset.remove(&id).unwrap_or_default(),
            ))
        })
        .collect())
}

/// Who signs a proof set's roots.
pub enum RootSigner {
    /// The audit checkpoint key: no witness signer is configured.
    Audit(ed25519_dalek::SigningKey),
    /// The signer as witness (`sign_liabilities_root`): its answer must verify with the
    /// configured `witness.public_key`. `journal` is the journal's head at the snapshot's
    /// sequence, which the signer witnesses first if it has not cosigned that far.
    Witness {
        socket: PathBuf,
        key: ed25519_dalek::VerifyingKey,
        journal: kinko_signer_proto::protocol::JournalHead,
    },
}

impl RootSigner {
    /// Signs `root` (its statement fields set, `key`, `public_key` and `signature` empty).
    /// A witness's refusal, an unreachable signer or a signature that does not verify with
    /// the configured key is an error naming the cause: never a fallback to the audit key.
    pub fn sign(&self, root: &mut Root) -> anyhow::Result<()> {
        match self {
            RootSigner::Audit(key) => sign_root(root, KEY_AUDIT, key).map_err(|e| anyhow::anyhow!("{e}")),
            RootSigner::Witness { socket, key, journal } => witness_sign(socket, key, *journal, root),
        }
    }

    /// "the audit key …" / "the signer's witness key …", with the public key.
    pub fn describe(&self) -> String {
        match self {
            RootSigner::Audit(key) => format!(
                "the audit key {} (no witness signer configured: [witness] public_key and a signer socket)",
                key_hex(key)
            ),
            RootSigner::Witness { socket, key, .. } => format!(
                "the signer's witness key {} (at {})",
                kinko_verify::to_hex(key.as_bytes()),
                socket.display()
            ),
        }
    }
}

/// How long the witness signer may take to answer one root.
const WITNESS_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks the witness signer to sign `root` and checks the answer against `expected`.
fn witness_sign(
    socket: &Path,
    expected: &ed25519_dalek::VerifyingKey,
    journal: kinko_signer_proto::protocol::JournalHead,
    root: &mut Root,
) -> anyhow::Result<()> {
    use kinko_signer_proto::{Request, Response, SignerClient};
    let mut client = SignerClient::connect_with_timeout(socket, WITNESS_CALL_TIMEOUT).with_context(|| {
        format!(
            "SIGNER_UNREACHABLE: cannot reach the witness signer at {}",
            socket.display()
        )
    })?;
    let answer = client
        .call(&Request::SignLiabilitiesRoot {
            asset: root.asset.clone(),
            decimals: root.decimals,
            sequence: root.sequence,
            time: root.time.clone(),
            leaves: root.leaves,
            root_hash: root.root_hash.clone(),
            total: root.total.clone(),
            journal: Some(journal),
        })
        .map_err(|e| anyhow::anyhow!("SIGNER_UNREACHABLE: the witness signer: {e}"))?;
    let (key, public_key, signature) = match answer {
        Response::LiabilitiesRootSigned {
            key,
            public_key,
            signature,
        } => (key, public_key, signature),
        Response::Refused { code, reason, .. }
        | Response::Error {
            code,
            message: reason,
        } => {
            bail!("{code}: the witness signer refused the root: {reason}")
        }
        other => bail!("the witness signer answered {other:?}"),
    };
    let want = kinko_verify::to_hex(expected.as_bytes());
    anyhow::ensure!(
        key == KEY_WITNESS,
        "the witness signer signed as key {key:?}, not \"witness\""
    );
    anyhow::ensure!(
        public_key == want,
        "KEY_MISMATCH: the witness signer signed with key {public_key}, not the configured witness.public_key {want}"
    );
    root.key = key;
    root.public_key = public_key;
    root.signature = signature;
    kinko_verify::verify_root(root).map_err(|e| anyhow::anyhow!("the witness signer's signature: {e}"))?;
    Ok(())
}

/// The signer of `config`'s roots: the witness when a socket and `witness.public_key` are
/// configured, the audit key otherwise.
fn root_signer(
    config: &Config,
    journal: kinko_signer_proto::protocol::JournalHead,
) -> anyhow::Result<RootSigner> {
    match (config.witness_socket(), config.witness_key()?) {
        (Some(socket), Some(key)) => Ok(RootSigner::Witness { socket, key, journal }),
        _ => Ok(RootSigner::Audit(serve::audit_key(config)?)),
    }
}

/// Builds and signs every asset's tree from one engine state.
pub fn build_set(
    engine: &Engine,
    secret: &[u8; 32],
    signer: &RootSigner,
) -> anyhow::Result<(Roots, BTreeMap<String, Tree>)> {
    let seq = engine.last_seq();
    let ts = engine.last_timestamp_ns();
    let time = kinko_api::wire::rfc3339(ts);
    let mut roots = Vec::new();
    let mut trees = BTreeMap::new();
    for (code, decimals, leaves) in customer_leaves(engine, secret)? {
        let tree = build(leaves).map_err(|e| anyhow::anyhow!("{code}: {e}"))?;
        let mut root = tree.unsigned_root(&code, decimals, seq, &time);
        signer
            .sign(&mut root)
            .map_err(|e| anyhow::anyhow!("{code}: {e:#}"))?;
        roots.push(root);
        trees.insert(code, tree);
    }
    Ok((
        Roots {
            format: ROOTS_FORMAT.into(),
            version: VERSION,
            roots,
        },
        trees,
    ))
}

/// The salt secret, derived from the master key.
fn salt_secret(config: &Config) -> anyhow::Result<[u8; 32]> {
    let vault = match std::env::var("KINKO_MASTER_KEY") {
        Ok(hex) => kinko_api::vault::Vault::from_hex(hex.trim()).context("KINKO_MASTER_KEY")?,
        Err(_) => kinko_api::vault::Vault::load_or_create(&config.api.master_key_file, false)
            .context("the master key is needed to derive the customers' salts")?,
    };
    Ok(vault.subkey(SALT_PURPOSE))
}

/// `kinko proof build`: a snapshot at one committed sequence (the running server's, or
/// recovered offline), every asset's tree over it, signed, written as a proof set.
pub fn build_cmd(config: &Config, out: Option<PathBuf>, timeout_s: u64) -> anyhow::Result<()> {
    let secret = salt_secret(config)?;
    // Read the configuration before the snapshot: a bad witness key fails early.
    config.witness_key()?;
    let engine_config = config.engine_config();
    let snap_path = match DataDirLock::acquire(&config.data_dir) {
        Ok(_lock) => {
            serve::offline_snapshot(config)?
                .context("the journal is empty: there are no liabilities to prove")?
                .0
        }
        Err(_) => serve::server_snapshot(config, timeout_s)?.0,
    };
    let (engine, journal_hash) = load_snapshot(&engine_config.snapshot_dir(), &snap_path)?;
    let signer = root_signer(
        config,
        kinko_signer_proto::protocol::JournalHead {
            seq: engine.last_seq(),
            hash: journal_hash,
            epoch: None,
        },
    )?;
    let (roots, trees) = build_set(&engine, &secret, &signer)?;
    let dest = out.unwrap_or_else(|| proofs_dir(config).join(engine.last_seq().to_string()));
    if dest.exists() {
        bail!(
            "{} exists already: a proof set goes into a new directory",
            dest.display()
        );
    }
    write_set(&dest, &roots, &trees).with_context(|| format!("cannot write {}", dest.display()))?;
    println!(
        "proof of liabilities at sequence {} in {}",
        engine.last_seq(),
        dest.display()
    );
    for r in &roots.roots {
        println!(
            "{:<6} customers {:>8}  total {}  root {}",
            r.asset,
            r.leaves,
            kinko_verify::format_units(kinko_verify::parse_amount("total", &r.total)?, r.decimals),
            r.root_hash
        );
    }
    println!("signed by {}", signer.describe());
    Ok(())
}

fn key_hex(key: &ed25519_dalek::SigningKey) -> String {
    kinko_verify::to_hex(key.verifying_key().as_bytes())
}

/// The engine in the snapshot file `path` (written just now into `dir`), checked against its
/// header, and the hash of the journal record at its sequence.
fn load_snapshot(dir: &Path, path: &Path) -> anyhow::Result<(Engine, [u8; 32])> {
    let store = SnapshotStore::reader(dir.to_owned());
    let name = path.file_name().context("a snapshot path names no file")?;
    let seq = store
        .list()?
        .into_iter()
        .find(|(p, _)| p.file_name() == Some(name))
        .with_context(|| format!("snapshot {} is gone", path.display()))?
        .1
        .map_err(|e| anyhow::anyhow!("snapshot {} does not verify: {e}", path.display()))?
        .seq;
    let latest = store.latest_valid_at_most(seq)?;
    let (meta, payload) = latest.found.context("the snapshot does not verify")?;
    anyhow::ensure!(meta.seq == seq, "snapshot {} does not verify", path.display());
    let engine = Engine::from_snapshot_bytes(&payload)
        .map_err(|e| anyhow::anyhow!("the snapshot does not load: {e}"))?;
    anyhow::ensure!(
        engine.state_hash() == meta.state_hash && engine.last_seq() == meta.seq,
        "the snapshot does not match its own header"
    );
    Ok((engine, meta.journal_hash))
}

/// `kinko proof user ID ASSET`: one customer's inclusion proof from a set (default: the newest
/// under `<data_dir>/proofs`), as JSON on stdout.
pub fn user_cmd(config: &Config, set: Option<PathBuf>, user: u64, asset: &str) -> anyhow::Result<()> {
    let set = match set {
        Some(s) => s,
        None => newest_set(&proofs_dir(config))?,
    };
    let roots = read_roots(&set)?;
    let asset = asset.to_ascii_uppercase();
    let root = roots
        .roots
        .iter()
        .find(|r| r.asset == asset)
        .with_context(|| format!("the proof set has no {asset} tree"))?;
    let tree = read_tree(&set, &roots, &asset)?;
    let proof = tree
        .proof(root, user)
        .with_context(|| format!("user {user} has no {asset} leaf in this proof"))?;
    println!("{}", serde_json::to_string_pretty(&proof)?);
    Ok(())
}

/// `kinko bench proof`: builds one asset's tree over `accounts` customers with random-looking
/// balances, signs it and cuts one proof; prints the time of each step and the peak memory.
pub fn bench(accounts: u64) -> anyhow::Result<()> {
    use std::time::Instant;
    let secret = [0x5a; 32];
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x11; 32]);
    let t0 = Instant::now();
    let mut leaves = Vec::with_capacity(usize::try_from(accounts)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for user in 1..=accounts {
        // xorshift: balances up to ~1.8e10 minor units, some zero.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        leaves.push(LeafInput {
            user,
            salt: salt(&secret, "LTC", 1, user),
            balance: i128::from(x % 18_000_000_000),
        });
    }
    let salted = t0.elapsed();
    let t1 = Instant::now();
    let tree = build(leaves).map_err(|e| anyhow::anyhow!("{e}"))?;
    let built = t1.elapsed();
    let t2 = Instant::now();
    let mut root = tree.unsigned_root("LTC", 8, 1, "1970-01-01T00:00:00.000000Z");
    sign_root(&mut root, KEY_AUDIT, &key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let proof = tree.proof(&root, accounts / 2).context("no proof")?;
    kinko_verify::verify(&proof, &kinko_verify::Expect::default())?;
    let signed = t2.elapsed();
    println!("proof of liabilities: {accounts} accounts, one asset");
    println!("salts + leaves        {:>8.3} s", salted.as_secs_f64());
    println!("tree (sort + hashes)  {:>8.3} s", built.as_secs_f64());
    println!("sign + one proof      {:>8} µs", signed.as_micros());
    println!("total                 {:>8.3} s", t0.elapsed().as_secs_f64());
    println!("peak memory (VmHWM)   {}", peak_memory());
    println!("path length           {} steps", proof.path.len());
    Ok(())
}

fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// One asset's line of the reserves report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReserveLine {
    pub asset: String,
    pub decimals: u8,
    /// The signed total of customer balances (the proof of liabilities' root).
    pub liabilities: u128,
    /// Hot and cold on the node, where a custody service holds the asset on a chain.
    pub hot: Option<u128>,
    pub cold: Option<u128>,
    /// Why the balances are not known, where they are not.
    pub unproven: Option<String>,
    /// The hot key's proof of control (message, key, signature), verified, where a signer
    /// holds the asset; else why not.
    pub hot_control: Option<(String, String, String)>,
    pub hot_unproven: Option<String>,
    /// The cold keyholders' proof of control at this proof's sequence (`kinko proof
    /// cold-submit`), checked again; else why not.
    pub cold_control: Option<kinko_chain::control::ColdProof>,
    pub cold_unproven: Option<String>,
}

/// Covered, short or not proven: per asset, never in total (a surplus in one asset covers
/// nothing in another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    Covered { surplus: u128 },
    Short { missing: u128 },
    Unproven,
}

impl ReserveLine {
    /// Short whenever the node holds less than the liabilities (hot and cold together, proven
    /// or not); covered when the balances whose control is proven (hot by the signer, cold by
    /// a threshold of keyholders at this sequence) reach the liabilities; otherwise not proven.
    pub fn coverage(&self) -> Coverage {
        let (Some(hot), Some(cold)) = (self.hot, self.cold) else {
            return Coverage::Unproven;
        };
        if let Some(held) = hot.checked_add(cold) {
            if held < self.liabilities {
                return Coverage::Short {
                    missing: self.liabilities - held,
                };
            }
        }
        if self.unproven.is_some() {
            return Coverage::Unproven;
        }
        let hot = if self.hot_control.is_some() { hot } else { 0 };
        let cold = if self.cold_control.is_some() { cold } else { 0 };
        match hot.checked_add(cold) {
            // Reserves above 2^128 cover anything.
            None => Coverage::Covered { surplus: u128::MAX },
            Some(r) if r >= self.liabilities => Coverage::Covered {
                surplus: r - self.liabilities,
            },
            Some(_) => Coverage::Unproven,
        }
    }

    /// Why not proven: the balances, else each key whose control is not proven.
    fn why_unproven(&self) -> String {
        if let Some(why) = &self.unproven {
            return why.clone();
        }
        let keys: Vec<&str> = [&self.hot_unproven, &self.cold_unproven]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if keys.is_empty() {
            "no custody on a chain".into()
        } else {
            keys.join("; ")
        }
    }

    /// Who proved control of what: "the signer" for the hot key, "N of M keyholders at
    /// sequence S" for the cold multisig.
    pub fn proven_by(&self) -> (Option<String>, Option<String>) {
        (
            self.hot_control.as_ref().map(|_| "the signer".to_owned()),
            self.cold_control.as_ref().map(|p| {
                format!(
                    "{} of {} keyholders (threshold {}) at sequence {}",
                    p.signatures.len(),
                    p.keys.len(),
                    p.threshold,
                    p.sequence
                )
            }),
        )
    }

    /// The report's line: asset, liabilities, hot, cold, verdict.
    pub fn render(&self) -> String {
        let f = |v: u128| kinko_verify::format_units(v, self.decimals);
        let opt = |v: Option<u128>| v.map_or_else(|| "-".to_owned(), f);
        let verdict = match self.coverage() {
            Coverage::Covered { surplus } => format!("covered (surplus {})", f(surplus)),
            Coverage::Short { missing } => format!("SHORT by {}", f(missing)),
            Coverage::Unproven => format!("not proven: {}", self.why_unproven()),
        };
        format!(
            "{:<6} liabilities {}  hot {}  cold {}  {verdict}",
            self.asset,
            f(self.liabilities),
            opt(self.hot),
            opt(self.cold)
        )
    }
}

/// `kinko proof reserves`: each asset's signed liabilities (from a proof set) against the hot
/// and cold balances the running server's custody services read from their nodes now; per
/// asset covered, short or not proven, written as `reserves.json` beside the set's roots.
/// Fails (exit 1) when any asset is short.
pub fn reserves_cmd(config: &Config, set: Option<PathBuf>) -> anyhow::Result<bool> {
    let set = match set {
        Some(s) => s,
        None => newest_set(&proofs_dir(config))?,
    };
    let roots = read_roots(&set)?;
    let mut lines = Vec::new();
    for r in &roots.roots {
        let liabilities = kinko_verify::parse_amount("total", &r.total)?;
        let mut line = ReserveLine {
            asset: r.asset.clone(),
            decimals: r.decimals,
            liabilities,
            hot: None,
            cold: None,
            unproven: None,
            hot_control: None,
            hot_unproven: None,
            cold_control: None,
            cold_unproven: None,
        };
        match crate::admin::node_balances(config, &r.asset)? {
            Ok((hot, cold)) => {
                let units = |s: &str| {
                    kinko_core::Amount::from_decimal(s, r.decimals)
                        .map(|a| a.0)
                        .map_err(|e| anyhow::anyhow!("{}: node balance {s:?}: {e:?}", r.asset))
                };
                line.hot = Some(units(&hot)?);
                line.cold = Some(units(&cold)?);
            }
            Err(why) => line.unproven = Some(format!("no node balance ({why})")),
        }
        if line.unproven.is_none() {
            match hot_control(config, r) {
                Ok(c) => line.hot_control = Some(c),
                Err(e) => line.hot_unproven = Some(format!("no proof of control of the hot key: {e:#}")),
            }
            match crate::cold_control::kept(config, &set, r) {
                Ok(p) => line.cold_control = Some(p),
                Err(e) => line.cold_unproven = Some(format!("no proof of control of the cold keys: {e:#}")),
            }
        }
        lines.push(line);
    }
    println!(
        "reserves against the proof of liabilities at sequence {} ({})",
        roots.roots.first().map_or(0, |r| r.sequence),
        set.display()
    );
    for l in &lines {
        println!("{}", l.render());
        if let Some((_, key, _)) = &l.hot_control {
            println!("       hot key control verified: {key}");
        }
        if let (_, Some(by)) = l.proven_by() {
            println!("       cold keys control verified: {by}");
        }
    }
    let short: Vec<&str> = lines
        .iter()
        .filter(|l| matches!(l.coverage(), Coverage::Short { .. }))
        .map(|l| l.asset.as_str())
        .collect();
    let report = serde_json::json!({
        "format": "kinko-reserves",
        "version": 1,
        "sequence": roots.roots.first().map(|r| r.sequence),
        "assets": lines.iter().map(|l| serde_json::json!({
            "asset": l.asset,
            "decimals": l.decimals,
            "liabilities": l.liabilities.to_string(),
            "hot": l.hot.map(|v| v.to_string()),
            "cold": l.cold.map(|v| v.to_string()),
            "hot_control": l.hot_control.as_ref().map(|(message, key, signature)| serde_json::json!({
                "message": message, "key": key, "signature": signature,
            })),
            "hot_proven_by": l.proven_by().0,
            "cold_control": l.cold_control,
            "cold_proven_by": l.proven_by().1,
            "not_proven": matches!(l.coverage(), Coverage::Unproven).then(|| l.why_unproven()),
            "coverage": match l.coverage() {
                Coverage::Covered { .. } => "covered",
                Coverage::Short { .. } => "short",
                Coverage::Unproven => "unproven",
            },
        })).collect::<Vec<_>>(),
    });
    let path = set.join("reserves.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if short.is_empty() {
        println!("verdict: no asset is short");
        Ok(true)
    } else {
        println!("verdict: SHORT in {}", short.join(", "));
        Ok(false)
    }
}

/// Asks the asset's signer to prove control of the hot key over the message binding the asset,
/// the proof's sequence and a nonce (the asset's liabilities root hash: unknown before that
/// sequence), and checks the answer: exactly that message, the configured hot key, a valid
/// signature.
fn hot_control(config: &Config, root: &kinko_verify::Root) -> anyhow::Result<(String, String, String)> {
    use kinko_chain::control::{control_message, verify_control};
    use kinko_signer_proto::{Request, Response, SignerClient};
    let c = config
        .custody
        .iter()
        .find(|c| c.asset == root.asset)
        .context("no [[custody]] section for the asset")?;
    let hot: kinko_chain::keys::WatchKey = c
        .hot_key
        .parse()
        .map_err(|e| anyhow::anyhow!("custody hot_key: {e}"))?;
    let nonce = kinko_verify::from_hex::<32>("root_hash", &root.root_hash)?;
    let want = control_message(&root.asset, root.sequence, &nonce)?;
    let mut client = SignerClient::connect_with_timeout(&c.signer_socket, std::time::Duration::from_secs(10))
        .with_context(|| format!("cannot reach the signer at {}", c.signer_socket.display()))?;
    let answer = client
        .call(&Request::ProveControl {
            asset: root.asset.clone(),
            sequence: root.sequence,
            nonce,
        })
        .map_err(|e| anyhow::anyhow!("the signer: {e}"))?;
    let Response::ControlProof {
        message,
        key,
        signature,
    } = answer
    else {
        bail!("the signer answered {answer:?}");
    };
    anyhow::ensure!(message == want, "the signer signed another message: {message:?}");
    anyhow::ensure!(
        key.parse::<kinko_chain::keys::WatchKey>().ok().as_ref() == Some(&hot),
        "the signer proved control of {key}, not of the configured hot key"
    );
    verify_control(&hot, &message, &signature)?;
    Ok((message, key, signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(asset: &str, liabilities: u128, reserves: Option<(u128, u128)>) -> ReserveLine {
        ReserveLine {
            asset: asset.into(),
            decimals: 8,
            liabilities,
            hot: reserves.map(|r| r.0),
            cold: reserves.map(|r| r.1),
            unproven: None,
            hot_control: Some(("message".into(), "key".into(), "signature".into())),
            hot_unproven: None,
            cold_control: Some(kinko_chain::control::ColdProof {
                format: kinko_chain::control::COLD_PROOF_FORMAT.into(),
                version: 1,
                asset: asset.into(),
                sequence: 1,
                nonce: "00".repeat(32),
                threshold: 2,
                keys: vec![],
                message: "message".into(),
                signatures: vec![],
            }),
            cold_unproven: None,
        }
    }

    /// One asset short while the sum over assets is covered: reported short, per asset.
    #[test]
    fn one_asset_short_is_reported_even_when_the_total_is_covered() {
        let lines = [
            line("LTC", 1_000, Some((100, 850))),
            line("BTC", 10, Some((5_000, 5_000))),
            line("USD", 7, None),
        ];
        let liabilities: u128 = lines.iter().map(|l| l.liabilities).sum();
        let reserves: u128 = lines.iter().filter_map(|l| Some(l.hot? + l.cold?)).sum();
        assert!(reserves > liabilities, "the total is covered");
        assert_eq!(lines[0].coverage(), Coverage::Short { missing: 50 });
        assert!(
            lines[0].render().contains("SHORT by 0.00000050"),
            "{}",
            lines[0].render()
        );
        assert_eq!(lines[1].coverage(), Coverage::Covered { surplus: 9_990 });
        assert_eq!(lines[2].coverage(), Coverage::Unproven);
        // Without a proof of control enough coins are not "covered"; too few are still short.
        let mut no_control = line("LTC", 10, Some((10, 0)));
        no_control.hot_control = None;
        no_control.hot_unproven = Some("signer down".into());
        assert_eq!(no_control.coverage(), Coverage::Unproven);
        assert!(
            no_control.render().contains("not proven: signer down"),
            "{}",
            no_control.render()
        );
        no_control.hot = Some(1);
        assert_eq!(no_control.coverage(), Coverage::Short { missing: 9 });
        let mut no_balance = line("LTC", 10, Some((10, 0)));
        no_balance.unproven = Some("node down".into());
        assert_eq!(no_balance.coverage(), Coverage::Unproven);
    }

    /// The cold balance counts only with the keyholders' proof at this sequence: without it,
    /// what only the cold wallet covers is not proven; what the hot wallet alone covers is.
    #[test]
    fn the_cold_balance_counts_only_with_the_cold_proof() {
        let mut l = line("LTC", 1_000, Some((100, 900)));
        assert_eq!(l.coverage(), Coverage::Covered { surplus: 0 });
        assert!(l
            .proven_by()
            .1
            .unwrap()
            .contains("0 of 0 keyholders (threshold 2) at sequence 1"));
        l.cold_control = None;
        l.cold_unproven = Some("no proof of control of the cold keys: none submitted".into());
        assert_eq!(l.coverage(), Coverage::Unproven);
        assert!(
            l.render()
                .contains("not proven: no proof of control of the cold keys"),
            "{}",
            l.render()
        );
        l.hot = Some(1_050);
        assert_eq!(l.coverage(), Coverage::Covered { surplus: 50 });
        // Too little on the node is short, proven or not.
        l.hot = Some(50);
        assert_eq!(l.coverage(), Coverage::Short { missing: 50 });
        l.hot_control = None;
        assert_eq!(l.coverage(), Coverage::Short { missing: 50 });
        assert_eq!(
            line("X", 5, Some((2, 3))).coverage(),
            Coverage::Covered { surplus: 0 }
        );
        assert_eq!(
            line("X", 5, Some((u128::MAX, 1))).coverage(),
            Coverage::Covered { surplus: u128::MAX }
        );
    }
}
