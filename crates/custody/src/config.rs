//! What the custody service of one chain asset needs to know.

use kinko_chain::keys::{ColdKeys, WatchKey};
use kinko_chain::Network;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct CustodyConfig {
    /// The asset's code in kinko (e.g. `LTC`).
    pub asset: String,
    pub network: Network,
    /// The node's JSON-RPC endpoint, e.g. `http://127.0.0.1:19443`.
    pub rpc_url: String,
    pub rpc_user: String,
    pub rpc_password: String,
    /// Names of the node's watch-only wallets (`<prefix>-hot`, `<prefix>-cold`).
    pub wallet_prefix: String,
    /// The hot account's public key (from `kinko-signer xpub`).
    pub hot_key: WatchKey,
    /// The cold multisig's public keys (each keyholder's `kinko-signer xpub`).
    pub cold: ColdKeys,
    /// The signer's Unix socket.
    pub signer_socket: PathBuf,
    /// Confirmations before a deposit is credited.
    pub confirmations: u32,
    /// Confirmations after which a transaction counts as final: custody spends only coins at
    /// least this deep, and a withdrawal is `Completed` at this depth. At least
    /// `confirmations`. Recorded transactions are still watched until
    /// [`crate::service::REORG_WATCH_DEPTH`]: a deeper reorg still reverts them.
    pub finality_depth: u32,
    /// How often the node is polled.
    pub poll: Duration,
    /// Fee rate when the node has no estimate (sat/vB).
    pub fee_rate_sat_vb: u64,
    /// The hot wallet holds at most this share of customer funds, in basis points (500 = 5%).
    pub hot_share_bps: u32,
    /// ... and at most this much, in minor units.
    pub hot_cap: u64,
    /// Addresses imported beyond the highest one in use.
    pub lookahead: u32,
    /// Continuous reconciliation and theft detection each poll (`crate::reconcile`): spends
    /// of our coins that kinko did not make, and the hot wallet against the ledger. On by
    /// default; `false` only for tools that must not open incidents.
    pub reconcile: bool,
    /// How often customer liabilities are checked against everything custody holds on the node
    /// (also once at start). Zero: every poll.
    pub full_reconcile_every: Duration,
    /// Where the `listsinceblock` cursors are kept across restarts (`crate::cursor`), one small
    /// file per asset. `None`: in memory only (tools); a restart lists the whole wallet history
    /// again.
    pub cursor_dir: Option<PathBuf>,
    /// A cursor the node no longer knows (a new node, a pruned or replaced chain) restarts the
    /// scan this many blocks below the tip (the whole history when the chain is shorter).
    pub rescan_depth: u32,
    /// Consecutive polls in which reconciliation could not run before the asset's withdrawals
    /// are halted and an incident is opened (fail closed: theft detection is blind).
    pub reconcile_failures_max: u32,
    /// A sweep waits until company funds in the ledger (fee revenue and the company treasury)
    /// can pay its miner fee, so that customers' coins never pay it. On by default; `false`
    /// sweeps regardless, and reconciliation then reports what customers' coins paid as a
    /// `reserve_shortfall` incident.
    pub sweep_waits_for_company_funds: bool,
}

/// The default of [`CustodyConfig::rescan_depth`]: about a week of Bitcoin blocks, under two
/// days of Litecoin's; crediting is idempotent per `txid:vout`, so a deep rescan costs only time.
pub const RESCAN_DEPTH_DEFAULT: u32 = 1_000;
/// The default of [`CustodyConfig::reconcile_failures_max`]: 10 s at the 2 s default poll.
pub const RECONCILE_FAILURES_MAX_DEFAULT: u32 = 5;
/// The default of [`CustodyConfig::finality_depth`] (Litecoin: 6 blocks, 15 minutes).
pub const FINALITY_DEPTH_DEFAULT: u32 = 6;

/// The default of [`CustodyConfig::full_reconcile_every`]: a day.
pub const FULL_RECONCILE_EVERY_DEFAULT: Duration = Duration::from_secs(86_400);

impl CustodyConfig {
    pub fn hot_wallet(&self) -> String {
        format!("{}-hot", self.wallet_prefix)
    }
    pub fn cold_wallet(&self) -> String {
        format!("{}-cold", self.wallet_prefix)
    }
    /// The most the hot wallet should hold given customer liabilities of `liabilities`.
    pub fn hot_limit(&self, liabilities: u128) -> u64 {
        let share = liabilities.saturating_mul(u128::from(self.hot_share_bps)) / 10_000;
        u64::try_from(share).unwrap_or(u64::MAX).min(self.hot_cap)
    }
}

/// Change-chain (`/1/i`) index ranges, so that every change output names what created it.
/// Withdrawal `w` pays its change to `/1/w`; sweep `n` to `/1/(SWEEP_CHANGE_BASE + n)`; refill
/// `n` pays the hot wallet at `/1/(REFILL_BASE + n)`.
pub const SWEEP_CHANGE_BASE: u32 = 1_000_000_000;
pub const REFILL_BASE: u32 = 1_500_000_000;
/// The company's own deposit address of the asset is the hot receive address `/0/i` at this
/// index, far above any customer's (customers get `/0/0`, `/0/1`, ... in order): coins sent
/// to it are credited to the company treasury, which pays miner fees that withdrawal fees do
/// not cover.
pub const COMPANY_DEPOSIT_INDEX: u32 = 2_000_000_000;
