//! The Coinbase surface's account history and fee views: the ledger and holds of an account,
//! the caller's trading fees, the all-products tickers (`spark-lines`, `stats`), and the paging
//! cursors every private list shares (`before` / `after` in, `CB-BEFORE` / `CB-AFTER` out).
//!
//! kinko's ledger keeps balances, not a per-account movement log, so the ledger entries here are
//! derived from what the read side keeps: the caller's fills (a `match` entry in each asset and a
//! `fee` entry in the quote asset), deposits (credited when first seen, as the engine does, held
//! until final), deposit reversals, and withdrawals (debited with their fee when signed, credited
//! back when reverted). `balance` is the account's current balance minus the newer entries.

use super::{market_ref_by_id, symbol_of, CbError, CbResult, Params, Signed};
use crate::auth::Need;
use crate::view::{candle_list, LIST_LIMIT_MAX};
use crate::wire::{fmt_amount, rfc3339};
use crate::AppState;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kinko_core::book::Side;
use kinko_core::market::MarketId;
use kinko_core::trading::OrderStatus;
use kinko_core::wallet::{DepositStatus, WithdrawalStatus};
use kinko_core::{AssetId, UserId};
use kinko_engine::replica::{Liquidity, ReadModel};
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// Paging.

/// A position in a list, newest first: compared as a tuple, sent as `a.b.c`. Opaque to
/// clients; stable across restarts (built from times and ids, never from list positions).
pub(super) type Cursor = [u64; 3];

const CB_BEFORE: HeaderName = HeaderName::from_static("cb-before");
const CB_AFTER: HeaderName = HeaderName::from_static("cb-after");

fn fmt_cursor(c: Cursor) -> String {
    format!("{}.{}.{}", c[0], c[1], c[2])
}

fn parse_cursor(key: &str, text: &str) -> CbResult<Cursor> {
    let bad = || {
        CbError::bad(format!(
            "{key} must be a cursor from a CB-BEFORE or CB-AFTER header"
        ))
    };
    let mut parts = text.split('.');
    let mut c = [0u64; 3];
    for x in &mut c {
        *x = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(c)
}

/// `before` (newer than), `after` (older than) and `limit` of a list request.
pub(super) struct Page {
    before: Option<Cursor>,
    after: Option<Cursor>,
    limit: usize,
}

impl Page {
    pub(super) fn of(q: &Params) -> CbResult<Page> {
        let c = |k: &str| q.one(k)?.map(|t| parse_cursor(k, t)).transpose();
        let p = Page {
            before: c("before")?,
            after: c("after")?,
            limit: q.limit(100, LIST_LIMIT_MAX)?,
        };
        if p.before.is_some() && p.after.is_some() {
            return Err(CbError::bad("give before or after, not both"));
        }
        Ok(p)
    }

    /// One page of `items`, newest first: with `after`, the newest ones older than it; with
    /// `before`, the oldest ones newer than it (the page just above); else the newest.
    pub(super) fn apply<T>(&self, mut items: Vec<(Cursor, T)>) -> Vec<(Cursor, T)> {
        items.sort_by_key(|x| std::cmp::Reverse(x.0));
        if let Some(c) = self.after {
            items.retain(|x| x.0 < c);
        }
        if let Some(c) = self.before {
            items.retain(|x| x.0 > c);
            let skip = items.len().saturating_sub(self.limit);
            items.drain(..skip);
        }
        items.truncate(self.limit);
        items
    }
}

/// A page of a list with its cursors: `CB-BEFORE` (the newest item: pass it as `before` for
/// newer items) and `CB-AFTER` (the oldest: pass it as `after` for older ones). An empty page
/// has neither.
pub(super) struct Paged {
    items: Vec<Value>,
    newest: Option<Cursor>,
    oldest: Option<Cursor>,
}

impl Paged {
    pub(super) fn new<T>(page: Vec<(Cursor, T)>, json: impl Fn(&T) -> Value) -> Paged {
        Paged {
            newest: page.first().map(|x| x.0),
            oldest: page.last().map(|x| x.0),
            items: page.iter().map(|x| json(&x.1)).collect(),
        }
    }
}

impl IntoResponse for Paged {
    fn into_response(self) -> Response {
        let mut r = Json(self.items).into_response();
        for (h, c) in [(CB_BEFORE, self.newest), (CB_AFTER, self.oldest)] {
            if let Some(c) = c {
                if let Ok(v) = HeaderValue::from_str(&fmt_cursor(c)) {
                    r.headers_mut().insert(h, v);
                }
            }
        }
        r
    }
}

// ---------------------------------------------------------------------------------------------
// Ledger.

/// Cursor middle words: which kind of movement (top byte), then what tells two apart.
const FROM_FILL: u64 = 0;
const FROM_DEPOSIT: u64 = 1 << 56;
const FROM_DEPOSIT_REVERSAL: u64 = 2 << 56;
const FROM_WITHDRAWAL: u64 = 3 << 56;
const FROM_WITHDRAWAL_REVERSAL: u64 = 4 << 56;

struct Entry {
    at_ns: u64,
    /// Minor units; negative leaves the account.
    amount: i128,
    kind: &'static str,
    details: Value,
}

fn signed(a: u128) -> i128 {
    i128::try_from(a).unwrap_or(i128::MAX)
}

/// Every movement of `user`'s `asset` account the read side can name, unsorted.
fn ledger_entries(m: &ReadModel, user: UserId, asset: AssetId) -> Vec<(Cursor, Entry)> {
    let mut v = Vec::new();
    let t = m.engine.trading();
    for f in m.fills(user, None, None, usize::MAX) {
        let Some(mk) = t.market(f.market) else { continue };
        let spec = &mk.meta.spec;
        let (base, quote) = (spec.base == asset, spec.quote == asset);
        if !base && !quote {
            continue;
        }
        let buy = f.side == Side::Buy;
        let liq = u64::from(f.liquidity == Liquidity::Maker);
        let mid = FROM_FILL | (u64::from(f.market.0) << 8) | (liq << 1);
        let details = json!({
            "order_id": f.order.0.to_string(),
            "product_id": symbol_of(m, f.market),
            "trade_id": f.trade_id.to_string(),
        });
        let moved = match (base, buy) {
            (true, true) => signed(f.base_amount),
            (true, false) => -signed(f.base_amount),
            (false, true) => -signed(f.notional),
            (false, false) => signed(f.notional),
        };
        // A trade's match before its fee, trades in id order (a fee sorts just after its match).
        let at = |fee: u64| [f.timestamp_ns, mid, f.trade_id.saturating_mul(2) | fee];
        let cursor = at(0);
        v.push((
            cursor,
            Entry {
                at_ns: f.timestamp_ns,
                amount: moved,
                kind: "match",
                details: details.clone(),
            },
        ));
        if quote && f.fee > 0 {
            v.push((
                at(1),
                Entry {
                    at_ns: f.timestamp_ns,
                    amount: -signed(f.fee),
                    kind: "fee",
                    details,
                },
            ));
        }
    }
    let w = m.engine.wallet();
    for d in w.deposits().iter().filter(|d| d.user == user && d.asset == asset) {
        if d.status == DepositStatus::Dropped {
            continue;
        }
        let id = super::transfer_id(super::TransferRef::Deposit(d.id.0));
        let details = json!({
            "transfer_id": id,
            "transfer_type": "deposit",
            "crypto_transaction_hash": d.txid,
        });
        if d.status == DepositStatus::Reversed {
            let back = d.amount.0.saturating_sub(d.shortfall.0);
            v.push((
                [d.updated_ns, FROM_DEPOSIT_REVERSAL, d.id.0],
                Entry {
                    at_ns: d.updated_ns,
                    amount: -signed(back),
                    kind: "transfer",
                    details: json!({
                        "transfer_id": id,
                        "transfer_type": "deposit_reversal",
                        "crypto_transaction_hash": d.txid,
                    }),
                },
            ));
        }
        v.push((
            [d.seen_ns, FROM_DEPOSIT, d.id.0],
            Entry {
                at_ns: d.seen_ns,
                amount: signed(d.amount.0),
                kind: "transfer",
                details,
            },
        ));
    }
    for x in w
        .withdrawals()
        .iter()
        .filter(|x| x.user == user && x.asset == asset)
    {
        let posted = x.status.has_tx() || x.status == WithdrawalStatus::Reverted;
        if !posted {
            continue;
        }
        let id = super::transfer_id(super::TransferRef::Withdrawal(x.id.0));
        let total = x.amount.0.saturating_add(x.fee.0);
        let details = |kind: &str| {
            json!({
                "transfer_id": id,
                "transfer_type": kind,
                "crypto_transaction_hash": x.txid,
            })
        };
        if x.status == WithdrawalStatus::Reverted {
            v.push((
                [x.updated_ns, FROM_WITHDRAWAL_REVERSAL, x.id.0],
                Entry {
                    at_ns: x.updated_ns,
                    amount: signed(total),
                    kind: "transfer",
                    details: details("withdraw_reversal"),
                },
            ));
        }
        v.push((
            [x.signing_ns, FROM_WITHDRAWAL, x.id.0],
            Entry {
                at_ns: x.signing_ns,
                amount: -signed(total),
                kind: "transfer",
                details: details("withdraw"),
            },
        ));
    }
    v
}

fn fmt_signed(a: i128, decimals: u8) -> String {
    let text = fmt_amount(a.unsigned_abs(), decimals);
    if a < 0 {
        format!("-{text}")
    } else {
        text
    }
}

/// The movements of one of the caller's accounts, newest first, each with the balance after it.
pub(super) async fn ledger(
    State(g): State<AppState>,
    crate::extract::Path(id): crate::extract::Path<String>,
    s: Signed,
) -> CbResult<Paged> {
    let user = s.require(Need::View)?;
    let q = s.query()?;
    q.only(&["start_date", "end_date", "before", "after", "limit", "profile_id"])?;
    let page = Page::of(&q)?;
    let from = q.time_ns("start_date")?.unwrap_or(0);
    let to = q.time_ns("end_date")?.unwrap_or(u64::MAX);
    g.caught_up().await?;
    let m = g.read.model();
    let asset = super::own_account(&m, user, &id)?;
    let dec = m.engine.asset(asset).map_or(0, |a| a.decimals);
    let mut all = ledger_entries(&m, user, asset);
    all.sort_by_key(|x| std::cmp::Reverse(x.0));
    let mut balance = crate::view::balances_of(&m, user)
        .iter()
        .find(|b| b.asset == asset)
        .map_or(0, |b| signed(b.total));
    let mut rows = Vec::with_capacity(all.len());
    for (c, e) in all {
        let after = balance;
        balance = balance.saturating_sub(e.amount);
        if e.at_ns >= from && e.at_ns <= to {
            rows.push((c, (c, e, after)));
        }
    }
    Ok(Paged::new(page.apply(rows), |(c, e, after)| {
        json!({
            "id": fmt_cursor(*c),
            "created_at": rfc3339(e.at_ns),
            "amount": fmt_signed(e.amount, dec),
            "balance": fmt_signed(*after, dec),
            "type": e.kind,
            "details": e.details,
        })
    }))
}

/// What holds the caller's funds in one account: open orders, pending withdrawals and deposits
/// not yet final. Their sum is the account's `hold`.
pub(super) async fn holds(
    State(g): State<AppState>,
    crate::extract::Path(id): crate::extract::Path<String>,
    s: Signed,
) -> CbResult<Paged> {
    let user = s.require(Need::View)?;
    let q = s.query()?;
    q.only(&["before", "after", "limit", "profile_id"])?;
    let page = Page::of(&q)?;
    g.caught_up().await?;
    let m = g.read.model();
    let asset = super::own_account(&m, user, &id)?;
    let dec = m.engine.asset(asset).map_or(0, |a| a.decimals);
    let account = super::account_id(user, asset);
    let mut v: Vec<(Cursor, Value)> = Vec::new();
    let hold = |created: u64, updated: u64, amount: u128, kind: &str, r: String| {
        json!({
            "id": format!("{kind}-{r}"),
            "account_id": account,
            "created_at": rfc3339(created),
            "updated_at": rfc3339(updated),
            "amount": fmt_amount(amount, dec),
            "type": kind,
            "ref": r,
        })
    };
    let t = m.engine.trading();
    for o in t.open_orders(user) {
        let Some(mk) = t.market(o.market) else { continue };
        let held_asset = match o.side {
            Side::Buy => mk.meta.spec.quote,
            Side::Sell => mk.meta.spec.base,
        };
        if held_asset == asset && o.held > 0 && matches!(o.status, OrderStatus::Open | OrderStatus::Pending) {
            v.push((
                [o.created_ns, 0, o.id.0],
                hold(o.created_ns, o.updated_ns, o.held, "order", o.id.0.to_string()),
            ));
        }
    }
    let w = m.engine.wallet();
    for x in w
        .withdrawals()
        .iter()
        .filter(|x| x.user == user && x.asset == asset && x.status.is_held())
    {
        let r = super::transfer_id(super::TransferRef::Withdrawal(x.id.0));
        v.push((
            [x.requested_ns, 1, x.id.0],
            hold(
                x.requested_ns,
                x.updated_ns,
                x.amount.0.saturating_add(x.fee.0),
                "transfer",
                r,
            ),
        ));
    }
    for d in w
        .deposits()
        .iter()
        .filter(|d| d.user == user && d.asset == asset && d.status == DepositStatus::Pending)
    {
        let r = super::transfer_id(super::TransferRef::Deposit(d.id.0));
        v.push((
            [d.seen_ns, 2, d.id.0],
            hold(d.seen_ns, d.updated_ns, d.amount.0, "deposit", r),
        ));
    }
    Ok(Paged::new(page.apply(v), Value::clone))
}

// ---------------------------------------------------------------------------------------------
// Fees.

/// `25` → `"0.0025"`.
pub(super) fn bps_rate(bps: u32) -> String {
    format!("{}.{:04}", bps / 10_000, bps % 10_000)
}

/// The caller's maker and taker rates at their fee tier: the highest over all products (ccxt
/// applies one rate to every market, and a bot should never expect less than it pays), and
/// each product's own under `products` (a kinko extension). `usd_volume` is the caller's traded
/// value in USD-quoted markets over the last 30 days ([`usd_volume`]); kinko's tiers are assigned
/// by operators, not computed from it.
pub(super) async fn fees(State(g): State<AppState>, s: Signed) -> CbResult<Json<Value>> {
    let user = s.require(Need::View)?;
    s.query()?.only(&["profile_id"])?;
    g.caught_up().await?;
    let m = g.read.model();
    let t = m.engine.trading();
    let tier = t.tier(user);
    let (mut maker, mut taker) = (0, 0);
    let mut products = Map::new();
    for mk in t.markets() {
        let f = mk.meta.spec.fee_tier(tier);
        maker = maker.max(f.maker_bps);
        taker = taker.max(f.taker_bps);
        products.insert(
            mk.meta.spec.symbol.clone(),
            json!({ "maker_fee_rate": bps_rate(f.maker_bps), "taker_fee_rate": bps_rate(f.taker_bps) }),
        );
    }
    let (volume, usd_decimals) = usd_volume(&m, user);
    Ok(Json(json!({
        "maker_fee_rate": bps_rate(maker),
        "taker_fee_rate": bps_rate(taker),
        "usd_volume": fmt_amount(volume, usd_decimals),
        "fee_tier": tier,
        "products": products,
    })))
}

/// The window of `usd_volume`, as Coinbase's trailing 30 days.
const USD_VOLUME_WINDOW_NS: u64 = 30 * 86_400 * 1_000_000_000;

/// The caller's traded value (quote minor units of USD, and USD's decimals) in markets quoted in
/// USD, over the 30 days before the engine's clock: the sum of the notionals of the fills the
/// read side keeps (the newest [`kinko_engine::replica::FILLS_KEPT_PER_USER`]; after a restart,
/// those of the trades the engine still remembers). Other quote assets are not converted. No USD
/// asset: zero, with 2 decimals.
fn usd_volume(m: &ReadModel, user: UserId) -> (u128, u8) {
    let Some(usd) = m.engine.asset_by_code("USD") else {
        return (0, 2);
    };
    let decimals = m.engine.asset(usd).map_or(2, |a| a.decimals);
    let t = m.engine.trading();
    let since = m.engine.last_timestamp_ns().saturating_sub(USD_VOLUME_WINDOW_NS);
    let volume = m
        .fills(user, None, None, usize::MAX)
        .iter()
        .filter(|f| f.timestamp_ns >= since)
        .filter(|f| t.market(f.market).is_some_and(|mk| mk.meta.spec.quote == usd))
        // Saturating: a display figure; a sum past u128 is not reachable with real sizes.
        .fold(0u128, |sum, f| sum.saturating_add(f.notional));
    (volume, decimals)
}

// ---------------------------------------------------------------------------------------------
// Tickers of every product.

fn market_ids(m: &ReadModel) -> Vec<MarketId> {
    let t = m.engine.trading();
    t.markets()
        .iter()
        .filter_map(|mk| t.market_by_symbol(&mk.meta.spec.symbol))
        .collect()
}

/// Hourly `[time, low, high, open, close]` of the last 24 hours per product, newest first, as
/// JSON numbers (Coinbase sends numbers here; the text is exact). ccxt's `fetch_tickers` reads
/// the newest close as the last price; a product without a trade in 24 hours has `[]`.
pub(super) async fn spark_lines(
    State(g): State<AppState>,
    OriginalUri(uri): OriginalUri,
) -> CbResult<Response> {
    Params::of(&uri)?.only(&[])?;
    g.caught_up().await?;
    let m = g.read.model();
    let now_s = m.engine.last_timestamp_ns() / 1_000_000_000;
    let from = (now_s / 3_600).saturating_sub(23) * 3_600;
    let mut out = Vec::new();
    for id in market_ids(&m) {
        let Some(r) = market_ref_by_id(&m, id) else {
            continue;
        };
        let rows: Vec<String> = candle_list(&m, &r, 3_600, from, u64::MAX, 24)
            .iter()
            .rev()
            .map(|c| {
                format!(
                    "[{},{},{},{},{}]",
                    c.start,
                    super::trim_decimal(&c.low),
                    super::trim_decimal(&c.high),
                    super::trim_decimal(&c.open),
                    super::trim_decimal(&c.close),
                )
            })
            .collect();
        let key = serde_json::to_string(&symbol_of(&m, id)).unwrap_or_default();
        out.push(format!("{key}:[{}]", rows.join(",")));
    }
    Ok(super::raw_json(format!("{{{}}}", out.join(","))))
}

/// 24-hour statistics of every product, keyed by product id (`stats_24hour`; `stats_30day` is
/// not given).
pub(super) async fn all_stats(
    State(g): State<AppState>,
    OriginalUri(uri): OriginalUri,
) -> CbResult<Json<Value>> {
    Params::of(&uri)?.only(&[])?;
    g.caught_up().await?;
    let m = g.read.model();
    let mut out = Map::new();
    for id in market_ids(&m) {
        let Some(r) = market_ref_by_id(&m, id) else {
            continue;
        };
        let symbol = symbol_of(&m, id);
        out.insert(
            symbol.clone(),
            json!({ "stats_24hour": super::stats_json(&m, &r, &symbol) }),
        );
    }
    Ok(Json(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_pages_split() {
        let c = [1_700_000_000_000_000_000, 5, 7];
        assert_eq!(parse_cursor("after", &fmt_cursor(c)).ok(), Some(c));
        for bad in ["", "1.2", "1.2.3.4", "a.b.c", "-1.2.3"] {
            assert!(parse_cursor("after", bad).is_err(), "{bad}");
        }
        let items: Vec<(Cursor, u64)> = (1..=10).map(|i| ([i, 0, 0], i)).collect();
        let page = |before, after| Page {
            before,
            after,
            limit: 3,
        };
        let ids = |p: Page| p.apply(items.clone()).iter().map(|x| x.1).collect::<Vec<_>>();
        assert_eq!(ids(page(None, None)), [10, 9, 8]);
        assert_eq!(ids(page(None, Some([8, 0, 0]))), [7, 6, 5]);
        assert_eq!(ids(page(Some([5, 0, 0]), None)), [8, 7, 6]);
        assert_eq!(ids(page(Some([9, 0, 0]), None)), [10]);
        assert_eq!(ids(page(None, Some([1, 0, 0]))), Vec::<u64>::new());
        assert_eq!(bps_rate(25), "0.0025");
        assert_eq!(bps_rate(1_000), "0.1000");
        assert_eq!(fmt_signed(-150, 2), "-1.50");
    }
}
