//! The `kinko` binary: configuration, wiring and the command line. Glue only.
#![forbid(unsafe_code)]

mod admin;
mod backup;
mod bench;
mod bench_engine;
mod bench_feed;
mod bench_http;
mod cold_control;
mod config;
mod incident;
mod proof;
mod report;
mod serve;
mod witness;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use config::Config;
use std::path::{Path, PathBuf};

/// kinko: a cryptocurrency exchange back end whose customers' coins cannot leave silently.
///
/// Every state change is a command in a checksummed, hash-chained journal, fsync'd before it is
/// applied to a deterministic engine; a snapshot plus the journal's tail rebuilds the same state
/// bit for bit.
#[derive(Parser, Debug)]
#[command(name = "kinko", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// TOML configuration file. Unknown keys are refused. Without it, built-in defaults apply
    /// (data directory ./data, assets BTC ETH LTC USD JPY).
    #[arg(long, global = true, env = "KINKO_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Data directory (journal/ and snapshots/); overrides `data_dir` from the config file.
    #[arg(long, global = true, env = "KINKO_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Log format: text or json; overrides `log.format`.
    #[arg(long, global = true, env = "KINKO_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the engine and the HTTP gateway: recover from the newest valid snapshot and the
    /// journal, then serve until SIGTERM or SIGINT, when it drains requests, finishes queued
    /// commands, writes a snapshot and exits. SIGUSR1 writes a snapshot while running.
    Serve {
        /// Seed demo markets, two funded traders with API keys and a simulated chain, and write
        /// their credentials to <data dir>/demo-credentials.json. The simulated chain mints
        /// deposits: refused with any [[custody]] section. Without --demo it runs only with
        /// `[sim] enabled = true`.
        #[arg(long)]
        demo: bool,
        /// Address to listen on; overrides `api.listen` (port 0 picks a free port).
        #[arg(long, env = "KINKO_LISTEN", value_name = "ADDR")]
        listen: Option<String>,
        /// With `[cluster]`: start as a standby that follows the replicated journal, serves
        /// reads, answers writes with NOT_LEADER naming the leader, and takes over writes only
        /// when a lease some other node held expires.
        #[arg(long)]
        standby: bool,
    },
    /// Inspect the journal.
    Journal {
        #[command(subcommand)]
        command: JournalCmd,
    },
    /// Write a snapshot now. If `kinko serve` runs on the data directory, it is asked to write
    /// one (SIGUSR1) and this command waits for it; otherwise the state is recovered offline and
    /// snapshotted.
    Snapshot {
        /// Seconds to wait for a running server's snapshot.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout_s: u64,
    },
    /// Back up the engine's state while `kinko serve` runs (or not): a snapshot the server
    /// writes for it, the whole journal up to a committed sequence after it, and manifest.json
    /// (format version, sequence range, state_hash at the snapshot and at the end, every file
    /// with its size and BLAKE3, the kinko version). Never contains the master key or the audit
    /// key. `kinko backup verify DIR` checks a backup.
    Backup {
        #[command(subcommand)]
        command: Option<BackupCmd>,
        /// An empty or new directory to write the backup into.
        #[arg(value_name = "DEST")]
        dest: Option<PathBuf>,
        /// Seconds to wait for each of a running server's snapshots.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        timeout_s: u64,
    },
    /// Restore a backup into the data directory (--data-dir): verify its checksums and replay,
    /// copy its journal and snapshot, recover as `kinko serve` would and print the state_hash,
    /// which must equal the manifest's. Refuses a non-empty data directory unless --force.
    Restore {
        /// The backup directory (written by `kinko backup`).
        #[arg(value_name = "SRC")]
        src: PathBuf,
        /// Replace the journal and snapshots of a non-empty data directory.
        #[arg(long)]
        force: bool,
    },
    /// Recover the state offline and check every invariant (balanced ledger, no negative
    /// customer balance, holds equal open pendings, each pending resolved at most once);
    /// `kinko audit verify` checks the tamper-evident audit log instead.
    Audit {
        #[command(subcommand)]
        command: Option<AuditCmd>,
    },
    /// Operator actions on a running server (platform-wide revocation, account review),
    /// authenticated by the operator token (KINKO_OPERATOR_TOKEN or identity.operator_token_file).
    Admin {
        /// The server's address (HOST:PORT or http://HOST:PORT), before or after the
        /// subcommand; default: `api` in <data dir>/demo-credentials.json if a demo wrote it,
        /// else `api.listen`.
        #[arg(long, global = true, env = "KINKO_LISTEN", value_name = "ADDR")]
        server: Option<String>,
        #[command(subcommand)]
        command: admin::AdminCmd,
    },
    /// Incidents, from the journal.
    Incident {
        #[command(subcommand)]
        command: IncidentCmd,
    },
    /// Hot and cold custody of a real chain on a running server (operator token): status,
    /// cold → hot refills as PSBT files for offline signing, and their submission.
    Custody {
        /// The server's address (HOST:PORT or http://HOST:PORT), before or after the
        /// subcommand; default: `api` in <data dir>/demo-credentials.json if a demo wrote it,
        /// else `api.listen`.
        #[arg(long, global = true, env = "KINKO_LISTEN", value_name = "ADDR")]
        server: Option<String>,
        #[command(subcommand)]
        command: admin::CustodyCmd,
    },
    /// The simulated chain of a demo: send a deposit to a running server.
    Sim {
        /// The server's address (HOST:PORT or http://HOST:PORT), before or after the
        /// subcommand; default: `api` in <data dir>/demo-credentials.json if a demo wrote it,
        /// else `api.listen`.
        #[arg(long, global = true, env = "KINKO_LISTEN", value_name = "ADDR")]
        server: Option<String>,
        #[command(subcommand)]
        command: admin::SimCmd,
    },
    /// Measure the ledger, the durable pipeline and replay on this machine.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCmd,
    },
    /// Regulatory reports, from the journal.
    Report {
        #[command(subcommand)]
        command: ReportCmd,
    },
    /// Proof of liabilities (docs/design/proofs.md): per asset a Merkle sum tree over every
    /// customer's balance at one sequence, its root signed; customers check theirs with
    /// `kinko-verify`.
    Proof {
        #[command(subcommand)]
        command: ProofCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ProofCmd {
    /// Build the proof of liabilities: a snapshot at a committed sequence (asked of the running
    /// server, or recovered offline), every asset's tree over it, the roots signed by the audit
    /// key; written as a proof set (liabilities.json and one leaves file per asset) that
    /// `kinko serve` publishes from <data dir>/proofs/.
    Build {
        /// Where to write the proof set (default: <data dir>/proofs/<sequence>/, where the
        /// server serves the newest from). Must not exist.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Seconds to wait for a running server's snapshot.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        timeout_s: u64,
    },
    /// Print one customer's inclusion proof (JSON, what `kinko-verify` checks).
    User {
        /// The customer's user id.
        user: u64,
        /// The asset code.
        asset: String,
        /// The proof set (default: the newest under <data dir>/proofs/).
        #[arg(long, value_name = "DIR")]
        set: Option<PathBuf>,
    },
    /// Reserves against liabilities, per asset: the proof set's signed totals against the hot
    /// and cold balances the running server's custody services read from their nodes (operator
    /// token); covered, SHORT or not proven for each asset, never only in total. Writes
    /// reserves.json into the set; exits 1 when any asset is short.
    Reserves {
        /// The proof set (default: the newest under <data dir>/proofs/).
        #[arg(long, value_name = "DIR")]
        set: Option<PathBuf>,
        /// The server's address (HOST:PORT or http://HOST:PORT); default: `api.listen`.
        #[arg(long, env = "KINKO_LISTEN", value_name = "ADDR")]
        server: Option<String>,
    },
    /// The cold keys' proof of control, step 1: writes the challenge the asset's cold
    /// keyholders sign offline with `kinko-signer prove-control` (the message the hot key signs:
    /// asset, the set's sequence, its root hash as nonce; and the configured cold multisig).
    ColdChallenge {
        /// The asset code (a [[custody]] section's).
        asset: String,
        /// Where to write the challenge (default: <set>/<ASSET>.cold-challenge.json).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The proof set (default: the newest under <data dir>/proofs/).
        #[arg(long, value_name = "DIR")]
        set: Option<PathBuf>,
    },
    /// The cold keys' proof of control, step 2: checks the keyholders' signature files against
    /// the configured cold keys and the set's message (any bad file refuses them all, with its
    /// code) and keeps the accepted proof in the set (<ASSET>.cold-control.json), where
    /// `kinko proof reserves` counts the cold balance as proven.
    ColdSubmit {
        /// The asset code.
        asset: String,
        /// The signature files `kinko-signer prove-control` wrote.
        #[arg(required = true, value_name = "SIG_FILE")]
        files: Vec<PathBuf>,
        /// The proof set (default: the newest under <data dir>/proofs/).
        #[arg(long, value_name = "DIR")]
        set: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum IncidentCmd {
    /// An incident's timeline (first anomalous event, detection, halt, resume, resolution),
    /// the affected accounts and the amounts, rebuilt from the journal alone. Read-only: it
    /// may run beside a live server.
    Report {
        /// The incident's number (as `kinko incident list` shows it).
        id: u64,
        /// The journal directory, or a data directory containing journal/.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Every incident, open and resolved, one per line: id, status, kind, asset, opened (UTC),
    /// opened by, missing amount, summary. Read-only: it may run beside a live server.
    List {
        /// The journal directory, or a data directory containing journal/.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The restitution plan of an incident, from the journal: each affected customer's
    /// attributed amount, paid from the insurance fund first and the company treasury for the
    /// rest, with the plan's hash and the request body that proposes it
    /// (`POST /api/v1/ops/proposals`, kind `restitution`); two treasury admins must approve it
    /// before anything moves. Read-only: it may run beside a live server.
    Restitution {
        /// The incident's number (as `kinko incident list` shows it).
        id: u64,
        /// Pay in another asset (its code) at `--rate`, instead of the incident's asset.
        #[arg(long, requires = "rate", value_name = "CODE")]
        pay_asset: Option<String>,
        /// Minor units of the paid asset per minor unit lost, as NUM/DEN (integers); each
        /// customer's amount is rounded up.
        #[arg(long, requires = "pay_asset", value_name = "NUM/DEN")]
        rate: Option<String>,
        /// The journal directory, or a data directory containing journal/.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ReportCmd {
    /// The daily segregation report: per asset each customer's quantity from the books, the
    /// total, custody split hot and cold, and the share of customer assets outside cold
    /// storage valued in yen against the 5% ceiling, with the reference prices used. Writes
    /// a CSV of the customers, a CSV summary and a plain-text report; exits 3 when the share
    /// is above the ceiling, and fails without writing when a crypto asset has no yen price.
    /// Read-only: it may run beside a live server.
    Segregation {
        /// Where the files go (default: `<data_dir>/reports`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The state after this journal sequence (default: the last one).
        #[arg(long, value_name = "SEQ")]
        at: Option<u64>,
        /// The journal directory, or a data directory containing journal/.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum BackupCmd {
    /// Check a backup: every file against the manifest's size and BLAKE3, the journal's hash
    /// chain, the snapshot against the journal, and a replay that must end at the manifest's
    /// state_hash. Changes nothing; exits non-zero naming what does not match.
    Verify {
        /// The backup directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Verify the tamper-evident audit log: every entry against its leaf hash, the Merkle tree,
    /// every signed checkpoint (signature, and consistency with the current tree) and inclusion
    /// proofs. The last line is the verdict: `verdict: ok — N records, M checkpoints verified`,
    /// or `verdict: TAMPERED — ...` naming the entry or checkpoint that fails (exit code 1).
    Verify {
        /// The audit directory (default: `<data_dir>/audit` or `audit.dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The checkpoint public key (64 hex digits); default: derived from the key file.
        #[arg(long)]
        public_key: Option<String>,
        /// The signer's cosignatures (`kinko-signer witness export`), checked with those kept
        /// in `<data_dir>/witness/` against `witness.public_key`.
        #[arg(long, value_name = "FILE")]
        witness: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum JournalCmd {
    /// Check every record's checksum, the hash chain and sequence contiguity across all
    /// segments; print the head sequence and hash; then check history against the signer's
    /// witness cosignatures (`witness.public_key`), naming the first record after which it
    /// no longer matches what the signer saw. Never modifies anything. Exits non-zero on
    /// corruption, naming segment, offset and sequence; otherwise the last line is the verdict
    /// (`verdict: ok — ...`, or `verdict: TAMPERED — ...` and exit 1).
    Verify {
        /// The journal directory, or a data directory containing journal/ (default: the
        /// configured data directory).
        dir: Option<PathBuf>,
        /// The signer's cosignatures (`kinko-signer witness export`), checked with those kept
        /// in `<data_dir>/witness/`.
        #[arg(long, value_name = "FILE")]
        witness: Option<PathBuf>,
        /// The witness public key (64 hex digits); default: `witness.public_key`.
        #[arg(long, value_name = "HEX")]
        witness_key: Option<String>,
    },
    /// Print records readably: sequence, time, kind, hash and the decoded command.
    Dump {
        /// The journal directory, or a data directory containing journal/.
        dir: Option<PathBuf>,
        /// First sequence number to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most records to print.
        #[arg(long, default_value_t = u64::MAX)]
        limit: u64,
    },
}

/// A failure the command has already explained on stdout (e.g. `verdict: TAMPERED ...`): the
/// exit code is non-zero and nothing more is printed.
#[derive(Debug)]
struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported")
    }
}

impl std::error::Error for Reported {}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Reported>().is_some() => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kinko: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(d) = cli.data_dir {
        config.data_dir = d;
    }
    if let Some(f) = cli.log_format {
        config.log.format = f;
    }
    config.validate()?;
    init_logging(&config);
    match cli.command {
        Cmd::Serve {
            demo,
            listen,
            standby,
        } => {
            if let Some(l) = listen {
                config.api.listen = l;
                config.validate()?;
            }
            if standby {
                match config.cluster.as_mut() {
                    Some(c) => c.standby = true,
                    None => anyhow::bail!("--standby needs a [cluster] section in the configuration"),
                }
            }
            serve::serve(&config, demo)
        }
        Cmd::Journal { command } => match command {
            JournalCmd::Verify {
                dir,
                witness,
                witness_key,
            } => {
                if witness_key.is_some() {
                    config.witness.public_key = witness_key.unwrap_or_default();
                    config.validate()?;
                }
                if journal_verify(&journal_dir(dir, &config), &config, witness.as_deref())? {
                    Ok(())
                } else {
                    Err(Reported.into())
                }
            }
            JournalCmd::Dump { dir, from, limit } => journal_dump(&journal_dir(dir, &config), from, limit),
        },
        Cmd::Snapshot { timeout_s } => serve::snapshot(&config, timeout_s),
        Cmd::Backup {
            command: Some(BackupCmd::Verify { dir }),
            ..
        } => backup::verify_cmd(&dir),
        Cmd::Backup {
            command: None,
            dest,
            timeout_s,
        } => {
            let dest = dest.context("kinko backup DEST: name the directory to write the backup into")?;
            backup::backup(&config, &dest, timeout_s)
        }
        Cmd::Restore { src, force } => backup::restore(&config, &src, force),
        Cmd::Audit { command: None } => serve::audit(&config),
        Cmd::Audit {
            command:
                Some(AuditCmd::Verify {
                    dir,
                    public_key,
                    witness,
                }),
        } => {
            if serve::audit_verify(&config, dir, public_key, witness.as_deref())? {
                Ok(())
            } else {
                Err(Reported.into())
            }
        }
        Cmd::Admin { server, command } => {
            if let Some(s) = server {
                config.api.listen = s;
            } else if let Some(api) = demo_server(&config) {
                config.api.listen = api;
            }
            admin::run(command, &config)
        }
        Cmd::Incident {
            command: IncidentCmd::Report { id, dir },
        } => incident::report(&journal_dir(dir, &config), id),
        Cmd::Incident {
            command: IncidentCmd::List { dir },
        } => incident::list(&journal_dir(dir, &config)),
        Cmd::Incident {
            command:
                IncidentCmd::Restitution {
                    id,
                    pay_asset,
                    rate,
                    dir,
                },
        } => incident::restitution(
            &journal_dir(dir, &config),
            id,
            pay_asset.as_deref(),
            rate.as_deref(),
        ),
        Cmd::Report {
            command: ReportCmd::Segregation { out, at, dir },
        } => {
            let out = out.unwrap_or_else(|| config.reports_dir());
            if report::segregation_cmd(&journal_dir(dir, &config), &out, at)? {
                Ok(())
            } else {
                std::process::exit(3)
            }
        }
        Cmd::Custody { server, command } => {
            if let Some(s) = server {
                config.api.listen = s;
            } else if let Some(api) = demo_server(&config) {
                config.api.listen = api;
            }
            admin::custody(command, &config)
        }
        Cmd::Sim { server, command } => {
            if let Some(s) = server {
                config.api.listen = s;
            } else if let Some(api) = demo_server(&config) {
                config.api.listen = api;
            }
            admin::sim(command, &config)
        }
        Cmd::Bench { command } => bench::run(command, &config),
        Cmd::Proof {
            command: ProofCmd::Build { out, timeout_s },
        } => proof::build_cmd(&config, out, timeout_s),
        Cmd::Proof {
            command: ProofCmd::User { user, asset, set },
        } => proof::user_cmd(&config, set, user, &asset),
        Cmd::Proof {
            command: ProofCmd::ColdChallenge { asset, out, set },
        } => cold_control::challenge_cmd(&config, set, &asset, out),
        Cmd::Proof {
            command: ProofCmd::ColdSubmit { asset, files, set },
        } => cold_control::submit_cmd(&config, set, &asset, &files),
        Cmd::Proof {
            command: ProofCmd::Reserves { set, server },
        } => {
            if let Some(s) = server {
                config.api.listen = s;
            } else if let Some(api) = demo_server(&config) {
                config.api.listen = api;
            }
            if proof::reserves_cmd(&config, set)? {
                Ok(())
            } else {
                Err(Reported.into())
            }
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KINKO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colour codes only for a person at a terminal, never into a file or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// The address a demo server wrote into `<data dir>/demo-credentials.json` (`kinko serve --demo`
/// records where it actually listens, a port picked by `--listen 127.0.0.1:0` included).
fn demo_server(config: &Config) -> Option<String> {
    let path = config.data_dir.join(kinko_sim::demo::CREDENTIALS_FILE);
    let bytes = std::fs::read(path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("api")?.as_str().map(str::to_owned)
}

/// Accepts either a journal directory or a data directory that contains `journal/`.
fn journal_dir(dir: Option<PathBuf>, config: &Config) -> PathBuf {
    let dir = dir.unwrap_or_else(|| config.data_dir.clone());
    let inner = dir.join("journal");
    if inner.is_dir() {
        inner
    } else {
        dir
    }
}

fn journal_verify(dir: &Path, config: &Config, witness: Option<&Path>) -> anyhow::Result<bool> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    // A full verification records what it verified, so that the next start verifies only
    // from there (every segment but the last; safe beside a running server).
    let (r, checkpoint) = kinko_journal::verify_and_checkpoint(dir)
        .with_context(|| format!("journal {} failed verification", dir.display()))?;
    println!("journal {}", dir.display());
    println!("segments   {}", r.segments);
    println!("records    {}", r.records);
    println!("head_seq   {}", r.head_seq);
    println!("head_hash  {}", hex::encode(r.head_hash));
    match &r.torn_tail {
        Some(t) => println!(
            "torn_tail  {} (cut off at the next start)",
            kinko_engine::describe_torn_tail(t)
        ),
        None => println!("torn_tail  none"),
    }
    match checkpoint {
        Some(seq) => println!("checkpoint through seq {seq} (the next start verifies from there)"),
        None => println!("checkpoint unchanged"),
    }
    println!("ok: every checksum and the hash chain verify");
    let (cos, from_file) = witness::cosignatures(config, kinko_audit::witness::LOG_JOURNAL, witness)?;
    let Some(key) = config.witness_key()? else {
        println!("witness    not checked: no witness.public_key (or --witness-key) configured");
        println!(
            "verdict: ok — {} records (not checked against a witness)",
            r.records
        );
        return Ok(true);
    };
    let check = witness::journal_check(dir, &cos, &key)?;
    let (lines, bad) = witness::report(&check, "record", r.head_seq, from_file);
    for l in lines {
        println!("{l}");
    }
    match bad {
        Some(why) => {
            println!("verdict: {}", witness::verdict_text(&why));
            Ok(false)
        }
        None => {
            println!(
                "verdict: ok — {} records, {} witness cosignatures match",
                r.records, check.cosignatures
            );
            Ok(true)
        }
    }
}

fn journal_dump(dir: &Path, from: u64, limit: u64) -> anyhow::Result<()> {
    use std::io::Write;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for rec in kinko_journal::read_from(dir, from.max(1))?.take(usize::try_from(limit).unwrap_or(usize::MAX))
    {
        let rec = rec?;
        let command = match kinko_engine::decode_command(rec.kind, &rec.payload) {
            Ok(c) => format!("{c:?}"),
            Err(e) => format!("<undecodable: {e}>"),
        };
        let written = writeln!(
            out,
            "seq={} ts={} kind={} hash={} {}",
            rec.seq,
            format_ts(rec.timestamp_ns),
            rec.kind,
            &hex::encode(rec.hash)[..16],
            command
        );
        if written.is_err() {
            // The reader went away (e.g. `| head`): stop quietly.
            return Ok(());
        }
    }
    let _ = out.flush();
    Ok(())
}

/// Formats nanoseconds since the Unix epoch as an RFC 3339 UTC time.
fn format_ts(ns: u64) -> String {
    kinko_api::wire::rfc3339_nanos(ns)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every argument of every command, `kinko help` and each `kinko help COMMAND`, says what
    /// it is for.
    #[test]
    fn every_argument_of_every_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && cmd.get_long_about().is_none() && cmd.get_name() != "help" {
                missing.push(format!("{path}: the command itself"));
            }
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "kinko", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without help:\n{}",
            missing.join("\n")
        );
    }
}
