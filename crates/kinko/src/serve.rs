//! `kinko serve`, `kinko snapshot`, `kinko audit`: opening a data directory and running the engine.

use crate::config::Config;
use anyhow::{bail, Context};
use kinko_core::{AssetCode, Command, Reply};
use kinko_engine::{recover, EngineHandle, RecoveryReport, Sequencer, SystemClock};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An exclusive lock on the data directory, held for as long as the engine runs; it records the
/// pid of the holder so that `kinko snapshot` can reach a running server.
pub struct DataDirLock {
    _lock: Flock<File>,
}

const LOCK_FILE: &str = "LOCK";

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, _)) => bail!(
                "data directory {} is in use by another kinko process (pid {})",
                data_dir.display(),
                read_pid(data_dir).map_or("unknown".into(), |p| p.to_string())
            ),
        };
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(lock, "{}", std::process::id())?;
        lock.sync_all()?;
        Ok(DataDirLock { _lock: lock })
    }
}

fn read_pid(data_dir: &Path) -> Option<i32> {
    let mut s = String::new();
    File::open(data_dir.join(LOCK_FILE))
        .ok()?
        .read_to_string(&mut s)
        .ok()?;
    s.trim().parse().ok()
}

pub(crate) fn log_recovery(r: &RecoveryReport) {
    if let Some(t) = &r.torn_tail {
        tracing::warn!(torn_tail = %t, "journal had a torn last write (crash mid-write); it was cut off");
    }
    tracing::info!(
        snapshot_seq = r.snapshot_seq,
        replayed = r.replayed,
        head_seq = r.head_seq,
        head_hash = %hex::encode(r.head_hash),
        state_hash = %hex::encode(r.state_hash),
        replay_ms = r.replay_ns / 1_000_000,
        "recovered"
    );
}

/// Defines the configured assets that the engine does not know yet (journaled like any command)
/// and refuses to start if a configured asset contradicts the journal.
/// The operator token from KINKO_OPERATOR_TOKEN or `identity.operator_token_file`.
pub(crate) fn operator_token(config: &Config) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var("KINKO_OPERATOR_TOKEN") {
        let t = t.trim().to_owned();
        if t.len() < 32 {
            bail!("KINKO_OPERATOR_TOKEN must be at least 32 characters");
        }
        return Ok(Some(t));
    }
    let f = &config.identity.operator_token_file;
    if f.as_os_str().is_empty() {
        return Ok(None);
    }
    let t = std::fs::read_to_string(f)
        .with_context(|| format!("identity.operator_token_file {}", f.display()))?
        .trim()
        .to_owned();
    if t.len() < 32 {
        bail!(
            "the operator token in {} must be at least 32 characters",
            f.display()
        );
    }
    Ok(Some(t))
}

/// Journals the configured identity policy (security-change lock, proof freshness) when it
/// differs from the engine's.
/// The configured risk policy becomes the engine's at first start; afterwards the engine's
/// (changed by two-admin proposals) stands, and a differing config is only reported.
fn set_risk_policy(handle: &EngineHandle, config: &Config) -> anyhow::Result<()> {
    let assets: Vec<(String, kinko_core::AssetId, u8)> = handle.query(|e| {
        e.assets()
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    a.code.as_str().to_owned(),
                    kinko_core::AssetId(i as u32),
                    a.decimals,
                )
            })
            .collect()
    })?;
    let want = config.risk.policy(&|code| {
        assets
            .iter()
            .find(|(c, _, _)| c == code)
            .map(|(_, id, d)| (*id, *d))
    })?;
    let have = handle.query(|e| e.risk_policy().clone())?;
    if have == want {
        return Ok(());
    }
    if have != kinko_core::risk::RiskPolicy::default() {
        tracing::warn!("the configured risk policy ([risk], or the built-in one without it) differs from the engine's, which admins change by proposals; the engine's stands");
        return Ok(());
    }
    let c = handle
        .submit(Command::SetRiskPolicy(want))
        .map_err(|e| anyhow::anyhow!("setting the risk policy: {e}"))?;
    c.reply
        .map_err(|e| anyhow::anyhow!("setting the risk policy: {e}"))?;
    tracing::info!(rules = config.risk.rules.len(), "risk policy set from the config");
    Ok(())
}

fn set_identity_policy(handle: &EngineHandle, config: &Config) -> anyhow::Result<()> {
    let want = config.identity.policy();
    let have = handle.query(|e| e.identity().policy())?;
    if have != want {
        let c = handle
            .submit(Command::Identity(
                kinko_core::identity::IdentityCommand::SetPolicy(want),
            ))
            .map_err(|e| anyhow::anyhow!("setting the identity policy: {e}"))?;
        c.reply
            .map_err(|e| anyhow::anyhow!("setting the identity policy: {e}"))?;
    }
    Ok(())
}

/// Makes each configured asset's withdrawal fee the engine's: a `SetWithdrawalFee` is
/// journaled (and logged) at start when the engine's differs, so the config is the source of
/// truth and the journal records every change with its time. Requests already made keep the
/// fee they were charged.
pub(crate) fn set_withdrawal_fees(handle: &EngineHandle, config: &Config) -> anyhow::Result<()> {
    for a in &config.assets {
        let want = a.withdrawal_fee()?;
        let lookup = a.code.clone();
        let Some((id, have)) = handle.query(move |e| {
            e.asset_by_code(&lookup)
                .map(|id| (id, e.wallet().withdrawal_fee(id)))
        })?
        else {
            bail!("asset {} is not defined in the engine", a.code);
        };
        if have == want {
            continue;
        }
        let c = handle
            .submit(Command::SetWithdrawalFee { asset: id, fee: want })
            .map_err(|e| anyhow::anyhow!("setting the withdrawal fee of {}: {e}", a.code))?;
        c.reply
            .map_err(|r| anyhow::anyhow!("setting the withdrawal fee of {}: {}", a.code, r.code()))?;
        tracing::info!(asset = %a.code, was = %have.to_decimal(a.decimals), now = %want.to_decimal(a.decimals),
            "withdrawal fee set from the config");
    }
    Ok(())
}

/// Mirrors the daily TOTP-only budget of each asset whose coins a signer holds (a `[[custody]]`
/// section) into the engine (journaled at start when it differs), as the withdrawal fee is.
/// An asset without a signer has no budget to mirror.
pub(crate) fn set_totp_budgets(handle: &EngineHandle, config: &Config) -> anyhow::Result<()> {
    for a in &config.assets {
        let custodied = config.custody.iter().any(|c| c.asset == a.code);
        let want = if custodied {
            a.totp_budget()?
        } else {
            kinko_core::Amount(0)
        };
        let lookup = a.code.clone();
        let Some((id, have)) = handle.query(move |e| {
            e.asset_by_code(&lookup)
                .map(|id| (id, e.wallet().totp_budget(id).unwrap_or(kinko_core::Amount(0))))
        })?
        else {
            bail!("asset {} is not defined in the engine", a.code);
        };
        if have == want {
            continue;
        }
        let c = handle
            .submit(Command::SetTotpBudget {
                asset: id,
                budget: want,
            })
            .map_err(|e| anyhow::anyhow!("setting the TOTP budget of {}: {e}", a.code))?;
        c.reply
            .map_err(|r| anyhow::anyhow!("setting the TOTP budget of {}: {}", a.code, r.code()))?;
        tracing::info!(asset = %a.code, now = %want.to_decimal(a.decimals), "TOTP budget set from the config");
    }
    Ok(())
}

pub(crate) fn define_assets(handle: &EngineHandle, config: &Config) -> anyhow::Result<()> {
    for a in &config.assets {
        let code = AssetCode::new(&a.code).map_err(|e| anyhow::anyhow!("asset {}: {e}", a.code))?;
        let lookup = a.code.clone();
        let known = handle.query(move |e| {
            e.asset_by_code(&lookup)
                .and_then(|id| e.asset(id))
                .map(|x| x.decimals)
        })?;
        match known {
            Some(d) if d == a.decimals => continue,
            Some(d) => bail!(
                "asset {} has {} decimals in the config but {d} in the journal; fix the config",
                a.code,
                a.decimals
            ),
            None => {}
        }
        let c = handle
            .submit(Command::DefineAsset {
                code,
                decimals: a.decimals,
            })
            .map_err(|e| anyhow::anyhow!("defining asset {}: {e}", a.code))?;
        match c.reply {
            Ok(Reply::AssetDefined { created, .. }) => {
                if created {
                    tracing::info!(asset = %a.code, decimals = a.decimals, "asset defined");
                }
            }
            Ok(other) => bail!("unexpected reply defining asset {}: {other:?}", a.code),
            Err(r) => bail!(
                "asset {} in the config contradicts the journal ({}: {r}); fix the config",
                a.code,
                r.code()
            ),
        }
    }
    for m in &config.markets {
        let section = m.clone();
        let spec = handle.query(move |e| section.spec(e))??;
        let symbol = m.symbol.clone();
        let known = handle.query(move |e| {
            e.trading()
                .market_by_symbol(&symbol)
                .and_then(|id| e.trading().market(id).map(|x| (x.meta.spec.clone(), id)))
        })?;
        let differs = || {
            anyhow::anyhow!(
                "market {} in the config differs from the journal; markets are changed by operator commands, not by editing the config",
                m.symbol
            )
        };
        let market = match known {
            Some((k, _)) if k != spec => return Err(differs()),
            Some((_, id)) => id,
            None => {
                let c = handle
                    .submit(Command::DefineMarket(spec))
                    .map_err(|e| anyhow::anyhow!("defining market {}: {e}", m.symbol))?;
                match c.reply {
                    Ok(Reply::MarketDefined { market, .. }) => {
                        tracing::info!(market = %m.symbol, "market defined");
                        market
                    }
                    Ok(other) => bail!("defining market {}: unexpected reply {other:?}", m.symbol),
                    Err(r) => bail!("market {} in the config is invalid ({}: {r})", m.symbol, r.code()),
                }
            }
        };
        // The passive band: set once, when the market is new or was defined before markets had
        // one (its journal then gets the config's); after that it differs only by an edit.
        let band = m.passive_band();
        let current = handle.query(move |e| e.trading().market(market).and_then(|x| x.meta.passive))?;
        match current {
            Some(b) if b == band => {}
            Some(_) => return Err(differs()),
            None => {
                let c = handle
                    .submit(Command::SetPassiveBand { market, band })
                    .map_err(|e| anyhow::anyhow!("setting the passive band of {}: {e}", m.symbol))?;
                if let Err(r) = c.reply {
                    bail!(
                        "market {}: passive_buy_floor_bps / passive_sell_ceiling_bps are invalid ({}: {r}): the floor must be from 1 to 10000 - band_bps, the ceiling from 10000 + band_bps to 1000000",
                        m.symbol,
                        r.code()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Journals what the configuration defines (assets, fees, budgets, identity and risk policy);
/// each step is idempotent.
fn configure_engine(handle: &kinko_engine::EngineHandle, config: &Config) -> anyhow::Result<()> {
    define_assets(handle, config)?;
    set_withdrawal_fees(handle, config)?;
    set_totp_budgets(handle, config)?;
    set_identity_policy(handle, config)?;
    set_risk_policy(handle, config)?;
    Ok(())
}

pub fn serve(config: &Config, demo: bool) -> anyhow::Result<()> {
    use kinko_engine::ports::{ChainAdapter, NoChain};
    use kinko_sim::SimChain;
    use std::sync::Arc;
    // The simulated chain mints deposits: only in a demo or when the config asks for it, and
    // never beside a real chain (`Config::validate` refuses `[sim] enabled` with custody).
    if demo && !config.custody.is_empty() {
        bail!("--demo runs on the simulated chain, which mints deposits: refused beside a real chain ([[custody]] {}); remove --demo", config.custody.iter().map(|c| c.asset.as_str()).collect::<Vec<_>>().join(", "));
    }
    if config.cluster.is_some() && (demo || config.sim.enabled) {
        bail!("a replicated cluster ([cluster]) runs on real chains only: remove --demo or [sim] enabled");
    }
    let simulated = demo || config.sim.enabled;
    let mut api_config = config.api.api_config()?;
    // The listener first: a port in use (or not ours to bind) stops the start before the data
    // directory, a master key, a journal or audit keys exist.
    let listener = std::net::TcpListener::bind(api_config.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server running there? choose another with --listen or api.listen); nothing was created",
                api_config.listen
            )
        })?;
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    api_config.identity = config.identity.config()?;
    // Sign-in failure counts survive restarts (an attacker cannot reset them by crashing us).
    api_config.throttle_file = Some(config.data_dir.join(kinko_api::throttle::FILE_NAME));
    api_config.operator_token_hash =
        operator_token(config)?.map(|t| kinko_api::stepup::operator_token_hash(&t));
    let vault = match std::env::var("KINKO_MASTER_KEY") {
        Ok(hex) => kinko_api::vault::Vault::from_hex(hex.trim()).context("KINKO_MASTER_KEY")?,
        Err(_) => kinko_api::vault::Vault::load_or_create(&config.api.master_key_file, true)?,
    };
    let engine_config = config.engine_config();
    let repl: Option<Box<dyn kinko_engine::replication::Replicator>> = match &config.cluster {
        None => None,
        Some(c) => {
            let log = kinko_cluster::JetStreamLog::connect(c.cluster_config())
                .context("cannot join the replicated cluster ([cluster])")?;
            tracing::info!(node = %c.node, servers = %c.servers.join(","), standby = c.standby,
                "cluster: following the replicated journal; writes only with the lease");
            Some(Box::new(log))
        }
    };
    let node = kinko_engine::launch::open_with(&engine_config, repl)
        .context("recovery failed; the engine will not start")?;
    log_recovery(&node.report);
    let handle = node.sequencer.handle();
    if config.cluster.is_none() {
        configure_engine(&handle, config)?;
    } else {
        // In a cluster only the primary writes: the configured assets, fees and policies are
        // journaled once this node holds the lease (each is idempotent, as at every start).
        let (h, c) = (handle.clone(), config.clone());
        std::thread::Builder::new()
            .name("kinko-cluster-setup".into())
            .spawn(move || {
                use kinko_engine::Role;
                loop {
                    match h.stats().role() {
                        Role::Primary => {
                            if let Err(e) = configure_engine(&h, &c) {
                                tracing::error!(error = %e, "cluster: configuring the engine as the new primary failed");
                            }
                            return;
                        }
                        Role::Deposed => return,
                        Role::Single | Role::Standby => std::thread::sleep(std::time::Duration::from_millis(50)),
                    }
                }
            })?;
    }
    // The simulated chain (deposits via `kinko sim deposit`, withdrawals that complete by
    // themselves; nothing on it is real money) runs only in a demo or with `[sim] enabled`.
    // Without it and without `[[custody]]`, deposits are unavailable (`DEPOSITS_UNAVAILABLE`).
    let sim = simulated.then(|| {
        let seed =
            *blake3::hash(format!("kinko demo chain {}", config.data_dir.display()).as_bytes()).as_bytes();
        let assets: Vec<&str> = kinko_sim::demo::CHAIN_ASSETS
            .iter()
            .copied()
            .filter(|c| config.assets.iter().any(|a| a.code == *c))
            .collect();
        Arc::new(SimChain::new(seed, &assets))
    });
    let mut custody = Vec::new();
    let mut chains: Vec<Arc<dyn ChainAdapter>> = Vec::new();
    for c in config.custody.iter().filter(|c| !c.is_ethereum()) {
        let decimals = config
            .assets
            .iter()
            .find(|a| a.code == c.asset)
            .map_or(8, |a| a.decimals);
        let cc = c.custody_config(decimals, &config.data_dir)?;
        let gate = Arc::new(std::sync::atomic::AtomicU64::new(0));
        chains.push(Arc::new(
            kinko_custody::UtxoChain::new(&cc.asset, cc.network, cc.hot_key.clone())
                .gated(gate.clone())
                .with_confirmations(cc.confirmations),
        ));
        custody.push((cc, gate));
    }
    let eth_custody = crate::config::eth_custody(
        &config.custody,
        |code| config.assets.iter().find(|a| a.code == code).map(|a| a.decimals),
        &config.data_dir,
    )?;
    for e in &eth_custody {
        let confirmations = u32::try_from(e.confirmations).unwrap_or(u32::MAX);
        let codes = e.assets.iter().map(|a| a.code.clone()).collect();
        chains.push(Arc::new(kinko_custody::eth_service::EthChain::new(
            codes,
            e.account,
            confirmations,
        )));
    }
    if let Some(s) = &sim {
        chains.push(s.clone());
    }
    let chain: Arc<dyn ChainAdapter> = if chains.is_empty() {
        Arc::new(NoChain)
    } else {
        Arc::new(kinko_engine::ports::Chains(chains))
    };
    let vault_for_custody = Arc::new(vault.clone());
    let gateway = kinko_api::server::gateway(&node, vault, api_config, chain);
    let eth_limits = eth_custody.iter().flat_map(|e| &e.assets).map(|a| {
        let l = kinko_api::metrics::HotLimits {
            share_bps: a.hot_share_bps,
            cap: u64::try_from(a.hot_cap).unwrap_or(u64::MAX),
        };
        (a.code.clone(), l)
    });
    gateway.set_hot_limits(
        custody
            .iter()
            .map(|(cc, _)| {
                let l = kinko_api::metrics::HotLimits {
                    share_bps: cc.hot_share_bps,
                    cap: cc.hot_cap,
                };
                (cc.asset.clone(), l)
            })
            .chain(eth_limits)
            .collect(),
    );
    let mut registry = kinko_custody::Registry::default();
    let mut custody_threads: Vec<kinko_custody::CustodyThread> = custody
        .into_iter()
        .map(|(cc, gate)| {
            tracing::info!(asset = %cc.asset, network = cc.network.name(), node = %cc.rpc_url,
                signer = %cc.signer_socket.display(), "custody service starting");
            let link = kinko_engine::link::EngineLink::new(handle.clone(), node.read.clone());
            let shared = registry.add(
                kinko_custody::Custody::new(cc, link, Some(vault_for_custody.clone()))
                    .with_receive_gate(gate)
                    .with_health(gateway.health.clone()),
            );
            kinko_custody::spawn_shared(shared)
        })
        .collect();
    for e in eth_custody {
        tracing::info!(chain_id = e.chain_id, node = %e.rpc_url, signer = %e.signer_socket.display(),
            assets = ?e.assets.iter().map(|a| &a.code).collect::<Vec<_>>(), "Ethereum custody service starting");
        let link = kinko_engine::link::EngineLink::new(handle.clone(), node.read.clone());
        let c = kinko_custody::eth_service::EthCustody::new(e, link, Some(vault_for_custody.clone()))?
            .with_health(gateway.health.clone());
        custody_threads.push(kinko_custody::eth_service::spawn_eth(registry.add_eth(c)));
    }
    gateway.set_custody(Arc::new(registry));
    let audit_dir = config.audit_dir();
    std::fs::create_dir_all(&audit_dir).with_context(|| format!("cannot create {}", audit_dir.display()))?;
    let audit_key = audit_key(config)?;
    let public = kinko_audit::public_key_hex(&audit_key.verifying_key());
    let log = kinko_audit::AuditLog::open(&audit_dir, audit_key).with_context(|| {
        format!(
            "the audit log in {} failed verification; kinko will not start",
            audit_dir.display()
        )
    })?;
    tracing::info!(dir = %audit_dir.display(), entries = log.size(), public_key = %public, "audit log open");
    let trail = kinko_api::trail::Trail::new(log);
    let _ = gateway.trail.set(trail.clone());
    let witness_thread = crate::witness::start(config, handle.clone(), Some(trail))?;
    gateway.set_mailer(config.mail.mailer(&config.data_dir)?);
    let _ = gateway
        .proofs
        .set(std::sync::Arc::new(kinko_api::proofs::ProofStore::new(
            crate::proof::proofs_dir(config),
        )));
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if config.api.worker_threads > 0 {
        rt.worker_threads(config.api.worker_threads);
    }
    let rt = rt.enable_all().thread_name("kinko-http").build()?;
    let served: anyhow::Result<()> = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let http = kinko_api::server::Http::start_on(gateway.clone(), listener)
            .await
            .with_context(|| format!("cannot listen on {}", gateway.config.listen))?;
        let api = format!("http://{}", http.addr);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut demo_task = None;
        let mut sim_task = None;
        let audit_task = Some(tokio::spawn(kinko_api::trail::run(
            gateway.clone(),
            std::time::Duration::from_secs(config.audit.checkpoint_s),
            stop_rx.clone(),
        )));
        let report_task = (config.reports.segregation_every_s > 0).then(|| {
            tokio::spawn(crate::report::run_schedule(
                gateway.clone(),
                config.reports_dir(),
                std::time::Duration::from_secs(config.reports.segregation_every_s),
                stop_rx.clone(),
            ))
        });
        if sim.is_some() {
            gateway.simulated.store(true, std::sync::atomic::Ordering::Release);
            sim_task = Some(tokio::spawn(kinko_sim::run_sim(gateway.clone(), stop_rx.clone())));
            tracing::warn!("running on a SIMULATED chain (--demo or [sim] enabled): deposits (`kinko sim deposit`) and withdrawals are not real");
        } else if config.custody.is_empty() {
            tracing::warn!("no [[custody]] configured and the simulated chain is off: deposits and withdrawals of chain assets are unavailable");
        }
        if let (Some(sim), true) = (&sim, demo) {
            let c = kinko_sim::demo::seed(&gateway, sim, &config.data_dir, &api).await?;
            demo_task = Some(tokio::spawn(kinko_sim::demo::run_reference_refresh(gateway.clone(), stop_rx)));
            tracing::info!(
                credentials = %config.data_dir.join(kinko_sim::demo::CREDENTIALS_FILE).display(),
                traders = c.traders.len(),
                "demo ready: try `curl {api}/api/v1/markets`"
            );
        }
        gateway.set_ready(true);
        tracing::info!(%api, data_dir = %config.data_dir.display(), pid = std::process::id(), "kinko serving");
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = usr1.recv() => {
                    let h = handle.clone();
                    match tokio::task::spawn_blocking(move || h.snapshot()).await {
                        Ok(Ok(p)) => tracing::info!(path = %p.display(), "snapshot on request"),
                        Ok(Err(e)) => tracing::error!(error = %e, "snapshot on request failed"),
                        Err(e) => tracing::error!(error = %e, "snapshot on request failed"),
                    }
                }
            }
        }
        tracing::info!("shutting down: draining HTTP requests");
        gateway.set_ready(false);
        let _ = stop_tx.send(true);
        for t in [demo_task, sim_task, audit_task, report_task].into_iter().flatten() {
            let _ = t.await;
        }
        http.stop().await?;
        Ok(())
    });
    drop(gateway);
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    for t in custody_threads {
        t.stop();
    }
    drop(witness_thread);
    tracing::info!("finishing queued commands, writing a snapshot");
    let engine = node.sequencer.shutdown().map_err(anyhow::Error::msg)?;
    tracing::info!(
        last_seq = engine.last_seq(),
        state_hash = %hex::encode(engine.state_hash()),
        "stopped cleanly"
    );
    served
}

fn newest_snapshot(dir: &Path) -> Option<(PathBuf, std::time::SystemTime)> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
        .filter(|(p, _)| p.extension().is_some_and(|x| x == "snap"))
        .max_by_key(|(_, t)| *t)
}

pub fn snapshot(config: &Config, timeout_s: u64) -> anyhow::Result<()> {
    match DataDirLock::acquire(&config.data_dir) {
        Ok(_lock) => match offline_snapshot(config)? {
            None => {
                println!("the journal is empty: nothing to snapshot");
                Ok(())
            }
            Some((path, seq)) => {
                println!("snapshot {} at seq {seq}", path.display());
                Ok(())
            }
        },
        Err(_) => {
            let (path, pid) = server_snapshot(config, timeout_s)?;
            println!("snapshot {} written by kinko serve (pid {pid})", path.display());
            Ok(())
        }
    }
}

/// Recovers the state and writes a snapshot of it, with no server running (the caller holds
/// the [`DataDirLock`]): the snapshot's path and sequence, or `None` for an empty journal.
pub(crate) fn offline_snapshot(config: &Config) -> anyhow::Result<Option<(PathBuf, u64)>> {
    let engine_config = config.engine_config();
    let (engine, journal, report) = recover(&engine_config).context("recovery failed")?;
    log_recovery(&report);
    if engine.last_seq() == 0 {
        return Ok(None);
    }
    // Shutting the sequencer down writes the snapshot.
    let seq =
        Sequencer::start(engine, journal, engine_config.clone(), SystemClock).map_err(anyhow::Error::msg)?;
    let engine = seq.shutdown().map_err(anyhow::Error::msg)?;
    let (path, _) = newest_snapshot(&engine_config.snapshot_dir()).context("no snapshot was written")?;
    Ok(Some((path, engine.last_seq())))
}

/// Asks the `kinko serve` that holds the data directory for a snapshot (SIGUSR1) and waits for
/// the new file: its path and the server's pid.
pub(crate) fn server_snapshot(config: &Config, timeout_s: u64) -> anyhow::Result<(PathBuf, i32)> {
    let engine_config = config.engine_config();
    let pid = read_pid(&config.data_dir).context("data directory is locked but names no pid")?;
    let before = newest_snapshot(&engine_config.snapshot_dir());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGUSR1)
        .with_context(|| format!("cannot signal kinko serve (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    while Instant::now() < deadline {
        let now = newest_snapshot(&engine_config.snapshot_dir());
        if let Some((p, _)) = now.as_ref().filter(|n| Some(*n) != before.as_ref()) {
            return Ok((p.clone(), pid));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("kinko serve (pid {pid}) did not write a snapshot within {timeout_s} s")
}

/// `kinko audit verify`: every entry, the Merkle tree, every checkpoint's signature and its
/// consistency with the current tree, inclusion proofs. Ends with a one-line verdict; returns
/// whether the log verified (a log that cannot be read or a missing key is an error instead).
/// Whether `path` names a file inside the directory `dir` (both as they resolve now).
fn inside(path: &Path, dir: &Path) -> bool {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

/// The audit checkpoint key, outside the data directory: refused inside it unless
/// `audit.dangerous_key_in_data_dir`; a key at the old default (`<audit dir>/checkpoint.key`)
/// is moved out to `audit.key_file` first.
pub(crate) fn audit_key(config: &Config) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let path = config.audit_key_file();
    let legacy = config.audit_key_file_legacy();
    if inside(&path, &config.data_dir) && !config.audit.dangerous_key_in_data_dir {
        bail!(
            "the audit checkpoint key {} is inside the data directory {}: whoever can rewrite the \
             data directory could rewrite the audit log and sign it again. Keep it elsewhere \
             (audit.key_file), or accept the risk with audit.dangerous_key_in_data_dir = true",
            path.display(),
            config.data_dir.display()
        );
    }
    if legacy != path && legacy.exists() {
        if path.exists() {
            bail!(
                "two audit checkpoint keys: {} (the old default, inside the data directory) and {}; \
                 keep the one whose public key your auditors hold, delete the other",
                legacy.display(),
                path.display()
            );
        }
        move_key(&legacy, &path)?;
        tracing::warn!(from = %legacy.display(), to = %path.display(),
            "moved the audit checkpoint key out of the data directory; back it up from its new place");
    }
    kinko_audit::load_or_create_key(&path).with_context(|| format!("audit key {}", path.display()))
}

/// Moves a key file: a new file (mode 0600, never replacing one) synced, then the old removed.
fn move_key(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let bytes = zeroize_vec(std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)?;
        f.write_all(&bytes.0)?;
        f.sync_all()
    })();
    written.with_context(|| {
        format!(
            "cannot move the audit checkpoint key from {} to {} (audit.key_file)",
            from.display(),
            to.display()
        )
    })?;
    let sync = |p: &Path| {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(d).and_then(|d| d.sync_all());
        }
    };
    sync(to);
    std::fs::remove_file(from).with_context(|| format!("cannot remove {}", from.display()))?;
    sync(from);
    Ok(())
}

/// Key bytes, wiped when dropped.
struct Wiped(Vec<u8>);
impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}
fn zeroize_vec(v: Vec<u8>) -> Wiped {
    Wiped(v)
}

pub fn audit_verify(
    config: &Config,
    dir: Option<PathBuf>,
    public_key: Option<String>,
    witness: Option<&Path>,
) -> anyhow::Result<bool> {
    let dir = dir.unwrap_or_else(|| config.audit_dir());
    let key = match public_key {
        Some(hex) => kinko_audit::parse_public_key(hex.trim()).context("--public-key")?,
        None => {
            // The key where serve keeps it, else at the old default inside the audit directory.
            let path = [config.audit_key_file(), config.audit_key_file_legacy()]
                .into_iter()
                .find(|p| p.exists())
                .unwrap_or_else(|| config.audit_key_file());
            if !path.exists() {
                bail!(
                    "no audit key at {}: pass --public-key HEX (kept off this host)",
                    path.display()
                );
            }
            kinko_audit::load_or_create_key(&path)
                .with_context(|| format!("audit key {}", path.display()))?
                .verifying_key()
        }
    };
    if !dir.is_dir() {
        bail!("{} is not an audit directory", dir.display());
    }
    println!("audit log  {}", dir.display());
    println!("public_key {}", kinko_audit::public_key_hex(&key));
    match kinko_audit::verify_dir(&dir, &key) {
        Ok(report) => {
            print!("{report}");
            let (cos, from_file) =
                crate::witness::cosignatures(config, kinko_audit::witness::LOG_AUDIT, witness)?;
            let Some(wkey) = config.witness_key()? else {
                println!("witness    not checked: no witness.public_key configured");
                println!(
                    "verdict: ok — {} records, {} checkpoints verified",
                    report.entries, report.checkpoints
                );
                return Ok(true);
            };
            let check = crate::witness::audit_check(&dir, &cos, &wkey)?;
            let (lines, bad) = crate::witness::report(&check, "entry", report.entries, from_file);
            for l in lines {
                println!("{l}");
            }
            if let Some(why) = bad {
                println!("verdict: {}", crate::witness::verdict_text(&why));
                return Ok(false);
            }
            println!(
                "verdict: ok — {} records, {} checkpoints verified, {} witness cosignatures match",
                report.entries, report.checkpoints, check.cosignatures
            );
            Ok(true)
        }
        Err(e @ kinko_audit::AuditError::Io { .. }) => {
            println!("verdict: UNREADABLE — {e}");
            Ok(false)
        }
        Err(e) => {
            println!("verdict: TAMPERED — {e}");
            Ok(false)
        }
    }
}

pub fn audit(config: &Config) -> anyhow::Result<()> {
    let _lock = DataDirLock::acquire(&config.data_dir)
        .context("stop kinko serve first; a running server audits itself periodically")?;
    let (mut engine, _journal, report) = recover(&config.engine_config()).context("recovery failed")?;
    log_recovery(&report);
    let r = engine.audit().map_err(|v| anyhow::anyhow!("{v}"))?;
    println!("last_seq    {}", r.last_seq);
    println!("assets      {}", r.assets);
    println!("accounts    {}", r.ledger.accounts);
    println!("transfers   {}", r.ledger.transfers);
    println!("open_holds  {}", r.ledger.open_pending);
    println!("state_hash  {}", hex::encode(engine.state_hash()));
    println!("ok: every invariant holds");
    Ok(())
}
