//! `kinko-signer`: create a keystore, show its watch key, serve kinko's signing requests, sign
//! PSBT files offline, clear a halt. See docs/design/custody.md.
#![forbid(unsafe_code)]

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};
use kinko_chain::Network;
use kinko_signer::keystore::{self, read_passphrase, Keystore, Role};
use kinko_signer::service::clear_mac;
use kinko_signer::{Config, SystemClock};
use kinko_signer_proto::protocol::{Request, Response};
use kinko_signer_proto::SignerClient;
use nix::sys::signal::{SigSet, Signal};
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Largest PSBT file read by `offline-sign`.
const PSBT_FILE_BYTES_MAX: u64 = 4 << 20;

#[derive(Parser)]
#[command(name = "kinko-signer", version, about = "kinko's isolated signer")]
struct Cli {
    /// Read the keystore passphrase from the first line of this file (else
    /// KINKO_SIGNER_PASSPHRASE, else one line of standard input).
    #[arg(long, global = true)]
    passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a new keystore; prints its 24-word backup once, then its watch key.
    Init {
        #[arg(long)]
        keystore: PathBuf,
        /// litecoin, litecoin-testnet or litecoin-regtest
        #[arg(long)]
        network: String,
        /// hot (the signer's wallet) or cold (a keyholder's share of the cold multisig)
        #[arg(long, default_value = "hot")]
        role: String,
    },
    /// Prints the keystore's watch key (no passphrase needed).
    Xpub {
        #[arg(long)]
        keystore: PathBuf,
    },
    /// Serves signing requests on the configured Unix socket until SIGTERM or SIGINT.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Shows what a PSBT file does, asks, signs the inputs this key can sign, writes it back.
    OfflineSign {
        file: PathBuf,
        #[arg(long)]
        keystore: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Write the signed PSBT here instead of back to FILE.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Clears a halt of a running signer (needs the keystore passphrase).
    Clear {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        reason: String,
    },
    /// Verifies a signer log's hash chain.
    VerifyLog {
        #[arg(long)]
        log: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kinko-signer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let pass_file = cli.passphrase_file.as_deref();
    match cli.command {
        Command::Init {
            keystore,
            network,
            role,
        } => init(&keystore, &network, &role, pass_file),
        Command::Xpub { keystore } => {
            let ks = Keystore::read(&keystore)?;
            println!("{}", ks.watch_key);
            Ok(())
        }
        Command::Serve { config } => serve(&config, pass_file),
        Command::OfflineSign {
            file,
            keystore,
            yes,
            out,
        } => offline_sign(&file, &keystore, yes, out.as_deref(), pass_file),
        Command::Clear { config, reason } => clear(&config, &reason, pass_file),
        Command::VerifyLog { log } => {
            let lines = kinko_signer::log::verify(&log)?;
            println!("{}: {} lines, chain intact", log.display(), lines.len());
            Ok(())
        }
    }
}

fn init(path: &Path, network: &str, role: &str, pass_file: Option<&Path>) -> Result<()> {
    let net = Network::from_name(network).ok_or_else(|| anyhow!("unknown network {network:?}"))?;
    let role = Role::from_name(role).ok_or_else(|| anyhow!("role must be hot or cold"))?;
    if path.exists() {
        bail!(
            "keystore {} already exists; refusing to overwrite it",
            path.display()
        );
    }
    let pass = read_passphrase(pass_file)?;
    let (ks, words) = Keystore::create(path, net, role, &pass)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "WARNING: write these 24 words down now and keep them offline. They are shown only this \
         once, and anyone who has them controls the {} key.",
        role.name()
    )?;
    writeln!(out, "{}", *words)?;
    writeln!(
        out,
        "watch key ({} account; give this line to kinko):",
        role.name()
    )?;
    writeln!(out, "{}", ks.watch_key)?;
    out.flush()?;
    Ok(())
}

fn serve(config_path: &Path, pass_file: Option<&Path>) -> Result<()> {
    // Block the stop signals in every thread (the mask is inherited) and wait for them in one.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("blocking signals")?;
    let config = Config::load(config_path)?;
    let pass = read_passphrase(pass_file)?;
    let keys = Keystore::open(&config.keystore, &pass)?;
    drop(pass);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.wait().is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        })
        .context("starting the signal thread")?;
    eprintln!(
        "kinko-signer: serving {} ({}) on {}",
        config.asset,
        config.network.name(),
        config.socket.display()
    );
    if !config.alerts.notifies() {
        eprintln!(
            "kinko-signer: warning: no [alerts] webhook_url or smtp_relay with recipients is configured; \
             alerts are only written to {} and nobody is notified",
            config.alerts.outbox.display()
        );
    }
    kinko_signer::serve(config, keys, Arc::new(SystemClock), stop)?;
    eprintln!("kinko-signer: stopped");
    Ok(())
}

fn coin(net: Network) -> &'static str {
    match net {
        Network::Litecoin => "LTC",
        Network::LitecoinTestnet | Network::LitecoinRegtest => "tLTC",
    }
}

fn decimal(sats: u64) -> String {
    kinko_core::Amount(u128::from(sats)).to_decimal(8)
}

fn read_psbt_file(file: &Path) -> Result<bitcoin::psbt::Psbt> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if len > PSBT_FILE_BYTES_MAX {
        bail!("{} is larger than {PSBT_FILE_BYTES_MAX} bytes", file.display());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(PSBT_FILE_BYTES_MAX).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", file.display()))?;
    if bytes.starts_with(b"psbt\xff") {
        return bitcoin::psbt::Psbt::deserialize(&bytes)
            .map_err(|e| anyhow!("{} is not a PSBT: {e}", file.display()));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("{} is neither base64 nor binary PSBT", file.display()))?;
    kinko_chain::psbt::from_base64(&text).with_context(|| format!("{} is not a PSBT", file.display()))
}

fn offline_sign(
    file: &Path,
    keystore: &Path,
    yes: bool,
    out: Option<&Path>,
    pass_file: Option<&Path>,
) -> Result<()> {
    let ks = Keystore::read(keystore)?;
    let net = ks.network;
    let mut psbt = read_psbt_file(file)?;
    let summary = kinko_chain::psbt::summarise(net, &psbt).context("the PSBT cannot be summarised")?;
    let unit = coin(net);
    let mut o = std::io::stdout().lock();
    writeln!(o, "transaction {}", psbt.unsigned_tx.compute_txid())?;
    writeln!(o, "inputs:")?;
    for (outpoint, value) in &summary.inputs {
        writeln!(o, "  {outpoint}  {} {unit}", decimal(*value))?;
    }
    writeln!(o, "outputs:")?;
    for out in &summary.outputs {
        let to = out
            .address
            .clone()
            .unwrap_or_else(|| format!("script {}", out.script_pubkey.to_hex_string()));
        let ours = if out
            .derivation
            .iter()
            .any(|(fp, _)| *fp == ks.watch_key.fingerprint)
        {
            "  (this key's wallet)"
        } else if !out.derivation.is_empty() {
            "  (derivation given)"
        } else {
            ""
        };
        writeln!(o, "  {to}  {} {unit}{ours}", decimal(out.value))?;
    }
    writeln!(o, "fee: {} {unit}", decimal(summary.fee))?;
    o.flush()?;
    drop(o);
    if !yes {
        print!("sign? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().take(64).read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not signed");
        }
    }
    let pass = read_passphrase(pass_file)?;
    let keys = Keystore::open(keystore, &pass)?;
    drop(pass);
    let n = kinko_signer::sign::sign(&mut psbt, &keys.master()).context("signing failed")?;
    if n == 0 {
        bail!("this key can sign none of the inputs");
    }
    let target = out.unwrap_or(file);
    write_atomic(
        target,
        format!("{}\n", kinko_chain::psbt::to_base64(&psbt)).as_bytes(),
    )?;
    println!(
        "signed {n} of {} inputs; written to {}",
        psbt.inputs.len(),
        target.display()
    );
    Ok(())
}

/// Writes a file by writing a temporary next to it and renaming it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let tmp =
        keystore::folder_of(path).join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let res = keystore::create_private(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}

fn clear(config_path: &Path, reason: &str, pass_file: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let pass = read_passphrase(pass_file)?;
    let keys = Keystore::open(&config.keystore, &pass)?;
    drop(pass);
    let mut client = SignerClient::connect(&config.socket)
        .with_context(|| format!("connecting to {}", config.socket.display()))?;
    let nonce = match client.call(&Request::ClearChallenge)? {
        Response::Challenge { nonce } => nonce,
        other => bail!("unexpected answer to clear_challenge: {other:?}"),
    };
    let mac = clear_mac(&keys.clear_key(), &nonce, reason);
    match client.call(&Request::Clear {
        nonce,
        reason: reason.to_owned(),
        mac,
    })? {
        Response::Ok => {
            println!("cleared: signing resumes");
            Ok(())
        }
        Response::Refused { code, reason, .. } => bail!("refused: {code}: {reason}"),
        other => bail!("unexpected answer to clear: {other:?}"),
    }
}
