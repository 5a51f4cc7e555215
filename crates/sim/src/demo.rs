//! `kinko serve --demo`: two funded traders with API keys, two admins for the operators'
//! console, a market maker quoting every market, a few trades, and a simulated chain that
//! carries withdrawals through. Nothing here runs
//! without `--demo`: in particular deposits that no chain reported exist only in a demo data
//! directory. The traders' withdrawal addresses are usable at once because the two demo admins
//! approved them as a two-person proposal (`demo_quorum`), as any installation would.

use crate::SimChain;
use kinko_api::error::ApiError;
use kinko_api::vault::{new_coinbase_key, new_native_key};
use kinko_api::AppState;
use kinko_core::book::{Side, Stp, TimeInForce};
use kinko_core::engine::{Command, Reply};
use kinko_core::keys::Permissions;
use kinko_core::market::MarketId;
use kinko_core::trading::{OrderType, PlaceOrder};
use kinko_core::{Amount, AssetId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub const CREDENTIALS_FILE: &str = "demo-credentials.json";
/// Assets the simulated chain carries (fiat has no chain).
pub const CHAIN_ASSETS: [&str; 3] = ["BTC", "ETH", "LTC"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoinbaseCredentials {
    pub key: String,
    pub secret: String,
    pub passphrase: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trader {
    pub name: String,
    pub user_id: u64,
    /// Sign in at the web page or `/api/v1/auth/login` with these.
    pub email: String,
    pub password: String,
    /// The account's TOTP secret (base32): every withdrawal needs a current code from it.
    pub totp_secret: String,
    /// Native API: `Authorization: Bearer <api_key>` (view and trade).
    pub api_key: String,
    /// Coinbase-style key with view, trade and withdraw (from 127.0.0.1 and ::1 only);
    /// withdrawals take the current TOTP code as `two_factor_code`.
    pub coinbase: CoinbaseCredentials,
    /// Whitelisted usable at once by a proposal of the demo's two admins; null for fiat.
    pub withdrawal_addresses: BTreeMap<String, Option<String>>,
}

/// An admin of the operators' console (`/console`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Admin {
    pub user_id: u64,
    pub email: String,
    pub password: String,
    /// The second factor the console asks for at sign-in (base32). Admin actions need a passkey:
    /// the admin adds one on the account page (`/`) with this code, then acts in the console.
    pub totp_secret: String,
    pub roles: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub api: String,
    pub traders: Vec<Trader>,
    /// Two security (and risk) admins, so that two-person actions can be tried.
    #[serde(default)]
    pub admins: Vec<Admin>,
}

/// The demo's admins: roles given the way `kinko admin grant-role` gives them on a real
/// installation (the operator's bootstrap, open until two security admins exist). Before their
/// TOTP is enrolled they whitelist `wallets` usable at once as two treasury admins
/// (`demo_quorum`).
async fn demo_admins(g: &AppState, wallets: &[(UserId, AssetId, String)]) -> anyhow::Result<Vec<Admin>> {
    use kinko_core::identity::{AdminRole, IdentityCommand};
    // Treasury too: the demo's two admins whitelist the traders' wallets (a treasury quorum).
    let roles = vec![AdminRole::SecurityAdmin, AdminRole::Risk, AdminRole::Treasury];
    let mut users = Vec::new();
    for name in ["security-1", "security-2"] {
        let email = format!("{name}@demo.kinko.test");
        let password = format!("{name}-demo-password");
        let user = demo_user(g, &email, &password).await?;
        run(
            g,
            Command::Identity(IdentityCommand::SetRoles {
                user,
                roles: roles.clone(),
                requested_by: "demo".into(),
                reason: "the demo's console admins".into(),
            }),
        )
        .await?;
        users.push((user, email, password));
    }
    crate::demo_quorum::whitelist(g, [users[0].0, users[1].0], wallets).await?;
    let mut admins = Vec::new();
    for (user, email, password) in users {
        let secret = kinko_api::totp::new_secret();
        enrol_totp(g, user, &secret).await?;
        admins.push(Admin {
            user_id: user.0,
            email,
            password,
            totp_secret: kinko_api::totp::base32_encode(&secret),
            roles: roles.iter().map(|r| r.name().to_owned()).collect(),
        });
    }
    Ok(admins)
}

const MAKER: UserId = UserId(1_000_000);
const TAKER: UserId = UserId(1_000_001);

/// Submits one command and waits until the read model has applied it too: seeding reads what
/// it just wrote (a user it registered, a key it created), and the read model follows the
/// sequencer asynchronously.
pub(crate) async fn run(g: &AppState, c: Command) -> Result<Reply, ApiError> {
    let committed = g.submit(c).await?;
    g.caught_up().await?;
    Ok(committed.reply?)
}

/// Seeds a new demo data directory, or reuses the traders of an earlier demo run. Writes the
/// credentials file into `data_dir` with `api` set to the server's address.
pub async fn seed(g: &AppState, sim: &SimChain, data_dir: &Path, api: &str) -> anyhow::Result<Credentials> {
    let path = data_dir.join(CREDENTIALS_FILE);
    if let Some(mut c) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Credentials>(&b).ok())
    {
        let known = c.traders.iter().all(|t| {
            let id = t.api_key.split('.').next().unwrap_or("");
            g.read.model().engine.keys().get(id).is_some()
        });
        if known {
            c.api = api.to_owned();
            if c.admins.is_empty() {
                c.admins = demo_admins(g, &[]).await?;
            }
            write(&path, &c)?;
            tracing::info!(path = %path.display(), "demo: reusing the traders of the earlier demo run");
            return Ok(c);
        }
    }
    let assets: Vec<(AssetId, String, u8)> = {
        let m = g.read.model();
        m.engine
            .assets()
            .iter()
            .enumerate()
            .map(|(i, a)| (AssetId(i as u32), a.code.as_str().to_owned(), a.decimals))
            .collect()
    };
    let mut traders = Vec::new();
    // The traders' wallets, whitelisted usable at once by the two demo admins (a quorum).
    let mut wallets = Vec::new();
    for name in ["alice", "bob"] {
        let email = format!("{name}@demo.kinko.test");
        let password = format!("{name}-demo-password");
        let user = demo_user(g, &email, &password).await?;
        let secret = kinko_api::totp::new_secret();
        let step = enrol_totp(g, user, &secret).await?;
        let native = new_native_key(
            user,
            "demo",
            Permissions {
                view: true,
                trade: true,
                withdraw: false,
            },
        );
        run(
            g,
            Command::CreateApiKey {
                key: native.record,
                proof: None,
            },
        )
        .await?;
        let mut cb = new_coinbase_key(&g.vault, user, "demo coinbase-style", Permissions::ALL);
        cb.record.ip_allowlist = vec!["127.0.0.1".into(), "::1".into()];
        let action = kinko_core::identity::Action::CreateWithdrawKey {
            user,
            label: cb.record.label.clone(),
            ip_allowlist: cb.record.ip_allowlist.clone(),
        };
        let proof = totp_proof(&secret, step + 1, &action);
        run(
            g,
            Command::CreateApiKey {
                key: cb.record,
                proof: Some(proof),
            },
        )
        .await?;
        let mut addresses = BTreeMap::new();
        for (asset, code, decimals) in &assets {
            fund(g, sim, user, *asset, code, whole(10_000, *decimals, code)).await?;
            if CHAIN_ASSETS.contains(&code.as_str()) {
                let address = sim.address(&format!("withdraw/{code}/{}", user.0));
                wallets.push((user, *asset, address.clone()));
                addresses.insert(code.clone(), Some(address));
            } else {
                addresses.insert(code.clone(), None);
            }
        }
        traders.push(Trader {
            name: name.into(),
            user_id: user.0,
            email,
            password,
            totp_secret: kinko_api::totp::base32_encode(&secret),
            api_key: native.token,
            coinbase: CoinbaseCredentials {
                key: cb.key,
                secret: cb.secret,
                passphrase: cb.passphrase,
            },
            withdrawal_addresses: addresses,
        });
    }
    for (asset, code, decimals) in &assets {
        fund(g, sim, MAKER, *asset, code, whole(10_000_000, *decimals, code)).await?;
        fund(g, sim, TAKER, *asset, code, whole(1_000_000, *decimals, code)).await?;
    }
    quote_markets(g).await?;
    let admins = demo_admins(g, &wallets).await?;
    let c = Credentials {
        api: api.to_owned(),
        traders,
        admins,
    };
    write(&path, &c)?;
    tracing::info!(path = %path.display(), "demo: traders alice and bob are funded, admins security-1 and security-2 can sign in to /console; credentials written");
    Ok(c)
}

/// Registers a demo user (or finds it, in a data directory seeded before).
async fn demo_user(g: &AppState, email: &str, password: &str) -> anyhow::Result<UserId> {
    if let Some(u) = g.read.model().engine.identity().user_by_email(email) {
        return Ok(u.id);
    }
    let hash = g.hasher.hash(password).await?;
    match run(
        g,
        Command::Identity(kinko_core::identity::IdentityCommand::Register {
            email: email.to_owned(),
            password_hash: hash,
        }),
    )
    .await?
    {
        Reply::Identity(kinko_core::identity::IdentityReply::Registered(u)) => Ok(u),
        other => anyhow::bail!("unexpected reply to a demo registration: {other:?}"),
    }
}

fn now_step() -> u64 {
    kinko_api::auth::now_ns() / 1_000_000_000 / 30
}

/// Enrols TOTP as the user's first factor, consuming the previous step. Returns the step
/// consumed. (The withdraw-scoped key's proof then uses the current step, so the user's first
/// own code is the next one, within 30 s.)
async fn enrol_totp(g: &AppState, user: UserId, secret: &[u8]) -> anyhow::Result<u64> {
    let mut last = Err(anyhow::anyhow!("no attempt"));
    // A step boundary between choosing the step and applying it is retried.
    for _ in 0..3 {
        let step = now_step().saturating_sub(1);
        let r = run(
            g,
            Command::Identity(kinko_core::identity::IdentityCommand::EnrolTotp {
                user,
                sealed_secret: g.vault.seal(secret),
                first_step: step,
                proof: None,
                recovery: kinko_api::totp::new_recovery_set(10).1,
            }),
        )
        .await;
        match r {
            Ok(_) => return Ok(step),
            Err(e) => last = Err(e.into()),
        }
    }
    last
}

/// A TOTP proof at `step` for `action`, made with the user's secret (as the user's app would).
fn totp_proof(
    secret: &[u8],
    step: u64,
    action: &kinko_core::identity::Action,
) -> kinko_core::identity::StepUp {
    kinko_core::identity::StepUp {
        action: action.digest(),
        issued_ns: kinko_api::auth::now_ns(),
        nonce: kinko_api::vault::random_bytes(),
        factor: kinko_core::identity::ProofFactor::Totp {
            step,
            code: format!("{:06}", kinko_api::totp::code_at(secret, step)),
        },
    }
}

fn write(path: &Path, c: &Credentials) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    std::io::Write::write_all(&mut f, serde_json::to_string_pretty(c)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `units` whole units of an asset, scaled down for the pricier ones so that balances look
/// sensible (10,000 BTC would be silly; 10,000 USD is not).
fn whole(units: u128, decimals: u8, code: &str) -> Amount {
    let units = match code {
        "BTC" => units / 1_000,
        "ETH" => units / 100,
        "LTC" => units / 10,
        "JPY" => units * 100,
        _ => units,
    }
    .max(1);
    Amount(units * 10u128.pow(u32::from(decimals)))
}

/// Funds a user the way a real deposit would: an address, an output seen on the (simulated)
/// chain, confirmed.
async fn fund(
    g: &AppState,
    sim: &SimChain,
    user: UserId,
    asset: AssetId,
    code: &str,
    amount: Amount,
) -> anyhow::Result<()> {
    let address = sim.address(&format!("deposit/{code}/{}/0", user.0));
    run(
        g,
        Command::AssignDepositAddress {
            user,
            asset,
            address: address.clone(),
        },
    )
    .await?;
    let txid = hex::encode(blake3::hash(format!("demo funding {code} {}", user.0).as_bytes()).as_bytes());
    let Reply::Deposit(id) = run(
        g,
        Command::DepositSeen {
            asset,
            address,
            txid,
            vout: 0,
            amount,
        },
    )
    .await?
    else {
        anyhow::bail!("unexpected reply to a demo deposit");
    };
    run(g, Command::DepositConfirmed { deposit: id }).await?;
    Ok(())
}

fn limit(user: UserId, market: MarketId, side: Side, price: u128, qty: u128) -> Command {
    Command::PlaceOrder(PlaceOrder {
        user,
        market,
        client_id: None,
        side,
        order_type: OrderType::Limit {
            price: Amount(price),
            tif: TimeInForce::Gtc,
        },
        qty: Some(Amount(qty)),
        stp: Stp::CancelNewest,
    })
}

/// Ten price levels a side around each market's reference price, then a few trades.
async fn quote_markets(g: &AppState) -> anyhow::Result<()> {
    struct Plan {
        id: MarketId,
        reference: u128,
        tick: u128,
        lot: u128,
        qty_min: u128,
        notional_min: u128,
        base_unit: u128,
    }
    let plans: Vec<Plan> = {
        let m = g.read.model();
        let e = &m.engine;
        e.trading()
            .markets()
            .iter()
            .enumerate()
            .map(|(i, mk)| {
                let s = &mk.meta.spec;
                Plan {
                    id: MarketId(i as u32),
                    reference: s.reference_price.0,
                    tick: s.tick.0,
                    lot: s.lot.0,
                    qty_min: s.qty_min.0,
                    notional_min: s.notional_min.0,
                    base_unit: 10u128.pow(u32::from(e.asset(s.base).map_or(0, |a| a.decimals))),
                }
            })
            .collect()
    };
    for p in &plans {
        for k in 1..=10u128 {
            for side in [Side::Buy, Side::Sell] {
                let raw = match side {
                    Side::Buy => p.reference * (10_000 - 10 * k) / 10_000,
                    Side::Sell => p.reference * (10_000 + 10 * k) / 10_000,
                };
                let price = (raw / p.tick).max(1) * p.tick;
                // About 200 × the minimum notional per level, growing away from the touch.
                let qty = (200 * k * p.notional_min * p.base_unit).div_ceil(price.max(1));
                let qty = qty.div_ceil(p.lot).max(1) * p.lot;
                let qty = qty.max(p.qty_min);
                let r = run(g, limit(MAKER, p.id, side, price, qty)).await;
                if let Err(e) = r {
                    tracing::warn!(market = p.id.0, code = e.code, "demo: a maker order was refused");
                }
            }
        }
        // A few trades so that trades, tickers and candles have something to show.
        for (side, k) in [(Side::Buy, 1u128), (Side::Sell, 1), (Side::Buy, 2)] {
            let raw = match side {
                Side::Buy => p.reference * (10_000 + 10 * k) / 10_000,
                Side::Sell => p.reference * (10_000 - 10 * k) / 10_000,
            };
            let price = (raw / p.tick).max(1) * p.tick;
            let qty = (2 * p.notional_min * p.base_unit).div_ceil(price.max(1));
            let qty = (qty.div_ceil(p.lot).max(1) * p.lot).max(p.qty_min);
            let _ = run(g, limit(TAKER, p.id, side, price, qty)).await;
        }
    }
    Ok(())
}

/// The demo's market upkeep: reference prices are refreshed from the book every five minutes
/// so market orders keep working in a quiet demo. Stops when `stop` resolves.
pub async fn run_reference_refresh(g: AppState, stop: tokio::sync::watch::Receiver<bool>) {
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = stop.changed() => return,
        }
        refresh_references(&g).await;
    }
}

async fn refresh_references(g: &AppState) {
    let mids: Vec<(MarketId, u128)> = {
        let m = g.read.model();
        m.engine
            .trading()
            .markets()
            .iter()
            .enumerate()
            .filter_map(|(i, mk)| {
                use kinko_core::book::OrderBook;
                let (b, a) = (mk.book.best_bid()?, mk.book.best_ask()?);
                let mid_ticks = (u128::from(b.0) + u128::from(a.0)) / 2;
                Some((MarketId(i as u32), mid_ticks * mk.meta.spec.tick.0))
            })
            .collect()
    };
    for (market, price) in mids {
        let _ = g
            .submit(Command::SetReferencePrice {
                market,
                price: Amount(price),
            })
            .await;
    }
}
