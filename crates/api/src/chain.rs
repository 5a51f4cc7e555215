//! What the gateway needs from chains: deposit addresses and address checks. Real adapters
//! (Litecoin Core, an Ethereum node, behind the signer) implement [`ChainAdapter`]; the embedded
//! demo uses [`SimChain`], a simulated chain that exists only under `kinko serve --demo`.

use kinko_core::UserId;

pub trait ChainAdapter: Send + Sync {
    /// A new deposit address for `user` on the chain of `asset` (the user's `n`-th; the
    /// `index`-th of the asset, which derives it on a real chain), or `None` when no chain is
    /// configured for the asset.
    fn deposit_address(&self, asset: &str, user: UserId, n: u32, index: u32) -> Option<String>;
    /// Whether `address` is well formed for `asset`'s chain.
    fn valid_address(&self, asset: &str, address: &str) -> bool;
    /// Whether withdrawals of `asset` can be carried out at all.
    fn supports(&self, asset: &str) -> bool;
}

/// No chain configured: deposits and withdrawals are unavailable.
pub struct NoChain;

impl ChainAdapter for NoChain {
    fn deposit_address(&self, _asset: &str, _user: UserId, _n: u32, _index: u32) -> Option<String> {
        None
    }
    fn valid_address(&self, _asset: &str, _address: &str) -> bool {
        false
    }
    fn supports(&self, _asset: &str) -> bool {
        false
    }
}

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
    fn valid_address(&self, asset: &str, address: &str) -> bool {
        self.supports(asset)
            && address.len() == 44
            && address.starts_with("sim1")
            && address[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }
    fn supports(&self, asset: &str) -> bool {
        self.assets.iter().any(|a| a == asset)
    }
}

/// Several chains behind one adapter: each asset goes to the first chain that supports it.
pub struct Chains(pub Vec<std::sync::Arc<dyn ChainAdapter>>);

impl Chains {
    fn of(&self, asset: &str) -> Option<&dyn ChainAdapter> {
        self.0.iter().find(|c| c.supports(asset)).map(|c| &**c)
    }
}

impl ChainAdapter for Chains {
    fn deposit_address(&self, asset: &str, user: UserId, n: u32, index: u32) -> Option<String> {
        self.of(asset)?.deposit_address(asset, user, n, index)
    }
    fn valid_address(&self, asset: &str, address: &str) -> bool {
        self.of(asset).is_some_and(|c| c.valid_address(asset, address))
    }
    fn supports(&self, asset: &str) -> bool {
        self.of(asset).is_some()
    }
}

/// The simulated chain at work: requested withdrawals are taken, "broadcast" a moment later and
/// "confirmed" a second after; deposits sent with [`sim_deposit`] confirm after a second. Runs
/// whenever the simulated chain is the configured one (no real chain configured). Stops when
/// `stop` resolves.
pub async fn run_sim(g: crate::AppState, stop: tokio::sync::watch::Receiver<bool>) {
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
            let now = crate::auth::now_ns();
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

/// "Sends" `amount` (a decimal in whole units of the address's asset) to a deposit address on
/// the simulated chain: the deposit is seen at once and confirmed by [`run_sim`] a second later.
/// Refused unless the simulated chain runs.
pub async fn sim_deposit(
    g: &crate::AppState,
    address: &str,
    amount: &str,
) -> crate::error::ApiResult<(kinko_core::wallet::DepositId, String)> {
    use crate::error::ApiError;
    use kinko_core::engine::{Command, Reply};
    if !g.simulated.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiError::unavailable(
            "CUSTODY_UNAVAILABLE",
            "this server runs on a real chain: send a real transaction",
        ));
    }
    g.caught_up().await?;
    let (asset, decimals) = {
        let m = g.read.model();
        let w = m.engine.wallet();
        m.engine
            .assets()
            .iter()
            .enumerate()
            .map(|(i, a)| (kinko_core::AssetId(i as u32), a.decimals))
            .find(|(a, _)| w.deposit_address_owner(*a, address).is_some())
    }
    .ok_or(kinko_core::Reject::AddressUnknown)?;
    let amount = crate::wire::parse_amount("amount", amount, decimals)?;
    let n = g.sim_deposits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let txid = hex::encode(
        blake3::hash(format!("sim deposit {address} {n} {}", crate::auth::now_ns()).as_bytes()).as_bytes(),
    );
    match g
        .submit(Command::DepositSeen {
            asset,
            address: address.to_owned(),
            txid: txid.clone(),
            vout: 0,
            amount,
        })
        .await?
        .reply?
    {
        Reply::Deposit(id) => Ok((id, txid)),
        other => Err(ApiError::invalid(format!("unexpected reply {other:?}"))),
    }
}
