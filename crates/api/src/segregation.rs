//! The daily segregation report a Japanese crypto-asset exchange keeps (docs/design/restitution.md,
//! "The segregation report"): per asset, each customer's quantity from the books, the total,
//! custody at the same moment split hot and cold (the ledger's custody accounts and, where a
//! custody service runs, the node's balances), and the share of customers' crypto assets held
//! outside cold storage, valued in yen, against the 5% ceiling, with the prices used.
//!
//! Pure: it reads one engine state (a replica, or a journal replayed to a sequence) and the
//! node balances handed in. Prices are rationals of integers, never floats:
//! - yen itself is 1;
//! - an asset with an `X-JPY` market: its last trade price, or its reference price before any
//!   trade;
//! - otherwise through one other priced asset: an `X-Q` market with `Q` priced (the price of
//!   `X` in `Q` × the price of `Q`), or a `B-X` market with `B` priced (the price of `B` ÷ the
//!   price of `B` in `X`); the source names the markets.
//!
//! An asset without such a price is not valued: the report names it and the share is not
//! computed (`SegregationError::Unpriced`). Fiat assets (yen, dollars, euros) are listed but not
//! in the 5% test: they are segregated in trust, not in wallets.

use kinko_core::engine::Engine;
use kinko_core::ledger::{Owner, SystemAccount};
use kinko_core::{AssetId, UserId};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The ceiling on customers' crypto assets outside cold storage: 5%, in basis points.
pub const HOT_SHARE_CEILING_BPS: u64 = 500;
/// The valuation currency.
pub const YEN: &str = "JPY";
/// Listed, but outside the 5% test.
pub const FIAT: [&str; 3] = ["JPY", "USD", "EUR"];

/// A price as `num / den` yen minor units per minor unit of the asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YenPrice {
    pub num: u128,
    pub den: u128,
    /// Where it comes from, e.g. `BTC-JPY last` or `LTC-USD last × USD`.
    pub source: String,
}

impl YenPrice {
    /// `qty` minor units in yen minor units, rounded down; `None` if it cannot be represented.
    pub fn value(&self, qty: u128) -> Option<u128> {
        mul_div(qty, self.num, self.den)
    }
}

#[derive(Clone, Debug)]
pub struct AssetRow {
    pub asset: AssetId,
    pub code: String,
    pub decimals: u8,
    pub fiat: bool,
    /// Each customer's posted balance (available and held), by user id; zero balances omitted.
    pub customers: Vec<(UserId, u128)>,
    pub customer_total: u128,
    pub ledger_hot: i128,
    pub ledger_cold: i128,
    /// The node's hot and cold balances, where a custody service runs for the asset.
    pub node: Option<(u128, u128)>,
    /// Customers' quantity not covered by cold storage: max(0, total − cold), with cold the
    /// node's where known, else the ledger's.
    pub outside_cold: u128,
    pub price: Option<YenPrice>,
    pub value_total: Option<u128>,
    pub value_outside_cold: Option<u128>,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub seq: u64,
    pub timestamp_ns: u64,
    pub rows: Vec<AssetRow>,
    /// Crypto assets held by customers that have no yen price.
    pub unpriced: Vec<String>,
    /// Over the crypto assets: yen value outside cold storage and in total.
    pub value_outside_cold: u128,
    pub value_total: u128,
    /// `value_outside_cold / value_total` in basis points, rounded up (none when nothing is
    /// held, or some asset is unpriced).
    pub hot_share_bps: Option<u64>,
}

impl Report {
    pub fn over_ceiling(&self) -> bool {
        self.hot_share_bps.is_some_and(|b| b > HOT_SHARE_CEILING_BPS)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SegregationError {
    #[error("no yen price for {0}: add a {0}-JPY market, or one against a priced asset")]
    Unpriced(String),
    #[error("a value of {0} does not fit in 128 bits")]
    Overflow(String),
}

/// The report of `engine`'s state; `node` maps asset codes to the node's (hot, cold).
pub fn build(engine: &Engine, node: &BTreeMap<String, (u128, u128)>) -> Report {
    let prices = prices(engine);
    let mut rows = Vec::new();
    let mut unpriced = Vec::new();
    let (mut outside, mut total) = (0u128, 0u128);
    let mut overflow = false;
    let mut per_asset: Vec<Vec<(UserId, u128)>> = vec![Vec::new(); engine.assets().len()];
    for a in engine.ledger().accounts() {
        if let Owner::Customer(u) = a.owner {
            let b = u128::try_from(a.balance()).unwrap_or(0);
            if b > 0 {
                if let Some(v) = per_asset.get_mut(a.asset.0 as usize) {
                    v.push((u, b));
                }
            }
        }
    }
    for (i, (a, mut customers)) in engine.assets().iter().zip(per_asset).enumerate() {
        let asset = AssetId(u32::try_from(i).unwrap_or(u32::MAX));
        customers.sort_unstable();
        let customer_total = customers.iter().fold(0u128, |t, c| t.saturating_add(c.1));
        let bal = |w: SystemAccount| {
            engine
                .ledger()
                .account(a.system_account(w))
                .map_or(0, |x| x.balance())
        };
        let (ledger_hot, ledger_cold) = (bal(SystemAccount::HotWallet), bal(SystemAccount::ColdWallet));
        let code = a.code.as_str().to_owned();
        let node = node.get(&code).copied();
        let cold = node.map_or(u128::try_from(ledger_cold).unwrap_or(0), |n| n.1);
        let outside_cold = customer_total.saturating_sub(cold);
        let fiat = FIAT.contains(&code.as_str());
        let price = prices.get(&asset).cloned();
        let (value_total, value_outside_cold) = match &price {
            Some(p) => (p.value(customer_total), p.value(outside_cold)),
            None => (None, None),
        };
        if !fiat && customer_total > 0 {
            match (value_total, value_outside_cold) {
                (Some(t), Some(o)) => {
                    total = total.saturating_add(t);
                    outside = outside.saturating_add(o);
                }
                _ if price.is_none() => unpriced.push(code.clone()),
                _ => overflow = true,
            }
        }
        rows.push(AssetRow {
            asset,
            code,
            decimals: a.decimals,
            fiat,
            customers,
            customer_total,
            ledger_hot,
            ledger_cold,
            node,
            outside_cold,
            price,
            value_total,
            value_outside_cold,
        });
    }
    let hot_share_bps = (unpriced.is_empty() && !overflow && total > 0).then(|| {
        let bps = match outside.checked_mul(10_000) {
            Some(p) => p.div_ceil(total),
            // Beyond 128 bits: one more than the floor, on the safe side.
            None => mul_div(outside, 10_000, total).map_or(u128::MAX, |b| b.saturating_add(1)),
        };
        u64::try_from(bps).unwrap_or(u64::MAX)
    });
    Report {
        seq: engine.last_seq(),
        timestamp_ns: engine.last_timestamp_ns(),
        rows,
        unpriced,
        value_outside_cold: outside,
        value_total: total,
        hot_share_bps,
    }
}

/// The checks before a report is filed: every crypto asset customers hold is priced.
pub fn check(r: &Report) -> Result<(), SegregationError> {
    if let Some(code) = r.unpriced.first() {
        return Err(SegregationError::Unpriced(code.clone()));
    }
    if let Some(row) = r.rows.iter().find(|x| {
        !x.fiat && x.customer_total > 0 && (x.value_total.is_none() || x.value_outside_cold.is_none())
    }) {
        return Err(SegregationError::Overflow(row.code.clone()));
    }
    Ok(())
}

/// Yen prices of every asset that has one (see the module's documentation).
pub fn prices(engine: &Engine) -> BTreeMap<AssetId, YenPrice> {
    let mut out: BTreeMap<AssetId, YenPrice> = BTreeMap::new();
    let Some(yen) = engine.asset_by_code(YEN) else {
        return out;
    };
    out.insert(
        yen,
        YenPrice {
            num: 1,
            den: 1,
            source: "yen".into(),
        },
    );
    // (base, quote, quote minor units per whole base unit, symbol, "last" or "reference").
    let markets: Vec<(AssetId, AssetId, u128, String, &str)> = engine
        .trading()
        .markets()
        .iter()
        .filter_map(|m| {
            let meta = &m.meta;
            let (ticks, how) = match meta.last_price {
                Some(p) => (p.0, "last"),
                None => (meta.reference.0, "reference"),
            };
            let p = u128::from(ticks).checked_mul(meta.spec.tick.0)?;
            (p > 0).then(|| (meta.spec.base, meta.spec.quote, p, meta.spec.symbol.clone(), how))
        })
        .collect();
    let unit = |a: AssetId| {
        engine
            .asset(a)
            .and_then(|x| 10u128.checked_pow(u32::from(x.decimals)))
    };
    // Direct yen markets first, then one hop at a time (at most one round per asset).
    for (base, quote, p, sym, how) in &markets {
        if *quote == yen && !out.contains_key(base) {
            if let Some(u) = unit(*base) {
                out.insert(*base, reduce(*p, u, format!("{sym} {how}")));
            }
        }
    }
    for _ in 0..engine.assets().len() {
        let mut added = false;
        for (base, quote, p, sym, how) in &markets {
            if !out.contains_key(base) {
                if let (Some(q), Some(u)) = (out.get(quote).cloned(), unit(*base)) {
                    // yen per base minor = p / 10^d(base) quote minor × q.
                    if let (Some(num), Some(den)) = (p.checked_mul(q.num), u.checked_mul(q.den)) {
                        let code = engine.asset(*quote).map_or("?", |x| x.code.as_str());
                        out.insert(*base, reduce(num, den, format!("{sym} {how} × {code}")));
                        added = true;
                    }
                }
            }
            if !out.contains_key(quote) {
                if let (Some(b), Some(u)) = (out.get(base).cloned(), unit(*base)) {
                    // quote minor per base minor = p / 10^d(base); yen per quote minor = b ÷ that.
                    if let (Some(num), Some(den)) = (b.num.checked_mul(u), b.den.checked_mul(*p)) {
                        let code = engine.asset(*base).map_or("?", |x| x.code.as_str());
                        out.insert(*quote, reduce(num, den, format!("{code} ÷ {sym} {how}")));
                        added = true;
                    }
                }
            }
        }
        if !added {
            break;
        }
    }
    out
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn reduce(num: u128, den: u128, source: String) -> YenPrice {
    let g = gcd(num, den).max(1);
    YenPrice {
        num: num / g,
        den: den / g,
        source,
    }
}

/// `a × b / c` rounded down, through a 256-bit product; `None` if `c` is 0 or the quotient
/// does not fit.
pub fn mul_div(a: u128, b: u128, c: u128) -> Option<u128> {
    if c == 0 {
        return None;
    }
    if let Some(p) = a.checked_mul(b) {
        return Some(p / c);
    }
    let (hi, lo) = mul_wide(a, b);
    let mut r: u128 = 0;
    let mut q_hi: u128 = 0;
    let mut q_lo: u128 = 0;
    for i in (0..256).rev() {
        let bit = if i >= 128 {
            (hi >> (i - 128)) & 1
        } else {
            (lo >> i) & 1
        };
        let carry = r >> 127;
        r = (r << 1) | bit;
        if carry == 1 || r >= c {
            r = r.wrapping_sub(c);
            if i >= 128 {
                q_hi |= 1 << (i - 128);
            } else {
                q_lo |= 1 << i;
            }
        }
    }
    (q_hi == 0).then_some(q_lo)
}

/// The full 256-bit product as (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let mask = u128::from(u64::MAX);
    let (a0, a1) = (a & mask, a >> 64);
    let (b0, b1) = (b & mask, b >> 64);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & mask) + (p10 & mask);
    let lo = (p00 & mask) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

fn dec(n: u128, d: u8) -> String {
    kinko_core::Amount(n).to_decimal(d)
}

fn sdec(n: i128, d: u8) -> String {
    let s = dec(n.unsigned_abs(), d);
    if n < 0 {
        format!("-{s}")
    } else {
        s
    }
}

fn bps_text(b: u64) -> String {
    format!("{}.{:02}%", b / 100, b % 100)
}

/// The customers' CSV: `asset,user_id,quantity` (decimals), one row per customer and asset
/// held, then one `TOTAL` row per asset.
pub fn customers_csv(r: &Report) -> String {
    let mut s = String::from("asset,user_id,quantity\n");
    for row in &r.rows {
        for (u, q) in &row.customers {
            let _ = writeln!(s, "{},{},{}", row.code, u.0, dec(*q, row.decimals));
        }
        let _ = writeln!(s, "{},TOTAL,{}", row.code, dec(row.customer_total, row.decimals));
    }
    s
}

/// The summary CSV: one row per asset (quantities in whole units as decimals, yen values in
/// yen, prices as the fraction used).
pub fn summary_csv(r: &Report) -> String {
    let mut s = String::from(
        "seq,asset,fiat,customers,customer_total,ledger_hot,ledger_cold,node_hot,node_cold,outside_cold,\
         price_num,price_den,price_source,value_total_jpy,value_outside_cold_jpy\n",
    );
    for row in &r.rows {
        let d = row.decimals;
        let (ph, pd, ps) = row
            .price
            .as_ref()
            .map_or((String::new(), String::new(), String::new()), |p| {
                (p.num.to_string(), p.den.to_string(), p.source.replace(',', " "))
            });
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.seq,
            row.code,
            row.fiat,
            row.customers.len(),
            dec(row.customer_total, d),
            sdec(row.ledger_hot, d),
            sdec(row.ledger_cold, d),
            row.node.map(|n| dec(n.0, d)).unwrap_or_default(),
            row.node.map(|n| dec(n.1, d)).unwrap_or_default(),
            dec(row.outside_cold, d),
            ph,
            pd,
            ps,
            row.value_total.map(|v| v.to_string()).unwrap_or_default(),
            row.value_outside_cold.map(|v| v.to_string()).unwrap_or_default(),
        );
    }
    let _ = writeln!(
        s,
        "{},TOTAL,false,,,,,,,,,,,{},{}",
        r.seq, r.value_total, r.value_outside_cold
    );
    s
}

/// The plain-text report.
pub fn text(r: &Report, at: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "kinko segregation report (分別管理報告)");
    let _ = writeln!(s, "as of          {at} (journal sequence {})", r.seq);
    let _ = writeln!(
        s,
        "ceiling        {} of customers' crypto assets, valued in yen, outside cold storage",
        bps_text(HOT_SHARE_CEILING_BPS)
    );
    let _ = writeln!(s);
    for row in &r.rows {
        let d = row.decimals;
        let _ = writeln!(
            s,
            "{}{}",
            row.code,
            if row.fiat {
                "  (fiat: held in trust, not in the 5% test)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "  customers      {} accounts, total {}",
            row.customers.len(),
            dec(row.customer_total, d)
        );
        let _ = writeln!(
            s,
            "  ledger         hot {}  cold {}",
            sdec(row.ledger_hot, d),
            sdec(row.ledger_cold, d)
        );
        match row.node {
            Some((h, c)) => {
                let _ = writeln!(s, "  node           hot {}  cold {}", dec(h, d), dec(c, d));
            }
            None => {
                let _ = writeln!(s, "  node           not queried (no custody service for it here)");
            }
        }
        let _ = writeln!(s, "  outside cold   {}", dec(row.outside_cold, d));
        match (&row.price, row.value_total, row.value_outside_cold) {
            (Some(p), Some(t), Some(o)) => {
                let _ = writeln!(
                    s,
                    "  price          {}/{} yen per minor unit ({})",
                    p.num, p.den, p.source
                );
                let _ = writeln!(s, "  value          total {t} yen, outside cold {o} yen");
            }
            (Some(p), _, _) => {
                let _ = writeln!(
                    s,
                    "  price          {}/{} ({}): value too large",
                    p.num, p.den, p.source
                );
            }
            (None, _, _) => {
                let _ = writeln!(s, "  price          NONE: not valued");
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "crypto assets  total {} yen, outside cold storage {} yen",
        r.value_total, r.value_outside_cold
    );
    match r.hot_share_bps {
        Some(b) => {
            let _ = writeln!(
                s,
                "share outside cold storage  {}  ({})",
                bps_text(b),
                if r.over_ceiling() {
                    "ABOVE THE 5% CEILING"
                } else {
                    "within the 5% ceiling"
                }
            );
        }
        None if !r.unpriced.is_empty() => {
            let _ = writeln!(
                s,
                "share outside cold storage  NOT COMPUTED: no yen price for {}",
                r.unpriced.join(", ")
            );
        }
        None => {
            let _ = writeln!(
                s,
                "share outside cold storage  none (customers hold no crypto assets)"
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::mul_div;

    #[test]
    fn mul_div_is_exact_beyond_128_bits() {
        assert_eq!(mul_div(10, 20, 3), Some(66));
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX), Some(u128::MAX));
        assert_eq!(mul_div(u128::MAX, 4, 8), Some(u128::MAX / 2));
        assert_eq!(mul_div(1 << 100, 1 << 100, 1 << 90), Some(1 << 110));
        assert_eq!(mul_div(u128::MAX, 2, 1), None);
        assert_eq!(mul_div(1, 1, 0), None);
    }
}
