//! Markets: their specification (ticks, lots, limits, band, fees), state and switches, and the
//! market data they produce (level-2 depth with a sequence number, ticker, candles).
//!
//! # Units
//! A price is given in quote minor units per whole base unit and must be a multiple of `tick`;
//! inside the engine it is a number of ticks ([`Price`]). A quantity is given in base minor
//! units and must be a multiple of `lot`; inside it is a number of lots ([`Qty`]). The market is
//! only accepted if one tick times one lot is a whole number `q` of quote minor units, so every
//! notional `price_ticks × lots × q` is exact: no rounding anywhere but fees, which are rounded
//! down (so the sum of fees over partial fills never exceeds the fee held for the whole order).

use crate::book::{FastBook, Price, Qty, Side};
use crate::money::{AccountId, Amount, AssetId};
use crate::reject::Reject;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Dense index of a market, assigned in definition order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MarketId(pub u32);

impl fmt::Display for MarketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Largest fee in basis points (10 %).
pub const FEE_BPS_MAX: u32 = 1_000;
/// Largest price band in basis points (±50 %).
pub const BAND_BPS_MAX: u32 = 5_000;
pub const MARKETS_MAX: usize = 1_024;
pub const FEE_TIERS_MAX: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MarketState {
    /// Everything allowed.
    Open,
    /// Only orders that rest without trading (post-only); cancels allowed.
    PostOnly,
    /// Only cancels.
    CancelOnly,
    /// Nothing, not even cancels (resting orders stay frozen).
    Halted,
}

/// Which order types a market accepts (Zaif switched market orders off after its glitch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderTypeSwitches {
    pub limit: bool,
    pub market: bool,
    pub ioc: bool,
    pub fok: bool,
    pub post_only: bool,
}

impl OrderTypeSwitches {
    pub const ALL_ON: OrderTypeSwitches = OrderTypeSwitches {
        limit: true,
        market: true,
        ioc: true,
        fok: true,
        post_only: true,
    };
}

/// How far from the reference a limit order that would not trade on arrival may rest, per side,
/// in basis points **of the reference price** (10,000 = the reference itself): a buy down to
/// `buy_floor_bps` (2,000 = a fifth of the reference), a sell up to `sell_ceiling_bps` (50,000 =
/// five times it). The aggressive side keeps the tight band (`band_bps`): a buy is never priced
/// above the band, a sell never below it, and an order that would trade on arrival must be
/// inside the band on both sides. Like large exchanges' per-side percent-price filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassiveBand {
    pub buy_floor_bps: u32,
    pub sell_ceiling_bps: u32,
}

/// Highest passive sell ceiling: 100 times the reference.
pub const PASSIVE_SELL_CEILING_BPS_MAX: u32 = 1_000_000;

impl PassiveBand {
    /// The defaults of a new market: buys may rest down to 20 % of the reference, sells up to 5×.
    pub const DEFAULT: PassiveBand = PassiveBand {
        buy_floor_bps: 2_000,
        sell_ceiling_bps: 50_000,
    };

    /// At least as wide as the market's band on each side, the floor above zero, the ceiling
    /// bounded.
    pub fn validate(&self, band_bps: u32) -> Result<(), Reject> {
        let floor_ok = self.buy_floor_bps >= 1 && self.buy_floor_bps <= 10_000 - band_bps.min(10_000);
        let ceiling_ok = self.sell_ceiling_bps >= 10_000 + band_bps
            && self.sell_ceiling_bps <= PASSIVE_SELL_CEILING_BPS_MAX;
        if floor_ok && ceiling_ok {
            Ok(())
        } else {
            Err(Reject::MarketSpecInvalid)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeTier {
    pub maker_bps: u32,
    pub taker_bps: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketSpec {
    /// `BASE-QUOTE`, e.g. `BTC-USD`.
    pub symbol: String,
    pub base: AssetId,
    pub quote: AssetId,
    /// Price increment, in quote minor units per whole base unit.
    pub tick: Amount,
    /// Quantity increment, in base minor units.
    pub lot: Amount,
    pub qty_min: Amount,
    pub qty_max: Amount,
    /// Notional limits in quote minor units.
    pub notional_min: Amount,
    pub notional_max: Amount,
    /// Orders must be priced within ± this many basis points of the reference price.
    pub band_bps: u32,
    /// Reference price before the first trade (quote minor units per whole base unit).
    pub reference_price: Amount,
    /// Market orders are refused when the reference is older than this (0 = never stale).
    pub reference_age_max_ns: u64,
    /// Fees by account tier; tier 0 applies to accounts without a tier.
    pub fee_tiers: Vec<FeeTier>,
    pub open_orders_per_account_max: u32,
}

/// Market data derived from trades: the current candle of each granularity and a bounded
/// history of closed ones.
pub const CANDLE_GRANULARITIES_S: [u64; 6] = [60, 300, 900, 3_600, 21_600, 86_400];
/// Closed candles kept per granularity (the 24 h ticker needs 1,440 one-minute candles).
pub const CANDLES_KEPT: usize = 1_440;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    /// Start of the bucket, seconds since the Unix epoch.
    pub start_s: u64,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    /// Base volume in lots.
    pub volume: u128,
    /// Quote volume in tick·lot units.
    pub quote_volume: u128,
    pub trades: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandleSeries {
    /// Oldest first; the last one may be the current (open) bucket.
    pub candles: std::collections::VecDeque<Candle>,
}

impl CandleSeries {
    fn record(&mut self, start_s: u64, price: Price, qty: u64, notional_units: u128) {
        match self.candles.back_mut() {
            Some(c) if c.start_s == start_s => {
                c.high = c.high.max(price);
                c.low = c.low.min(price);
                c.close = price;
                c.volume += u128::from(qty);
                c.quote_volume += notional_units;
                c.trades += 1;
            }
            _ => {
                if self.candles.len() >= CANDLES_KEPT {
                    self.candles.pop_front();
                }
                self.candles.push_back(Candle {
                    start_s,
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    volume: u128::from(qty),
                    quote_volume: notional_units,
                    trades: 1,
                });
            }
        }
    }
}

/// The 24 h summary of a market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticker {
    pub last: Option<Price>,
    pub best_bid: Option<Price>,
    pub best_ask: Option<Price>,
    pub open_24h: Option<Price>,
    pub high_24h: Option<Price>,
    pub low_24h: Option<Price>,
    /// Base volume over the last 24 h in lots (minute resolution).
    pub volume_24h: u128,
    pub trades_24h: u64,
}

/// Everything about a market except its order book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketMeta {
    pub spec: MarketSpec,
    /// Quote minor units per tick·lot.
    pub q: u128,
    /// Where trading fees go (the quote asset's fee revenue account).
    pub fee_account: AccountId,
    pub state: MarketState,
    pub switches: OrderTypeSwitches,
    pub last_price: Option<Price>,
    pub reference: Price,
    pub reference_ns: u64,
    /// Incremented for every command that changes the book; level-2 updates carry it.
    pub book_seq: u64,
    pub next_trade_id: u64,
    pub candles: Vec<CandleSeries>,
    /// The passive side's limits (`SetPassiveBand`); `None` for a market that never had one
    /// (defined by journals before per-side bands): both sides keep the tight band.
    pub passive: Option<PassiveBand>,
}

pub struct Market {
    pub meta: MarketMeta,
    pub book: FastBook,
}

impl MarketSpec {
    /// Validates the spec against its assets' decimals; returns `q`, the quote minor units in
    /// one tick·lot.
    pub fn validate(&self, base_decimals: u8) -> Result<u128, Reject> {
        let bad = Err(Reject::MarketSpecInvalid);
        if self.symbol.is_empty() || self.symbol.len() > 32 || self.base == self.quote {
            return bad;
        }
        if self.tick.is_zero() || self.lot.is_zero() {
            return bad;
        }
        let scale = 10u128
            .checked_pow(u32::from(base_decimals))
            .ok_or(Reject::MarketSpecInvalid)?;
        let tl = self
            .tick
            .0
            .checked_mul(self.lot.0)
            .ok_or(Reject::MarketSpecInvalid)?;
        if !tl.is_multiple_of(scale) || tl / scale == 0 {
            return bad;
        }
        let on_lot = |a: Amount| a.0.is_multiple_of(self.lot.0);
        if self.qty_min.is_zero()
            || self.qty_min > self.qty_max
            || !on_lot(self.qty_min)
            || !on_lot(self.qty_max)
        {
            return bad;
        }
        if self.qty_max.0 / self.lot.0 > u128::from(u64::MAX) {
            return bad;
        }
        if self.notional_min > self.notional_max || self.notional_max.is_zero() {
            return bad;
        }
        if self.band_bps == 0 || self.band_bps > BAND_BPS_MAX {
            return bad;
        }
        if self.reference_price.is_zero() || !self.reference_price.0.is_multiple_of(self.tick.0) {
            return bad;
        }
        if self.reference_price.0 / self.tick.0 > u128::from(u64::MAX) {
            return bad;
        }
        if self.fee_tiers.is_empty()
            || self.fee_tiers.len() > FEE_TIERS_MAX
            || self
                .fee_tiers
                .iter()
                .any(|t| t.maker_bps > FEE_BPS_MAX || t.taker_bps > FEE_BPS_MAX)
        {
            return bad;
        }
        if self.open_orders_per_account_max == 0 {
            return bad;
        }
        Ok(tl / scale)
    }

    pub fn fee_tier(&self, tier: u8) -> FeeTier {
        let i = usize::from(tier).min(self.fee_tiers.len() - 1);
        self.fee_tiers[i]
    }
}

impl MarketMeta {
    pub fn new(spec: MarketSpec, q: u128, fee_account: AccountId, now_ns: u64) -> MarketMeta {
        let reference = Price(u64::try_from(spec.reference_price.0 / spec.tick.0).unwrap_or(u64::MAX));
        MarketMeta {
            spec,
            q,
            fee_account,
            state: MarketState::Open,
            switches: OrderTypeSwitches::ALL_ON,
            last_price: None,
            reference,
            reference_ns: now_ns,
            book_seq: 0,
            next_trade_id: 1,
            candles: vec![CandleSeries::default(); CANDLE_GRANULARITIES_S.len()],
            passive: None,
        }
    }

    /// Price in ticks from quote minor units per base unit; refuses zero and off-tick prices.
    pub fn price_ticks(&self, price: Amount) -> Result<Price, Reject> {
        if price.is_zero() {
            return Err(Reject::PriceZero);
        }
        if !price.0.is_multiple_of(self.spec.tick.0) {
            return Err(Reject::PriceOffTick);
        }
        u64::try_from(price.0 / self.spec.tick.0)
            .map(Price)
            .map_err(|_| Reject::PriceOutsideBand)
    }

    /// Quantity in lots from base minor units; refuses zero, off-step and out-of-range sizes.
    pub fn qty_lots(&self, qty: Amount) -> Result<Qty, Reject> {
        if qty.is_zero() {
            return Err(Reject::QtyZero);
        }
        if !qty.0.is_multiple_of(self.spec.lot.0) {
            return Err(Reject::QtyOffStep);
        }
        if qty < self.spec.qty_min {
            return Err(Reject::QtyBelowMin);
        }
        if qty > self.spec.qty_max {
            return Err(Reject::QtyAboveMax);
        }
        Ok(Qty(
            u64::try_from(qty.0 / self.spec.lot.0).map_err(|_| Reject::QtyAboveMax)?
        ))
    }

    /// Notional in quote minor units, checked: an overflow is refused, never wrapped to 0.
    pub fn notional(&self, price: Price, qty: Qty) -> Result<u128, Reject> {
        u128::from(price.0)
            .checked_mul(u128::from(qty.0))
            .and_then(|x| x.checked_mul(self.q))
            .ok_or(Reject::NotionalOverflow)
    }

    pub fn check_notional(&self, notional: u128) -> Result<(), Reject> {
        if notional < self.spec.notional_min.0 {
            return Err(Reject::NotionalBelowMin);
        }
        if notional > self.spec.notional_max.0 {
            return Err(Reject::NotionalAboveMax);
        }
        Ok(())
    }

    /// The band around the reference price, in ticks, inclusive: (low, high). Never below 1.
    pub fn band(&self) -> (Price, Price) {
        self.band_around(self.reference)
    }

    /// The band the market would have if `price` (ticks) were its reference: what a stop order
    /// holds for, since a stop triggers when the last trade (the next reference) reaches it.
    pub fn band_around(&self, price: Price) -> (Price, Price) {
        let r = u128::from(price.0);
        let b = u128::from(self.spec.band_bps);
        let low = (r * (10_000 - b)).div_ceil(10_000).max(1);
        let high = r * (10_000 + b) / 10_000;
        (
            Price(u64::try_from(low).unwrap_or(u64::MAX)),
            Price(u64::try_from(high).unwrap_or(u64::MAX)),
        )
    }

    /// The prices (ticks, inclusive) a limit order on `side` may have. `crosses`: whether it
    /// would trade on arrival (a buy at or above the best ask, a sell at or below the best bid).
    /// An order that crosses is held to the band on both sides, so nothing ever executes at a
    /// taker's limit outside it; one that does not may rest on its passive side down to the
    /// passive floor (a buy) or up to the passive ceiling (a sell). The aggressive edge — a
    /// buy's highest price, a sell's lowest — is always the band's.
    pub fn limit_range(&self, side: Side, crosses: bool) -> (Price, Price) {
        let (low, high) = self.band();
        let r = u128::from(self.reference.0);
        let ticks = |x: u128| Price(u64::try_from(x).unwrap_or(u64::MAX));
        match (self.passive, side, crosses) {
            (Some(p), Side::Buy, false) => {
                let floor = (r * u128::from(p.buy_floor_bps)).div_ceil(10_000).max(1);
                (ticks(floor).min(low), high)
            }
            (Some(p), Side::Sell, false) => {
                let ceiling = r * u128::from(p.sell_ceiling_bps) / 10_000;
                (low, ticks(ceiling).max(high))
            }
            _ => (low, high),
        }
    }

    pub fn reference_stale(&self, now_ns: u64) -> bool {
        self.spec.reference_age_max_ns > 0
            && now_ns.saturating_sub(self.reference_ns) > self.spec.reference_age_max_ns
    }

    pub(crate) fn record_trade(&mut self, now_ns: u64, price: Price, qty: Qty) {
        self.last_price = Some(price);
        self.reference = price;
        self.reference_ns = now_ns;
        let units = u128::from(price.0) * u128::from(qty.0);
        let now_s = now_ns / 1_000_000_000;
        for (series, g) in self.candles.iter_mut().zip(CANDLE_GRANULARITIES_S) {
            series.record(now_s - now_s % g, price, qty.0, units);
        }
    }

    /// Candles of one granularity (seconds), oldest first.
    pub fn candles(&self, granularity_s: u64) -> Option<&CandleSeries> {
        CANDLE_GRANULARITIES_S
            .iter()
            .position(|g| *g == granularity_s)
            .map(|i| &self.candles[i])
    }

    /// The 24 h ticker at `now_ns`, from one-minute candles.
    pub fn ticker(&self, now_ns: u64, best_bid: Option<Price>, best_ask: Option<Price>) -> Ticker {
        let now_s = now_ns / 1_000_000_000;
        let since = now_s.saturating_sub(86_400);
        let mut t = Ticker {
            last: self.last_price,
            best_bid,
            best_ask,
            open_24h: None,
            high_24h: None,
            low_24h: None,
            volume_24h: 0,
            trades_24h: 0,
        };
        for c in self.candles[0].candles.iter().filter(|c| c.start_s + 60 > since) {
            t.open_24h.get_or_insert(c.open);
            t.high_24h = Some(t.high_24h.map_or(c.high, |h| h.max(c.high)));
            t.low_24h = Some(t.low_24h.map_or(c.low, |l| l.min(c.low)));
            t.volume_24h += c.volume;
            t.trades_24h += c.trades;
        }
        t
    }
}

/// Which side holds what: a buy holds quote, a sell holds base.
pub fn hold_asset(spec: &MarketSpec, side: Side) -> AssetId {
    match side {
        Side::Buy => spec.quote,
        Side::Sell => spec.base,
    }
}

/// `floor(amount × bps / 10_000)`.
#[inline]
pub fn fee(amount: u128, bps: u32) -> u128 {
    amount / 10_000 * u128::from(bps) + (amount % 10_000) * u128::from(bps) / 10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_rounds_down_and_never_overflows() {
        assert_eq!(fee(10_000, 25), 25);
        assert_eq!(fee(9_999, 25), 24);
        assert_eq!(fee(0, 1_000), 0);
        assert_eq!(fee(u128::MAX, 1_000), u128::MAX / 10);
        // Sum of fees over parts never exceeds the fee of the whole.
        for (a, b) in [(3u128, 7u128), (9_999, 1), (12_345, 67_890)] {
            assert!(fee(a, 30) + fee(b, 30) <= fee(a + b, 30));
        }
    }
}
