//! The benchmark market both engine benchmarks run on (`kinko bench engine` and the
//! `restart_bench` example): two assets with no decimals, one market `BASE-QUOTE` with a 10% band
//! around 32,768, [`POOL`] users with both accounts open, each funded with 2^62 of each asset.

use kinko_core::engine::{Command, Engine};
use kinko_core::ledger::{SystemAccount, TransferKind, TransferRequest};
use kinko_core::market::{FeeTier, MarketId, MarketSpec};
use kinko_core::{Amount, AssetCode, AssetId, TransferId, UserId};

/// Users that place the workload's orders.
pub const POOL: u64 = 1_000;
/// The base asset.
pub const BASE: AssetId = AssetId(0);
/// The quote asset.
pub const QUOTE: AssetId = AssetId(1);
/// The one market.
pub const MKT: MarketId = MarketId(0);

/// The commands that define the assets and the market and open every user's accounts.
pub fn setup() -> Vec<Command> {
    let mut cmds = vec![
        Command::DefineAsset {
            code: AssetCode::new("BASE").expect("code"),
            decimals: 0,
        },
        Command::DefineAsset {
            code: AssetCode::new("QUOTE").expect("code"),
            decimals: 0,
        },
        Command::DefineMarket(MarketSpec {
            symbol: "BASE-QUOTE".into(),
            base: BASE,
            quote: QUOTE,
            tick: Amount(1),
            lot: Amount(1),
            qty_min: Amount(1),
            qty_max: Amount(1_000_000_000),
            notional_min: Amount(1),
            notional_max: Amount(1_000_000_000_000_000),
            band_bps: 1_000,
            reference_price: Amount(32_768),
            reference_age_max_ns: 0,
            fee_tiers: vec![FeeTier {
                maker_bps: 10,
                taker_bps: 20,
            }],
            open_orders_per_account_max: 1_000_000,
        }),
    ];
    for u in 0..POOL {
        for a in [BASE, QUOTE] {
            cmds.push(Command::OpenAccount {
                user: UserId(u),
                asset: a,
            });
        }
    }
    cmds
}

/// The transfer that funds every user's accounts from the hot wallets of `e` (after [`setup`]).
pub fn funding(e: &Engine) -> Command {
    let mut reqs = Vec::new();
    for (i, asset) in [BASE, QUOTE].into_iter().enumerate() {
        let hot = e
            .asset(asset)
            .expect("asset")
            .system_account(SystemAccount::HotWallet);
        for u in 0..POOL {
            reqs.push(TransferRequest {
                id: TransferId(u128::from(u) * 2 + i as u128 + 1),
                kind: TransferKind::Post {
                    debit: hot,
                    credit: e.ledger().customer_account(UserId(u), asset).expect("opened"),
                    amount: Amount(1 << 62),
                },
                linked: false,
                code: 1,
                user_data: 0,
            });
        }
    }
    Command::Transfers(reqs)
}
