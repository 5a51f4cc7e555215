//! The simulated world of the embedded default and the demo: [`SimChain`], a chain that exists
//! only inside this process (every chain asset "on chain", addresses `sim1` + 40 hex digits),
//! [`run_sim`], the loop that carries its withdrawals and deposits through, and [`demo`], the
//! seeded traders and market maker of `kinko serve --demo`. It runs only with `--demo` or
//! `[sim] enabled = true`, never beside a real chain (`[[custody]]`): it mints deposits. It
//! plugs into the gateway through the same [`ChainAdapter`] port as a real chain.
#![forbid(unsafe_code)]

pub mod demo;
mod demo_quorum;

use kinko_core::UserId;
use kinko_engine::ports::ChainAdapter;

/// The demo's simulated chain: every asset is "on chain"; addresses are `sim1` + 40 hex digits
/// derived from a per-data-directory seed.
pub struct SimChain {
    seed: [u8; 32],
    assets: Vec<String>,
}

impl SimChain {
    /// A simulated chain for the listed assets (fiat assets are left out).
    pub fn new(seed: [u8; 32], assets: &[&str]) -> SimChain {
        SimChain {
            seed,
            assets: assets.iter().map(|a| (*a).to_owned()).collect(),
        }
    }
    pub fn address(&self, label: &str) -> String {
        let h = blake3::keyed_hash(&self.seed, label.as_bytes());
        format!("sim1{}", hex::encode(&h.as_bytes()[..20]))
    }
}

impl ChainAdapter for SimChain {
    fn deposit_address(&self, asset: &str, user: UserId, n: u32, _index: u32) -> Option<String> {
        self.supports(asset)
            .then(|| self.address(&format!("deposit/{asset}/{}/{n}", user.0)))
    }
    /// Lower case: `SIM1ABC…` and `sim1abc…` are one address.
    fn canonical_address(&self, asset: &str, address: &str) -> Option<String> {
        let a = address.to_ascii_lowercase();
        (self.supports(asset)
            && a.len() == 44
            && a.starts_with("sim1")
            && a[4..].bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(a)
    }
    fn supports(&self, asset: &str) -> bool {
        self.assets.iter().any(|a| a == asset)
    }
    /// A simulated deposit is credited at its first confirmation ([`run_sim`]).
    fn deposit_confirmations(&self, asset: &str) -> Option<u32> {
        self.supports(asset).then_some(1)
    }
}

/// The simulated chain at work: requested withdrawals are taken, "broadcast" a moment later and
/// "confirmed" a second after; deposits sent with `POST /api/v1/sim/deposits` (or `kinko sim deposit`) confirm after a second. Runs
/// whenever the simulated chain is on (`--demo` or `[sim] enabled`). Stops when `stop` resolves.
pub async fn run_sim(g: kinko_api::AppState, stop: tokio::sync::watch::Receiver<bool>) {
    use kinko_core::engine::Command;
    use kinko_core::wallet::{DepositStatus, WithdrawalStatus};
    const SETTLE_NS: u64 = 1_000_000_000;
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
        let mut work = Vec::new();
        {
            let m = g.read.model();
            let now = kinko_api::auth::now_ns();
            let w = m.engine.wallet();
            for x in w.withdrawals().iter().filter(|x| x.status.is_open()) {
                let cmd = match x.status {
                    _ if x.ready_for_signing(now) => Command::WithdrawalSigning { id: x.id },
                    WithdrawalStatus::Signing => Command::WithdrawalBroadcast {
                        id: x.id,
                        txid: hex::encode(
                            blake3::hash(format!("sim withdrawal {}", x.id.0).as_bytes()).as_bytes(),
                        ),
                        network_fee: kinko_core::Amount(0),
                    },
                    WithdrawalStatus::Broadcast if now.saturating_sub(x.updated_ns) > SETTLE_NS => {
                        Command::WithdrawalConfirmed { id: x.id }
                    }
                    _ => continue,
                };
                work.push(cmd);
            }
            for d in w.deposits().iter().filter(|d| d.status == DepositStatus::Pending) {
                if now.saturating_sub(d.seen_ns) > SETTLE_NS {
                    work.push(Command::DepositConfirmed { deposit: d.id });
                }
            }
        }
        for cmd in work {
            let name = cmd.name();
            if let Err(e) = g.submit(cmd).await {
                tracing::warn!(step = name, code = e.code, "simulated chain: step refused");
            }
        }
    }
}
