//! Proof of liabilities, published (docs/design/proofs.md): the proof sets `kinko proof build`
//! writes, read back, and the two routes that serve them.
//!
//! A proof set is a directory (by default `<data_dir>/proofs/<sequence>/`):
//!
//! ```text
//! liabilities.json        the signed roots, one per asset (public)
//! <ASSET>.leaves.jsonl    {"user","salt","balance"} per customer in leaf order (private, 0600)
//! ```
//!
//! The gateway serves the set with the highest sequence; a user's inclusion proof is cut from
//! the tree rebuilt from the leaves file (refused unless it reaches the signed root), cached
//! until a newer set appears.

use crate::auth::{Auth, Need};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Path as UrlPath;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use kinko_verify::tree::{build, LeafInput, Tree};
use kinko_verify::{from_hex, to_hex, Roots, ROOTS_FORMAT, VERSION};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The signed roots' file in a proof set.
pub const ROOTS_FILE: &str = "liabilities.json";
/// Leaves files grow to about 130 bytes per customer; one line at most this long.
const LINE_BYTES_MAX: usize = 256;

/// One line of a leaves file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LeafLine {
    pub user: u64,
    pub salt: String,
    pub balance: String,
}

/// The leaves file of `asset` in a set.
pub fn leaves_file(set: &Path, asset: &str) -> PathBuf {
    set.join(format!("{asset}.leaves.jsonl"))
}

/// Writes a proof set into `dir` (which must not exist): into a temporary sibling first, then
/// renamed, so a reader never sees half a set.
pub fn write_set(dir: &Path, roots: &Roots, trees: &BTreeMap<String, Tree>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = dir
        .file_name()
        .ok_or_else(|| std::io::Error::other("the proof set names no directory"))?;
    let mut tmp_name = std::ffi::OsString::from(".tmp-");
    tmp_name.push(name);
    let tmp = parent.join(tmp_name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp)?;
    for (asset, tree) in trees {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(leaves_file(&tmp, asset))?;
        let mut w = std::io::BufWriter::new(f);
        for (user, salt, balance) in tree.leaves() {
            serde_json::to_writer(
                &mut w,
                &LeafLine {
                    user,
                    salt: to_hex(&salt),
                    balance: balance.to_string(),
                },
            )?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let mut f = std::fs::File::create(tmp.join(ROOTS_FILE))?;
    serde_json::to_writer_pretty(&mut f, roots)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir)?;
    std::fs::File::open(parent)?.sync_all()
}

/// Why a proof set could not be read.
#[derive(Debug)]
pub enum SetError {
    None,
    Io(PathBuf, std::io::Error),
    Invalid(PathBuf, String),
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetError::None => f.write_str("no proof of liabilities has been published"),
            SetError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            SetError::Invalid(p, why) => write!(f, "{} is not a valid proof set: {why}", p.display()),
        }
    }
}

impl std::error::Error for SetError {}

/// The newest set under `dir`: the subdirectory with the highest sequence as its name that
/// holds a roots file.
pub fn newest_set(dir: &Path) -> Result<PathBuf, SetError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SetError::None),
        Err(e) => return Err(SetError::Io(dir.to_owned(), e)),
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let seq: u64 = e.file_name().to_str()?.parse().ok()?;
            e.path().join(ROOTS_FILE).is_file().then(|| (seq, e.path()))
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(_, p)| p)
        .ok_or(SetError::None)
}

/// A set's signed roots.
pub fn read_roots(set: &Path) -> Result<Roots, SetError> {
    let path = set.join(ROOTS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| SetError::Io(path.clone(), e))?;
    let roots: Roots =
        serde_json::from_slice(&bytes).map_err(|e| SetError::Invalid(path.clone(), e.to_string()))?;
    if roots.format != ROOTS_FORMAT || roots.version != VERSION {
        return Err(SetError::Invalid(
            path,
            "not kinko-liabilities-roots version 1".into(),
        ));
    }
    for r in &roots.roots {
        kinko_verify::verify_root(r)
            .map_err(|e| SetError::Invalid(path.clone(), format!("{}: {e}", r.asset)))?;
    }
    Ok(roots)
}

/// One asset's tree, rebuilt from the set's leaves file; refused unless it reaches the signed
/// root.
pub fn read_tree(set: &Path, roots: &Roots, asset: &str) -> Result<Tree, SetError> {
    let root = roots
        .roots
        .iter()
        .find(|r| r.asset == asset)
        .ok_or_else(|| SetError::Invalid(set.to_owned(), format!("no root for {asset}")))?;
    let path = leaves_file(set, asset);
    let f = std::fs::File::open(&path).map_err(|e| SetError::Io(path.clone(), e))?;
    let mut inputs = Vec::new();
    let invalid = |why: String| SetError::Invalid(path.clone(), why);
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| SetError::Io(path.clone(), e))?;
        if line.len() > LINE_BYTES_MAX {
            return Err(invalid(format!("line {} is too long", n + 1)));
        }
        let l: LeafLine = serde_json::from_str(&line).map_err(|e| invalid(format!("line {}: {e}", n + 1)))?;
        let salt = from_hex::<32>("salt", &l.salt).map_err(|e| invalid(format!("line {}: {e}", n + 1)))?;
        let balance = kinko_verify::parse_amount("balance", &l.balance)
            .ok()
            .and_then(|b| i128::try_from(b).ok())
            .ok_or_else(|| invalid(format!("line {}: bad balance", n + 1)))?;
        inputs.push(LeafInput {
            user: l.user,
            salt,
            balance,
        });
    }
    let tree = build(inputs).map_err(|e| invalid(e.to_string()))?;
    let (h, total) = tree.root();
    if to_hex(&h) != root.root_hash || total.to_string() != root.total || tree.len() != root.leaves {
        return Err(invalid(format!(
            "the leaves do not reach the signed {asset} root"
        )));
    }
    Ok(tree)
}

struct Cached {
    set: PathBuf,
    roots: Arc<Roots>,
    trees: BTreeMap<String, Arc<Tree>>,
}

/// The published proof sets the gateway serves (`Gateway::proofs`).
pub struct ProofStore {
    dir: PathBuf,
    cache: parking_lot::Mutex<Option<Cached>>,
}

impl ProofStore {
    /// Sets under `dir` (`kinko serve`: `<data_dir>/proofs`).
    pub fn new(dir: PathBuf) -> ProofStore {
        ProofStore {
            dir,
            cache: parking_lot::Mutex::new(None),
        }
    }

    fn roots(&self) -> Result<(PathBuf, Arc<Roots>), SetError> {
        let set = newest_set(&self.dir)?;
        let mut cache = self.cache.lock();
        if let Some(c) = cache.as_ref().filter(|c| c.set == set) {
            return Ok((set, c.roots.clone()));
        }
        let roots = Arc::new(read_roots(&set)?);
        *cache = Some(Cached {
            set: set.clone(),
            roots: roots.clone(),
            trees: BTreeMap::new(),
        });
        Ok((set, roots))
    }

    fn tree(&self, asset: &str) -> Result<Option<(kinko_verify::Root, Arc<Tree>)>, SetError> {
        let (set, roots) = self.roots()?;
        let Some(root) = roots.roots.iter().find(|r| r.asset == asset).cloned() else {
            return Ok(None);
        };
        if let Some(t) = self
            .cache
            .lock()
            .as_ref()
            .filter(|c| c.set == set)
            .and_then(|c| c.trees.get(asset).cloned())
        {
            return Ok(Some((root, t)));
        }
        let tree = Arc::new(read_tree(&set, &roots, asset)?);
        if let Some(c) = self.cache.lock().as_mut().filter(|c| c.set == set) {
            c.trees.insert(asset.to_owned(), tree.clone());
        }
        Ok(Some((root, tree)))
    }
}

pub(crate) fn routes(r: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    r.routes(routes!(liabilities)).routes(routes!(my_proof))
}

fn set_error(e: SetError) -> ApiError {
    match e {
        SetError::None => ApiError::new(
            StatusCode::NOT_FOUND,
            "PROOF_NOT_PUBLISHED",
            "no proof of liabilities has been published yet",
        ),
        other => {
            tracing::error!(error = %other, "proof of liabilities unreadable");
            ApiError::unavailable("PROOF_UNAVAILABLE", "the published proof cannot be read now")
        }
    }
}

fn store(g: &AppState) -> ApiResult<&ProofStore> {
    g.proofs
        .get()
        .map(|p| p.as_ref())
        .ok_or_else(|| set_error(SetError::None))
}

/// The newest proof of liabilities: per asset, the signed root (sequence, time, customers,
/// root hash, total in minor units, the key that signed). Check a proof with `kinko-verify
/// --published` this document.
#[utoipa::path(get, path = "/proofs/liabilities", tag = "proofs",
    responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody)))]
async fn liabilities(State(g): State<AppState>) -> ApiResult<axum::Json<Roots>> {
    store(&g)?;
    let roots = tokio::task::spawn_blocking(move || store(&g).map(|s| s.roots()))
        .await
        .map_err(|_| set_error(SetError::Invalid(PathBuf::new(), "the reader failed".into())))??
        .map_err(set_error)?;
    Ok(axum::Json((*roots.1).clone()))
}

/// The caller's inclusion proof in the newest proof of liabilities of `asset`: their salt,
/// balance, leaf index and the path to the signed root; `kinko-verify` checks it.
#[utoipa::path(get, path = "/account/proofs/{asset}", tag = "proofs", security(("api_key" = [])),
    params(("asset" = String, Path, description = "Asset code")),
    responses((status = 200, body = serde_json::Value), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn my_proof(
    State(g): State<AppState>,
    Auth(p): Auth,
    UrlPath(asset): UrlPath<String>,
) -> ApiResult<axum::Json<kinko_verify::InclusionProof>> {
    p.require(Need::View)?;
    store(&g)?;
    let asset = asset.to_ascii_uppercase();
    let not_in = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NO_PROOF",
            "the newest proof of liabilities has no leaf of yours in this asset",
        )
    };
    if asset.is_empty() || asset.len() > 16 || !asset.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(not_in());
    }
    let user = p.user.0;
    let g2 = g.clone();
    let found = tokio::task::spawn_blocking(move || store(&g2).map(|s| s.tree(&asset)))
        .await
        .map_err(|_| set_error(SetError::Invalid(PathBuf::new(), "the reader failed".into())))??
        .map_err(set_error)?;
    let (root, tree) = found.ok_or_else(not_in)?;
    let proof = tree.proof(&root, user).ok_or_else(not_in)?;
    Ok(axum::Json(proof))
}
