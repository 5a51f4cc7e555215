//! The architecture's promises about dependencies, checked over `cargo metadata` (as
//! rust-analyzer tests its own architecture invariants). Each failure names the promise it
//! broke; ARCHITECTURE.md ("Architecture invariants") states them. Only normal dependencies
//! count: tests may use whatever they need.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Package name → names of its normal (non-dev, non-build) dependencies, resolved.
struct Graph {
    deps: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn load() -> Graph {
        let host = host();
        let metadata = |offline: bool| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut args = vec!["metadata", "--format-version", "1", "--filter-platform", &host];
            if offline {
                args.push("--offline");
            }
            Command::new(cargo)
                .args(&args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .expect("cargo metadata runs")
        };
        // Offline first (the build fetched what the host needs); online if a manifest is missing.
        let mut out = metadata(true);
        if !out.status.success() {
            out = metadata(false);
        }
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
        let name_of: BTreeMap<String, String> = v["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_owned(),
                    p["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for node in v["resolve"]["nodes"].as_array().expect("resolve.nodes") {
            let me = name_of[node["id"].as_str().unwrap()].clone();
            let entry = deps.entry(me).or_default();
            for d in node["deps"].as_array().unwrap() {
                let normal = d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null());
                if normal {
                    entry.insert(name_of[d["pkg"].as_str().unwrap()].clone());
                }
            }
        }
        Graph { deps }
    }

    /// Every package `root` links, through normal dependencies.
    fn closure(&self, root: &str) -> BTreeSet<String> {
        assert!(self.deps.contains_key(root), "no package {root} in the workspace");
        let mut seen = BTreeSet::new();
        let mut todo = vec![root.to_owned()];
        while let Some(p) = todo.pop() {
            for d in self.deps.get(&p).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    }

    /// The path from `root` to `target`, for the failure message.
    fn path(&self, root: &str, target: &str) -> Vec<String> {
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut todo = std::collections::VecDeque::from([root.to_owned()]);
        while let Some(p) = todo.pop_front() {
            if p == target {
                let mut path = vec![p.clone()];
                let mut at = p;
                while let Some(q) = prev.get(&at) {
                    path.push(q.clone());
                    at = q.clone();
                }
                path.reverse();
                return path;
            }
            for d in self.deps.get(&p).into_iter().flatten() {
                if d != root && !prev.contains_key(d) {
                    prev.insert(d.clone(), p.clone());
                    todo.push_back(d.clone());
                }
            }
        }
        Vec::new()
    }

    fn assert_never(&self, root: &str, forbidden: &[&str], promise: &str) {
        let links = self.closure(root);
        let broken: Vec<String> = forbidden
            .iter()
            .filter(|f| links.contains(**f))
            .map(|f| self.path(root, f).join(" -> "))
            .collect();
        assert!(
            broken.is_empty(),
            "broken promise: {promise}\n  {}",
            broken.join("\n  ")
        );
    }
}

/// The host's target triple (the platform whose dependencies the binaries link).
fn host() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host")
}

const KINKO_CRATES: [&str; 14] = [
    "kinko-core",
    "kinko-journal",
    "kinko-engine",
    "kinko-api",
    "kinko-factors",
    "kinko-chain",
    "kinko-signer",
    "kinko-signer-proto",
    "kinko-custody",
    "kinko-audit",
    "kinko-sim",
    "kinko-verify",
    "kinko-cluster",
    "kinko",
];

/// What core links built on its own (`cargo tree -p kinko-core`): features resolved for core
/// alone, not unified with the rest of the workspace, where other crates turn on `std` features
/// of the same curve crates (and with them an OS random source core never calls).
fn core_alone() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = host();
    let tree = |offline: bool| {
        let mut args = vec![
            "tree",
            "-p",
            "kinko-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--target",
            &host,
        ];
        if offline {
            args.push("--offline");
        }
        Command::new(&cargo)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo tree runs")
    };
    let mut out = tree(true);
    if !out.status.success() {
        out = tree(false);
    }
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|n| n != "kinko-core")
        .collect()
}

#[test]
fn the_core_does_no_io_reads_no_clock_and_draws_no_randomness() {
    // Core verifies admins' passkey signatures (p256, ed25519-dalek: verification only). The
    // curve crates name the `rand_core` traits, so that trait crate may be linked; no source of
    // randomness may (`getrandom`, `rand`), and core's own code never names one.
    let forbidden = [
        "tokio",
        "mio",
        "socket2",
        "getrandom",
        "rand",
        "chrono",
        "time",
        "reqwest",
        "ureq",
        "hyper",
        "nix",
        "axum",
        "crossbeam-channel",
        "parking_lot",
    ];
    let links = core_alone();
    let broken: Vec<&str> = forbidden.iter().copied().filter(|f| links.contains(*f)).collect();
    assert!(
        broken.is_empty(),
        "broken promise: core is a pure state machine: no I/O, clock, randomness, threads or async \
         (core alone links {broken:?})"
    );
    let mut src = String::new();
    read_sources(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src"),
        &mut src,
    );
    for name in [
        "rand_core",
        "OsRng",
        "getrandom",
        "thread_rng",
        "SystemTime",
        "Instant::now",
    ] {
        assert!(!src.contains(name), "broken promise: core's sources name {name}");
    }
}

#[test]
fn the_leaf_crates_depend_on_no_other_kinko_crate() {
    let g = Graph::load();
    for leaf in [
        "kinko-core",
        "kinko-journal",
        "kinko-factors",
        "kinko-chain",
        "kinko-audit",
        "kinko-signer-proto",
        "kinko-verify",
    ] {
        let others: Vec<&str> = KINKO_CRATES.iter().copied().filter(|c| *c != leaf).collect();
        g.assert_never(leaf, &others, &format!("{leaf} depends on no other kinko crate"));
    }
}

#[test]
fn the_engine_knows_nothing_of_its_adapters() {
    Graph::load().assert_never(
        "kinko-engine",
        &[
            "kinko-api",
            "kinko-custody",
            "kinko-signer",
            "kinko-signer-proto",
            "kinko-chain",
            "kinko-sim",
            "kinko-cluster",
            "async-nats",
            "axum",
        ],
        "engine depends only on core and journal: the gateway and the services plug into its ports",
    );
}

#[test]
fn the_gateway_reaches_neither_the_signer_nor_a_chain() {
    Graph::load().assert_never(
        "kinko-api",
        &[
            "kinko-signer",
            "kinko-signer-proto",
            "kinko-chain",
            "kinko-custody",
            "kinko-sim",
            "bitcoin",
            "bip39",
        ],
        "api reaches neither the signer nor chain code: it asks chains through engine ports",
    );
}

#[test]
fn custody_sits_beside_the_gateway_not_above_it() {
    Graph::load().assert_never(
        "kinko-custody",
        &["kinko-api", "kinko-sim", "kinko-signer", "axum"],
        "custody does not reach the gateway, the simulator or the signer's own code (only its protocol)",
    );
}

#[test]
fn the_exchange_binary_links_no_signing_code() {
    Graph::load().assert_never(
        "kinko",
        &["kinko-signer", "bip39"],
        "the exchange process never links the signer's keystore or signing code",
    );
}

#[test]
fn the_signer_shares_nothing_with_the_exchange_process() {
    Graph::load().assert_never(
        "kinko-signer",
        &[
            "kinko-api",
            "kinko-engine",
            "kinko-custody",
            "kinko-journal",
            "kinko-sim",
            "axum",
        ],
        "signer never depends on the gateway, the engine or custody",
    );
}

/// Every normal dependency of a workspace crate is named somewhere in its sources (what
/// `cargo machete` checks): a dependency nothing uses only costs build time and attack surface.
#[test]
fn every_dependency_is_used() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut unused = Vec::new();
    for p in v["packages"].as_array().unwrap() {
        let manifest = std::path::Path::new(p["manifest_path"].as_str().unwrap());
        let src = manifest.parent().unwrap().join("src");
        let mut text = String::new();
        read_sources(&src, &mut text);
        for d in p["dependencies"].as_array().unwrap() {
            if !d["kind"].is_null() {
                continue; // dev and build dependencies are the tests' and build scripts' business
            }
            let name = d["rename"]
                .as_str()
                .unwrap_or(d["name"].as_str().unwrap())
                .replace('-', "_");
            let used = text.match_indices(&name).any(|(i, _)| {
                let before = text[..i].chars().next_back();
                let after = text[i + name.len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if !used {
                unused.push(format!(
                    "{} -> {}",
                    p["name"].as_str().unwrap(),
                    d["name"].as_str().unwrap()
                ));
            }
        }
    }
    assert!(
        unused.is_empty(),
        "dependencies no source names (remove them):\n  {}",
        unused.join("\n  ")
    );
}

fn read_sources(dir: &std::path::Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            read_sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            out.push('\n');
        }
    }
}
