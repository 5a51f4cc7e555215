//! `kinko-signer`: create a keystore, show its watch key, serve kinko's signing requests, sign
//! PSBT files offline, clear a halt, show the witness key and export its cosignatures. See docs/design/custody.md.
#![forbid(unsafe_code)]

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};
use kinko_chain::Network;
use kinko_signer::admins::{assertion_from_file, AssertionFile};
use kinko_signer::keystore::{self, read_passphrase, Keystore, Role};
use kinko_signer::service::clear_mac;
use kinko_signer::{Config, SystemClock};
use kinko_signer_proto::protocol::{Admin, AdminAssertion, AdminChange, Request, Response, ReviewThresholds};
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
        /// The signer's log (the `log` of its configuration), where the first admins go.
        #[arg(long)]
        log: Option<PathBuf>,
        /// A first admin: a JSON file {id, name, email, credential_id, public_key} (hex), from
        /// the operators' console. Repeat for each.
        #[arg(long = "admin")]
        admins: Vec<PathBuf>,
        /// Admin assertions each later ceremony and each resume needs.
        #[arg(long, default_value_t = kinko_signer::admins::QUORUM_DEFAULT)]
        quorum: u32,
    },
    /// The admins enrolled at the signer and the ceremonies that change them (each needs the
    /// keystore passphrase and assertions of a quorum of admins; `--print-challenge` prints
    /// what the admins sign in the console's "Signer ceremony" page, and sends nothing).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
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
    /// Clears a halt of a running signer (needs the keystore passphrase and, once admins are
    /// enrolled, assertions of a quorum of them: `--print-challenge` first).
    Clear {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        ceremony: Ceremony,
    },
    /// Halts signing now (resuming needs `clear`, with the admins' quorum once enrolled).
    Halt {
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
    /// Prints the witness public key (64 hex digits) for kinko's `[witness] public_key`
    /// (needs the keystore passphrase: the key is derived from the seed).
    WitnessKey {
        #[arg(long)]
        keystore: PathBuf,
    },
    /// Prints the Ethereum account's xpub (`m/44'/60'/0'`, for kinko's ETH `[[custody]] xpub`)
    /// and the hot address withdrawals are paid from (needs the keystore passphrase: the
    /// account is a hardened child of the seed).
    EthXpub {
        #[arg(long)]
        keystore: PathBuf,
    },
    /// Prints a cold keyholder's Ethereum owner address (`m/44'/60'/1'/0/0` of a `--role cold`
    /// keystore), which the cold multisig contract is deployed with (asks the passphrase).
    EthOwner {
        #[arg(long)]
        keystore: PathBuf,
    },
    /// The witness's cosignatures.
    Witness {
        #[command(subcommand)]
        command: WitnessCommand,
    },
    /// A cold keyholder's proof of control for the proof of reserves: shows a challenge file
    /// (`kinko proof cold-challenge`), asks, signs its fixed message with this cold key (a
    /// statement, never a transaction) and writes the signature file for `kinko proof
    /// cold-submit`.
    ProveControl {
        file: PathBuf,
        #[arg(long)]
        keystore: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Where to write the signature (default: FILE.<key fingerprint>.sig.json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Prints every cosignature in the signer's log (its hash chain verified first), one JSON
    /// line each: the file `kinko journal verify --witness` and `kinko audit verify --witness`
    /// read.
    Export {
        #[arg(long)]
        log: PathBuf,
    },
}

/// What every ceremony command takes.
#[derive(clap::Args)]
struct Ceremony {
    /// An admin's assertion file from the console. Repeat for each admin.
    #[arg(long = "assertion")]
    assertions: Vec<PathBuf>,
    /// Print the challenge for the admins and send nothing.
    #[arg(long)]
    print_challenge: bool,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Lists the admins, the quorum and the review thresholds.
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Enrols an admin (a JSON file as for `init --admin`).
    Add {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        admin: PathBuf,
        #[command(flatten)]
        ceremony: Ceremony,
    },
    /// Removes the admin with this kinko user id.
    Remove {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        ceremony: Ceremony,
    },
    /// Sets the quorum.
    Quorum {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        quorum: u32,
        #[command(flatten)]
        ceremony: Ceremony,
    },
    /// Sets the signer's review thresholds.
    Thresholds {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        dual_approval_sats: u64,
        #[arg(long)]
        approvals: u32,
        #[arg(long)]
        fan_in_users_max: u32,
        #[arg(long, default_value_t = 86_400)]
        fan_in_window_s: u64,
        #[command(flatten)]
        ceremony: Ceremony,
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
            log,
            admins,
            quorum,
        } => {
            // The admins are read and checked before anything is created.
            let first = first_admins(log.as_deref(), &admins, quorum)?;
            init(&keystore, &network, &role, pass_file)?;
            if let (Some(log), Some(admins)) = (log, first) {
                enrol_first(&log, &admins, quorum)?;
            }
            Ok(())
        }
        Command::Admin { command } => admin(command, pass_file),
        Command::Halt { config, reason } => {
            let config = Config::load(&config)?;
            match connect(&config)?.call(&Request::Halt {
                reason,
                source: "kinko-signer halt".into(),
            })? {
                Response::Ok => {
                    println!("halted: signing stops until a clear");
                    Ok(())
                }
                Response::Refused { code, reason, .. } => bail!("refused: {code}: {reason}"),
                other => bail!("unexpected answer to halt: {other:?}"),
            }
        }
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
        Command::Clear {
            config,
            reason,
            ceremony,
        } => clear(&config, &reason, &ceremony, pass_file),
        Command::VerifyLog { log } => {
            let lines = kinko_signer::log::verify(&log)?;
            println!("{}: {} lines, chain intact", log.display(), lines.len());
            Ok(())
        }
        Command::WitnessKey { keystore } => {
            let pass = read_passphrase(pass_file)?;
            let keys = Keystore::open(&keystore, &pass)?;
            drop(pass);
            println!(
                "{}",
                kinko_audit::public_key_hex(&keys.witness_key().verifying_key())
            );
            Ok(())
        }
        Command::EthOwner { keystore } => {
            let ks = Keystore::read(&keystore)?;
            if ks.role != Role::Cold {
                bail!(
                    "{} is not a cold keystore (kinko-signer init --role cold)",
                    keystore.display()
                );
            }
            let keys = confirm_and_unlock(true, &keystore, pass_file)?;
            let owner = kinko_signer::eth_cold::OwnerKey::new(&keys.master())?;
            println!("{}", owner.address());
            Ok(())
        }
        Command::EthXpub { keystore } => {
            let pass = read_passphrase(pass_file)?;
            let keys = Keystore::open(&keystore, &pass)?;
            drop(pass);
            let eth =
                kinko_signer::eth::EthKeys::new(&keys.master()).map_err(|r| anyhow::anyhow!(r.reason))?;
            let hot = eth
                .address(kinko_chain::eth::Branch::Hot, 0)
                .map_err(|r| anyhow::anyhow!(r.reason))?;
            println!("{}\n{}", eth.xpub(), hot.checksummed());
            Ok(())
        }
        Command::Witness {
            command: WitnessCommand::Export { log },
        } => witness_export(&log),
        Command::ProveControl {
            file,
            keystore,
            yes,
            out,
        } => prove_control(&file, &keystore, yes, out.as_deref(), pass_file),
    }
}

/// After what is to be signed has been shown: asks "sign?" unless `yes` (anything but yes
/// signs nothing), then unlocks the keystore.
fn confirm_and_unlock(yes: bool, keystore: &Path, pass_file: Option<&Path>) -> Result<keystore::Unlocked> {
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
    Ok(keys)
}

/// Largest challenge file read by `prove-control`.
const CHALLENGE_FILE_BYTES_MAX: u64 = 64 << 10;

fn prove_control(
    file: &Path,
    keystore: &Path,
    yes: bool,
    out: Option<&Path>,
    pass_file: Option<&Path>,
) -> Result<()> {
    use kinko_chain::control::ColdChallenge;
    let ks = Keystore::read(keystore)?;
    if ks.role != Role::Cold {
        bail!("{} is not a cold keystore", keystore.display());
    }
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(CHALLENGE_FILE_BYTES_MAX).read_to_string(&mut text))
        .with_context(|| format!("reading {}", file.display()))?;
    let challenge: ColdChallenge = serde_json::from_str(&text)
        .map_err(|e| anyhow!("BAD_FORMAT: {} is not a cold challenge: {e}", file.display()))?;
    let message = challenge
        .checked_message()
        .map_err(|e| anyhow!("{}: {e}", e.code()))?;
    if !challenge.keys.contains(&ks.watch_key) {
        bail!(
            "UNKNOWN_KEY: this keystore's key {} is not one of the challenge's cold keys",
            ks.watch_key
        );
    }
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "proof of control of the {} cold wallet ({} of {} keys), for the proof of reserves at sequence {}",
        challenge.asset,
        challenge.threshold,
        challenge.keys.len(),
        challenge.sequence
    )?;
    writeln!(o, "cold wallet: {}", challenge.descriptor)?;
    writeln!(o, "this key:    {}", ks.watch_key)?;
    writeln!(o, "message (a statement: it moves no coins):")?;
    for line in message.lines() {
        writeln!(o, "  {line}")?;
    }
    o.flush()?;
    drop(o);
    let keys = confirm_and_unlock(yes, keystore, pass_file)?;
    let sig = kinko_signer::sign::sign_cold_challenge(&challenge, &keys.master(), keys.watch_key())
        .map_err(|e| anyhow!("{}: {e}", e.code()))?;
    let target = match out {
        Some(p) => p.to_owned(),
        None => {
            let mut name = file.as_os_str().to_owned();
            name.push(format!(".{}.sig.json", ks.watch_key.fingerprint));
            PathBuf::from(name)
        }
    };
    write_atomic(
        &target,
        format!("{}\n", serde_json::to_string_pretty(&sig)?).as_bytes(),
    )?;
    println!("signed; written to {}", target.display());
    Ok(())
}

fn witness_export(log: &Path) -> Result<()> {
    let lines = kinko_signer::log::verify(log)?;
    let mut out = std::io::stdout().lock();
    for c in kinko_signer::log::cosignatures(&lines) {
        writeln!(out, "{}", serde_json::to_string(&c)?)?;
    }
    out.flush()?;
    Ok(())
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
    if let Some(refill) = read_eth_refill(file)? {
        return eth_offline_sign(&refill, file, &ks, keystore, yes, out, pass_file);
    }
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
    let keys = confirm_and_unlock(yes, keystore, pass_file)?;
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

/// An Ethereum refill request (`kinko custody refill ETH …`), if `file` is one.
fn read_eth_refill(file: &Path) -> Result<Option<kinko_chain::eth::cold::EthRefill>> {
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(PSBT_FILE_BYTES_MAX).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", file.display()))?;
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(None);
    };
    if value.get("kind").and_then(|k| k.as_str()) != Some(kinko_chain::eth::cold::REFILL_KIND) {
        return Ok(None);
    }
    let refill = serde_json::from_value(value)
        .map_err(|e| anyhow!("REFILL_INVALID: {} is not a refill request: {e}", file.display()))?;
    Ok(Some(refill))
}

/// A cold keyholder signs an Ethereum refill: the digest recomputed from the request's fields,
/// what moves where shown, a confirmation, the signature added to the file.
fn eth_offline_sign(
    refill: &kinko_chain::eth::cold::EthRefill,
    file: &Path,
    ks: &Keystore,
    keystore: &Path,
    yes: bool,
    out: Option<&Path>,
    pass_file: Option<&Path>,
) -> Result<()> {
    if ks.role != Role::Cold {
        bail!("{} is not a cold keystore", keystore.display());
    }
    let call = refill.call().map_err(|e| anyhow!("{e}"))?;
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "refill of {} {} (minor units) from the cold contract {} on chain {}, its nonce {}",
        refill.amount, refill.asset, call.contract, call.chain_id, call.nonce
    )?;
    writeln!(
        o,
        "call: to {}  value {} wei  data {} bytes",
        call.to,
        call.value,
        call.data.len()
    )?;
    if let kinko_chain::eth::TokenCall::Transfer { to, amount } =
        kinko_chain::eth::read_token_call(&call.data)
    {
        writeln!(o, "      token transfer of {amount} to {to}")?;
    }
    writeln!(
        o,
        "owners ({} of {}): {}",
        refill.threshold,
        refill.owners.len(),
        refill.owners.join(", ")
    )?;
    writeln!(o, "digest (recomputed): 0x{}", hex::encode(call.digest()))?;
    writeln!(o, "signatures so far: {}", refill.signatures.len())?;
    o.flush()?;
    drop(o);
    let keys = confirm_and_unlock(yes, keystore, pass_file)?;
    let owner = kinko_signer::eth_cold::OwnerKey::new(&keys.master())?;
    let sig = owner.sign_refill(refill)?;
    let mut signed = refill.clone();
    signed.signatures.push(sig);
    let target = out.unwrap_or(file);
    write_atomic(
        target,
        format!("{}\n", serde_json::to_string_pretty(&signed)?).as_bytes(),
    )?;
    println!(
        "signed as {}; {} signature(s) in {}",
        owner.address(),
        signed.signatures.len(),
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

fn read_admin(file: &Path) -> Result<Admin> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let a: Admin =
        serde_json::from_str(&text).with_context(|| format!("{} is not an admin record", file.display()))?;
    kinko_signer::admins::parse_admin(&a).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    Ok(a)
}

/// The first admins for `init`, read and checked (`None`: no admins given).
fn first_admins(log: Option<&Path>, files: &[PathBuf], quorum: u32) -> Result<Option<Vec<Admin>>> {
    if files.is_empty() {
        return Ok(None);
    }
    if log.is_none() {
        bail!("--admin needs --log (the signer's log, where admins are kept)");
    }
    if log.is_some_and(|l| std::fs::metadata(l).is_ok_and(|m| m.len() > 0)) {
        bail!("the log already has lines; later admins are added by `kinko-signer admin add`");
    }
    let admins = files.iter().map(|f| read_admin(f)).collect::<Result<Vec<_>>>()?;
    if quorum == 0 || quorum as usize > admins.len() {
        bail!(
            "--quorum must be between 1 and the number of admins ({})",
            admins.len()
        );
    }
    Ok(Some(admins))
}

fn enrol_first(log: &Path, admins: &[Admin], quorum: u32) -> Result<()> {
    let now = kinko_signer::Clock::now_ns(&SystemClock);
    kinko_signer::admins::enrol_first(log, admins, quorum, now)?;
    println!(
        "{} admin(s) enrolled in {}, quorum {quorum}",
        admins.len(),
        log.display()
    );
    Ok(())
}

fn connect(config: &Config) -> Result<SignerClient> {
    SignerClient::connect(&config.socket)
        .with_context(|| format!("connecting to {}", config.socket.display()))
}

/// What `admins` answers: the admins, quorum, thresholds and the heads digests bind.
struct AdminsNow {
    admins: Vec<Admin>,
    quorum: u32,
    thresholds: ReviewThresholds,
    head: [u8; 32],
    halt_seq: u64,
}

fn admins_of(client: &mut SignerClient) -> Result<AdminsNow> {
    match client.call(&Request::Admins)? {
        Response::Admins {
            admins,
            quorum,
            thresholds,
            head,
            halt_seq,
        } => Ok(AdminsNow {
            admins,
            quorum,
            thresholds,
            head,
            halt_seq,
        }),
        other => bail!("unexpected answer to admins: {other:?}"),
    }
}

/// The signer's identity in digests (its hot watch key, from `hello`).
fn identity_of(client: &mut SignerClient) -> Result<String> {
    match client.call(&Request::Hello)? {
        Response::Hello { hot, .. } => Ok(hot),
        other => bail!("unexpected answer to hello: {other:?}"),
    }
}

fn print_challenge(digest: &[u8; 32], what: &str) -> Result<()> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|_| anyhow!("the system random source failed"))?;
    let now = kinko_signer::Clock::now_ns(&SystemClock);
    println!("{what}");
    println!("digest:    {}", hex::encode(digest));
    println!(
        "challenge: {}",
        kinko_signer::admins::challenge_text(digest, now, &nonce)
    );
    println!(
        "Each admin pastes the challenge into the operators' console (Signer ceremony) and sends \
         back the assertion file; it is good for {} s.",
        kinko_signer::admins::CEREMONY_MAX_AGE_S
    );
    Ok(())
}

fn read_assertions(files: &[PathBuf], admins: &[Admin]) -> Result<Vec<AdminAssertion>> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let file: AssertionFile = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an assertion file", f.display()))?;
            assertion_from_file(&file, admins).map_err(|e| anyhow!("{}: {e}", f.display()))
        })
        .collect()
}

fn admin(command: AdminCommand, pass_file: Option<&Path>) -> Result<()> {
    let (config_path, change, ceremony) = match command {
        AdminCommand::List { config } => {
            let config = Config::load(&config)?;
            let AdminsNow {
                admins,
                quorum,
                thresholds: t,
                head,
                ..
            } = admins_of(&mut connect(&config)?)?;
            println!("quorum: {quorum}");
            println!(
                "review: dual approval from {} sats, {} approvals, fan-in above {} users in {} s",
                t.dual_approval_sats, t.approvals, t.fan_in_users_max, t.fan_in_window_s
            );
            println!("admin head: {}", hex::encode(head));
            for a in admins {
                println!(
                    "{}\t{}\t{}\tpasskey {}",
                    a.id,
                    a.name,
                    a.email,
                    hex::encode(&a.credential_id)
                );
            }
            return Ok(());
        }
        AdminCommand::Add {
            config,
            admin,
            ceremony,
        } => (
            config,
            AdminChange::Add {
                admin: read_admin(&admin)?,
            },
            ceremony,
        ),
        AdminCommand::Remove { config, id, ceremony } => (config, AdminChange::Remove { id }, ceremony),
        AdminCommand::Quorum {
            config,
            quorum,
            ceremony,
        } => (config, AdminChange::Quorum { quorum }, ceremony),
        AdminCommand::Thresholds {
            config,
            dual_approval_sats,
            approvals,
            fan_in_users_max,
            fan_in_window_s,
            ceremony,
        } => (
            config,
            AdminChange::Thresholds {
                thresholds: ReviewThresholds {
                    dual_approval_sats,
                    approvals,
                    fan_in_users_max,
                    fan_in_window_s,
                },
            },
            ceremony,
        ),
    };
    let config = Config::load(&config_path)?;
    let mut client = connect(&config)?;
    let AdminsNow { admins, head, .. } = admins_of(&mut client)?;
    let digest = kinko_signer::admins::ceremony_digest(&identity_of(&mut client)?, &head, &change);
    if ceremony.print_challenge {
        return print_challenge(&digest, &format!("ceremony: {}", serde_json::to_string(&change)?));
    }
    let assertions = read_assertions(&ceremony.assertions, &admins)?;
    let pass = read_passphrase(pass_file)?;
    let keys = Keystore::open(&config.keystore, &pass)?;
    drop(pass);
    let mac = kinko_signer::admins::admin_mac(&keys.clear_key(), &digest);
    match client.call(&Request::AdminChange {
        change,
        assertions,
        mac,
    })? {
        Response::Ok => {
            println!("done");
            Ok(())
        }
        Response::Refused { code, reason, .. } => bail!("refused: {code}: {reason}"),
        other => bail!("unexpected answer to admin_change: {other:?}"),
    }
}

fn clear(config_path: &Path, reason: &str, ceremony: &Ceremony, pass_file: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let mut client = connect(&config)?;
    let AdminsNow { admins, halt_seq, .. } = admins_of(&mut client)?;
    let digest = kinko_signer::admins::clear_digest(&identity_of(&mut client)?, halt_seq, reason);
    if ceremony.print_challenge {
        return print_challenge(
            &digest,
            &format!("resume signing after the halt at log line {halt_seq}: {reason}"),
        );
    }
    let assertions = read_assertions(&ceremony.assertions, &admins)?;
    let pass = read_passphrase(pass_file)?;
    let keys = Keystore::open(&config.keystore, &pass)?;
    drop(pass);
    let nonce = match client.call(&Request::ClearChallenge)? {
        Response::Challenge { nonce } => nonce,
        other => bail!("unexpected answer to clear_challenge: {other:?}"),
    };
    let mac = clear_mac(&keys.clear_key(), &nonce, reason);
    match client.call(&Request::Clear {
        nonce,
        reason: reason.to_owned(),
        mac,
        assertions,
    })? {
        Response::Ok => {
            println!("cleared: signing resumes");
            Ok(())
        }
        Response::Refused { code, reason, .. } => bail!("refused: {code}: {reason}"),
        other => bail!("unexpected answer to clear: {other:?}"),
    }
}
