//! Spot trading through the engine: pre-trade checks in order, settlement with fees, holds,
//! self-trade prevention, operator controls, trade busts, market data, the Zaif 0-yen event,
//! and property tests that random trading keeps every invariant and replays exactly.

use crate::replay;
use kinko_core::book::{CancelReason, OrderId, Price, Qty, Side, Stp, TimeInForce};
use kinko_core::engine::{Command, Engine, Event, Reply};
use kinko_core::ledger::{SystemAccount, TransferKind, TransferRequest};
use kinko_core::market::{FeeTier, MarketId, MarketSpec, MarketState, OrderTypeSwitches, PassiveBand};
use kinko_core::money::{AccountId, Amount, AssetCode, AssetId, TransferId, UserId};
use kinko_core::reject::Reject;
use kinko_core::trading::{ClientOrderId, OrderRef, OrderStatus, OrderType, PlaceOrder, TradingEvent};
use proptest::prelude::*;

pub(crate) struct Ex {
    pub(crate) engine: Engine,
    seq: u64,
    pub(crate) now_ns: u64,
    pub(crate) log: Vec<(u64, u64, Command)>,
    pub(crate) events: Vec<Event>,
    next_transfer: u128,
}

pub(crate) const BTC: AssetId = AssetId(0);
pub(crate) const USD: AssetId = AssetId(1);
pub(crate) const M: MarketId = MarketId(0);
/// 1 BTC in satoshi.
pub(crate) const COIN: u128 = 100_000_000;
/// 1 USD in cents.
pub(crate) const DOLLAR: u128 = 100;

fn spec() -> MarketSpec {
    MarketSpec {
        symbol: "BTC-USD".into(),
        base: BTC,
        quote: USD,
        tick: Amount(DOLLAR),    // 1.00 USD
        lot: Amount(COIN / 100), // 0.01 BTC  → one tick·lot = 1 cent
        qty_min: Amount(COIN / 100),
        qty_max: Amount(100 * COIN),
        notional_min: Amount(DOLLAR),
        notional_max: Amount(10_000_000 * DOLLAR),
        band_bps: 1_000,
        reference_price: Amount(30_000 * DOLLAR),
        reference_age_max_ns: 3_600_000_000_000,
        fee_tiers: vec![
            FeeTier {
                maker_bps: 10,
                taker_bps: 20,
            },
            FeeTier {
                maker_bps: 0,
                taker_bps: 5,
            },
        ],
        open_orders_per_account_max: 50,
    }
}

impl Ex {
    fn new() -> Ex {
        let mut ex = Ex {
            engine: Engine::new(),
            seq: 0,
            now_ns: 1_700_000_000_000_000_000,
            log: Vec::new(),
            events: Vec::new(),
            next_transfer: 1,
        };
        ex.ok(Command::DefineAsset {
            code: AssetCode::new("BTC").unwrap(),
            decimals: 8,
        });
        ex.ok(Command::DefineAsset {
            code: AssetCode::new("USD").unwrap(),
            decimals: 2,
        });
        ex.ok(Command::DefineMarket(spec()));
        ex
    }

    pub(crate) fn run(&mut self, cmd: Command) -> Result<Reply, Reject> {
        self.seq += 1;
        self.now_ns += 1_000_000;
        self.events.clear();
        let r = self.engine.apply(self.seq, self.now_ns, &cmd, &mut self.events);
        self.log.push((self.seq, self.now_ns, cmd));
        if let Err(v) = self.engine.check() {
            panic!("invariant broken after seq {}: {v}", self.seq);
        }
        r
    }

    pub(crate) fn ok(&mut self, cmd: Command) -> Reply {
        let c = format!("{cmd:?}");
        self.run(cmd).unwrap_or_else(|e| panic!("{c}: {e:?}"))
    }

    fn account(&mut self, user: u64, asset: AssetId) -> AccountId {
        match self.ok(Command::OpenAccount {
            user: UserId(user),
            asset,
        }) {
            Reply::AccountOpened { account } => account,
            other => panic!("{other:?}"),
        }
    }

    pub(crate) fn deposit(&mut self, user: u64, asset: AssetId, amount: u128) {
        let to = self.account(user, asset);
        let hot = self
            .engine
            .asset(asset)
            .unwrap()
            .system_account(SystemAccount::HotWallet);
        let id = self.next_transfer;
        self.next_transfer += 1;
        match self.ok(Command::Transfers(vec![TransferRequest {
            id: TransferId(id),
            kind: TransferKind::Post {
                debit: hot,
                credit: to,
                amount: Amount(amount),
            },
            linked: false,
            code: 1,
            user_data: 0,
        }])) {
            Reply::Transfers(r) => assert!(r[0].is_ok(), "{r:?}"),
            other => panic!("{other:?}"),
        }
    }

    /// (balance, held) of a user's account.
    pub(crate) fn bal(&self, user: u64, asset: AssetId) -> (i128, u128) {
        self.engine
            .ledger()
            .customer_account(UserId(user), asset)
            .and_then(|a| self.engine.ledger().account(a))
            .map_or((0, 0), |a| (a.balance(), a.held))
    }

    fn fees(&self, asset: AssetId) -> i128 {
        let a = self
            .engine
            .asset(asset)
            .unwrap()
            .system_account(SystemAccount::FeeRevenue);
        self.engine.ledger().account(a).unwrap().balance()
    }

    pub(crate) fn place(&mut self, p: PlaceOrder) -> Result<kinko_core::trading::Order, Reject> {
        self.run(Command::PlaceOrder(p)).map(|r| match r {
            Reply::OrderPlaced(o) => o.order,
            other => panic!("{other:?}"),
        })
    }

    /// Level-2 changes of the last command: (side, price, qty, orders, book sequence).
    pub(crate) fn levels(&self) -> Vec<(Side, Price, Qty, u32, u64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Trading(TradingEvent::Level {
                    side,
                    price,
                    qty,
                    orders,
                    book_seq,
                    ..
                }) => Some((*side, *price, *qty, *orders, *book_seq)),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn trades(&self) -> Vec<kinko_core::trading::Trade> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Trading(TradingEvent::Trade(t)) => Some(*t),
                _ => None,
            })
            .collect()
    }
}

pub(crate) fn limit(user: u64, side: Side, price_usd: u128, qty_btc_hundredths: u128) -> PlaceOrder {
    PlaceOrder {
        user: UserId(user),
        market: M,
        client_id: None,
        side,
        order_type: OrderType::Limit {
            price: Amount(price_usd * DOLLAR),
            tif: TimeInForce::Gtc,
        },
        qty: Some(Amount(qty_btc_hundredths * COIN / 100)),
        stp: Stp::CancelNewest,
    }
}

pub(crate) fn with_tif(mut p: PlaceOrder, tif: TimeInForce) -> PlaceOrder {
    if let OrderType::Limit { price, .. } = p.order_type {
        p.order_type = OrderType::Limit { price, tif };
    }
    p
}

pub(crate) fn market(user: u64, side: Side, qty: Option<u128>, funds: Option<u128>) -> PlaceOrder {
    PlaceOrder {
        user: UserId(user),
        market: M,
        client_id: None,
        side,
        order_type: OrderType::Market {
            funds: funds.map(Amount),
        },
        qty: qty.map(Amount),
        stp: Stp::CancelNewest,
    }
}

/// Alice (1) sells BTC, Bob (2) buys with USD.
pub(crate) fn funded() -> Ex {
    let mut ex = Ex::new();
    ex.deposit(1, BTC, 10 * COIN);
    ex.deposit(2, USD, 1_000_000 * DOLLAR);
    ex
}

#[test]
fn a_crossing_pair_settles_exactly_with_fees() {
    let mut ex = funded();
    let sell = ex.place(limit(1, Side::Sell, 30_000, 100)).unwrap(); // 1 BTC at 30,000
    assert_eq!(sell.status, OrderStatus::Open);
    assert_eq!(ex.bal(1, BTC), (10 * COIN as i128, COIN));
    let buy = ex.place(limit(2, Side::Buy, 30_100, 40)).unwrap(); // 0.4 BTC up to 30,100
    assert_eq!(buy.status, OrderStatus::Filled);
    let t = ex.trades();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].price, Price(30_000), "trades at the maker's price");
    assert_eq!(t[0].maker_side, Side::Sell);
    assert_eq!(t[0].qty, Qty(40));
    let notional = 12_000 * DOLLAR; // 0.4 × 30,000
    assert_eq!(t[0].notional, notional);
    let taker_fee = notional * 20 / 10_000;
    let maker_fee = notional * 10 / 10_000;
    assert_eq!((t[0].buyer_fee, t[0].seller_fee), (taker_fee, maker_fee));
    // Bob: paid notional + taker fee; the rest of his hold (bought below his limit) released.
    assert_eq!(
        ex.bal(2, USD),
        ((1_000_000 * DOLLAR - notional - taker_fee) as i128, 0)
    );
    assert_eq!(ex.bal(2, BTC), ((40 * COIN / 100) as i128, 0));
    // Alice: received notional − maker fee; 0.6 BTC still held by the resting remainder.
    assert_eq!(ex.bal(1, USD), ((notional - maker_fee) as i128, 0));
    assert_eq!(
        ex.bal(1, BTC),
        ((10 * COIN - 40 * COIN / 100) as i128, 60 * COIN / 100)
    );
    assert_eq!(ex.fees(USD), (taker_fee + maker_fee) as i128);
    let resting = ex.engine.trading().order(sell.id).unwrap();
    assert_eq!(resting.filled, Qty(40));
    assert_eq!(resting.status, OrderStatus::Open);
    // Cancelling the remainder releases exactly its hold.
    ex.ok(Command::CancelOrder {
        user: UserId(1),
        order: OrderRef::Id(sell.id),
    });
    assert_eq!(ex.bal(1, BTC).1, 0);
    ex.engine.audit().unwrap();
}

#[test]
fn pre_trade_checks_run_in_order_with_stable_codes() {
    let mut ex = funded();
    let base = limit(2, Side::Buy, 30_000, 1);
    let cases: Vec<(&str, PlaceOrder, Reject)> = vec![
        (
            "unknown market",
            PlaceOrder {
                market: MarketId(9),
                ..base
            },
            Reject::MarketNotFound,
        ),
        (
            "market without qty or funds",
            market(2, Side::Buy, None, None),
            Reject::OrderSpecInvalid,
        ),
        (
            "market with both",
            market(2, Side::Buy, Some(COIN), Some(DOLLAR * 10)),
            Reject::OrderSpecInvalid,
        ),
        (
            "limit without qty",
            PlaceOrder { qty: None, ..base },
            Reject::OrderSpecInvalid,
        ),
        ("price 0", limit(2, Side::Buy, 0, 1), Reject::PriceZero),
        (
            "price off tick",
            PlaceOrder {
                order_type: OrderType::Limit {
                    price: Amount(30_000 * DOLLAR + 1),
                    tif: TimeInForce::Gtc,
                },
                ..base
            },
            Reject::PriceOffTick,
        ),
        ("qty 0", limit(2, Side::Buy, 30_000, 0), Reject::QtyZero),
        (
            "qty off step",
            PlaceOrder {
                qty: Some(Amount(COIN / 100 + 1)),
                ..base
            },
            Reject::QtyOffStep,
        ),
        (
            "qty below min",
            PlaceOrder {
                qty: Some(Amount(0)),
                ..base
            },
            Reject::QtyZero,
        ),
        (
            "qty above max",
            limit(2, Side::Buy, 30_000, 100 * 100 + 1),
            Reject::QtyAboveMax,
        ),
        (
            "notional above max",
            limit(2, Side::Buy, 30_000, 100 * 100),
            Reject::FundsInsufficient,
        ),
        (
            "price above band",
            limit(2, Side::Buy, 33_001, 1),
            Reject::PriceOutsideBand,
        ),
        (
            "price below band",
            limit(2, Side::Sell, 26_999, 1),
            Reject::PriceOutsideBand,
        ),
        (
            "funds",
            limit(2, Side::Buy, 30_000, 40 * 100),
            Reject::FundsInsufficient,
        ),
        (
            "seller without coins",
            limit(2, Side::Sell, 30_000, 1),
            Reject::FundsInsufficient,
        ),
    ];
    for (name, p, want) in cases {
        let before = ex.engine.ledger().state();
        assert_eq!(ex.place(p), Err(want), "{name}");
        assert_eq!(
            ex.engine.ledger().state(),
            before,
            "{name}: a refused order changed the ledger"
        );
    }
    // Notional cap: a smaller max shows the check fires before funds.
    let mut ex2 = Ex::new();
    let mut s = spec();
    s.symbol = "BTC-USD2".into();
    s.notional_max = Amount(1_000 * DOLLAR);
    s.notional_min = Amount(500 * DOLLAR);
    ex2.ok(Command::DefineMarket(s));
    let m2 = MarketId(1);
    assert_eq!(
        ex2.place(PlaceOrder {
            market: m2,
            ..limit(2, Side::Buy, 30_000, 4)
        }),
        Err(Reject::NotionalAboveMax)
    );
    assert_eq!(
        ex2.place(PlaceOrder {
            market: m2,
            ..limit(2, Side::Buy, 30_000, 0)
        }),
        Err(Reject::QtyZero)
    );
    assert_eq!(
        ex2.place(PlaceOrder {
            market: m2,
            qty: Some(Amount(COIN / 100)),
            order_type: OrderType::Limit {
                price: Amount(29_000 * DOLLAR),
                tif: TimeInForce::Gtc
            },
            ..limit(2, Side::Buy, 1, 1)
        }),
        Err(Reject::NotionalBelowMin)
    );
}

#[test]
fn zaif_zero_yen_event_is_refused_and_changes_nothing() {
    // Feb 2018: orders could be bought for 0 yen; a reference fell to 0; one customer "bought"
    // 2.1 billion BTC. Each is refused here, and no balance moves.
    let mut ex = Ex::new();
    ex.ok(Command::DefineAsset {
        code: AssetCode::new("JPY").unwrap(),
        decimals: 0,
    });
    let jpy = AssetId(2);
    let zaif = MarketSpec {
        symbol: "BTC-JPY".into(),
        base: BTC,
        quote: jpy,
        tick: Amount(1_000),  // 1,000 yen per BTC
        lot: Amount(100_000), // 0.001 BTC  → 1 yen per tick·lot
        qty_min: Amount(100_000),
        qty_max: Amount(1_000 * COIN),
        notional_min: Amount(100),
        notional_max: Amount(100_000_000),
        band_bps: 500,
        reference_price: Amount(1_000_000),
        reference_age_max_ns: 60_000_000_000,
        fee_tiers: vec![FeeTier {
            maker_bps: 0,
            taker_bps: 10,
        }],
        open_orders_per_account_max: 10,
    };
    let m = match ex.ok(Command::DefineMarket(zaif)) {
        Reply::MarketDefined { market, .. } => market,
        other => panic!("{other:?}"),
    };
    ex.deposit(1, BTC, 5 * COIN);
    ex.deposit(2, jpy, 10_000_000);
    ex.place(PlaceOrder {
        market: m,
        ..limit(1, Side::Sell, 0, 0)
    })
    .unwrap_err();
    let hash_before = ex.engine.ledger().state();
    let buy = |price: u128, qty: u128| PlaceOrder {
        user: UserId(2),
        market: m,
        client_id: None,
        side: Side::Buy,
        order_type: OrderType::Limit {
            price: Amount(price),
            tif: TimeInForce::Gtc,
        },
        qty: Some(Amount(qty)),
        stp: Stp::CancelNewest,
    };
    // An order at price 0.
    assert_eq!(ex.place(buy(0, COIN)), Err(Reject::PriceZero));
    // A reference price that drops to 0 is refused; the reference stays where it was.
    assert_eq!(
        ex.run(Command::SetReferencePrice {
            market: m,
            price: Amount(0)
        }),
        Err(Reject::ReferencePriceInvalid)
    );
    assert_eq!(
        ex.engine.trading().market(m).unwrap().meta.reference,
        Price(1_000)
    );
    // A buy of 2.1 billion BTC (more than will ever exist), at a tiny and at a fair price.
    let huge = 2_100_000_000 * COIN;
    assert_eq!(ex.place(buy(1_000, huge)), Err(Reject::QtyAboveMax));
    assert_eq!(ex.place(buy(1_000_000, huge)), Err(Reject::QtyAboveMax));
    // At the largest allowed size and a price far below the market: outside the band.
    assert_eq!(ex.place(buy(1_000, 1_000 * COIN)), Err(Reject::PriceOutsideBand));
    assert_eq!(ex.place(buy(10_000, 1_000 * COIN)), Err(Reject::PriceOutsideBand));
    // A notional that would overflow is refused, never wrapped to 0.
    let mut wide = spec();
    wide.symbol = "BTC-JPY-WIDE".into();
    wide.quote = jpy;
    wide.tick = Amount(1);
    wide.lot = Amount(COIN);
    wide.qty_min = Amount(COIN);
    wide.qty_max = Amount(u128::from(u64::MAX) * COIN);
    wide.notional_max = Amount(u128::MAX);
    wide.reference_price = Amount(u128::from(u64::MAX));
    wide.band_bps = 1;
    let w = match ex.ok(Command::DefineMarket(wide)) {
        Reply::MarketDefined { market, .. } => market,
        other => panic!("{other:?}"),
    };
    let overflow = PlaceOrder {
        market: w,
        qty: Some(Amount(u128::from(u64::MAX) * COIN)),
        order_type: OrderType::Limit {
            price: Amount(u128::from(u64::MAX)),
            tif: TimeInForce::Gtc,
        },
        ..buy(1, 1)
    };
    assert_eq!(ex.place(overflow), Err(Reject::NotionalOverflow));
    assert_eq!(ex.engine.ledger().state(), hash_before, "no balance changed");
    // And even a seller cannot give what they do not have: the buyer's BTC comes only from a
    // seller's held coins.
    assert_eq!(ex.bal(2, BTC), (0, 0));
    ex.engine.audit().unwrap();
}

#[test]
fn time_in_force_market_orders_and_quote_funds() {
    let mut ex = funded();
    ex.place(limit(1, Side::Sell, 30_000, 10)).unwrap();
    ex.place(limit(1, Side::Sell, 30_010, 10)).unwrap();
    // FOK for more than is there: nothing happens but its own cancellation.
    let fok = ex
        .place(with_tif(limit(2, Side::Buy, 30_010, 30), TimeInForce::Fok))
        .unwrap();
    assert_eq!(fok.status, OrderStatus::Cancelled(CancelReason::FokUnfillable));
    assert!(ex.trades().is_empty());
    assert_eq!(ex.bal(2, USD).1, 0);
    // Post-only that would cross is cancelled.
    let po = ex
        .place(with_tif(limit(2, Side::Buy, 30_000, 1), TimeInForce::PostOnly))
        .unwrap();
    assert_eq!(
        po.status,
        OrderStatus::Cancelled(CancelReason::PostOnlyWouldCross)
    );
    // IOC takes what is there within its limit, cancels the rest.
    let ioc = ex
        .place(with_tif(limit(2, Side::Buy, 30_000, 15), TimeInForce::Ioc))
        .unwrap();
    assert_eq!(ioc.filled, Qty(10));
    assert_eq!(ioc.status, OrderStatus::Cancelled(CancelReason::Unfilled));
    assert_eq!(ex.bal(2, USD).1, 0, "IOC remainder released");
    // Market buy by funds: spends at most the funds, fee included.
    let funds = 1_500 * DOLLAR;
    let before = ex.bal(2, USD).0;
    let mb = ex.place(market(2, Side::Buy, None, Some(funds))).unwrap();
    assert_eq!(mb.status, OrderStatus::Filled);
    let spent = (before - ex.bal(2, USD).0) as u128;
    // Whole lots only: what is left is less than one more lot with its fee.
    assert!(spent <= funds && funds - spent < 30_010 + 61, "spent {spent}");
    assert_eq!(mb.filled, Qty(4)); // 0.04 BTC at 30,010 = 1,200.40 + fee fits; 0.05 would not
                                   // Market sell by quantity into bids.
    ex.place(limit(2, Side::Buy, 29_990, 5)).unwrap();
    let ms = ex
        .place(market(1, Side::Sell, Some(3 * COIN / 100), None))
        .unwrap();
    assert_eq!(ms.filled, Qty(3));
    assert_eq!(ms.status, OrderStatus::Filled);
    // A market order never fills outside the band: a far bid is not reached.
    let mut ex = funded();
    ex.deposit(3, USD, 1_000_000 * DOLLAR);
    ex.place(limit(3, Side::Buy, 27_000, 100)).unwrap(); // at the band's low edge
    ex.ok(Command::SetReferencePrice {
        market: M,
        price: Amount(31_000 * DOLLAR),
    });
    let ms = ex.place(market(1, Side::Sell, Some(COIN), None)).unwrap();
    assert_eq!(ms.filled, Qty(0), "27,000 is outside 31,000 − 10 %");
}

#[test]
fn stale_reference_stops_market_orders_only() {
    let mut ex = funded();
    ex.now_ns += 3_700_000_000_000; // more than an hour later, no trade since
    assert_eq!(
        ex.place(market(2, Side::Buy, Some(COIN), None)),
        Err(Reject::ReferenceStale)
    );
    ex.place(limit(2, Side::Buy, 30_000, 1)).unwrap();
    ex.ok(Command::SetReferencePrice {
        market: M,
        price: Amount(30_000 * DOLLAR),
    });
    ex.place(market(2, Side::Buy, Some(COIN / 100), None)).unwrap();
}

#[test]
fn self_trade_prevention_modes() {
    let mut ex = funded();
    ex.deposit(1, USD, 1_000_000 * DOLLAR);
    let maker = ex.place(limit(1, Side::Sell, 30_000, 10)).unwrap();
    // Newest (default): the incoming order is cancelled, the resting one stays.
    let t = ex.place(limit(1, Side::Buy, 30_000, 5)).unwrap();
    assert_eq!(t.status, OrderStatus::Cancelled(CancelReason::SelfTrade));
    assert!(ex.trades().is_empty());
    assert_eq!(
        ex.engine.trading().order(maker.id).unwrap().status,
        OrderStatus::Open
    );
    // Oldest: the resting one is cancelled, the incoming one rests.
    let t = ex
        .place(PlaceOrder {
            stp: Stp::CancelOldest,
            ..limit(1, Side::Buy, 30_000, 5)
        })
        .unwrap();
    assert_eq!(t.status, OrderStatus::Open);
    assert_eq!(
        ex.engine.trading().order(maker.id).unwrap().status,
        OrderStatus::Cancelled(CancelReason::SelfTrade)
    );
    // Both.
    let m2 = ex.place(limit(1, Side::Sell, 30_000, 10));
    assert_eq!(
        m2.unwrap().status,
        OrderStatus::Cancelled(CancelReason::SelfTrade)
    );
    ex.ok(Command::CancelAll {
        user: UserId(1),
        market: None,
    });
    let m3 = ex.place(limit(1, Side::Sell, 30_000, 10)).unwrap();
    let t = ex
        .place(PlaceOrder {
            stp: Stp::CancelBoth,
            ..limit(1, Side::Buy, 30_000, 5)
        })
        .unwrap();
    assert_eq!(t.status, OrderStatus::Cancelled(CancelReason::SelfTrade));
    assert_eq!(
        ex.engine.trading().order(m3.id).unwrap().status,
        OrderStatus::Cancelled(CancelReason::SelfTrade)
    );
    assert_eq!(ex.bal(1, BTC).1, 0);
    assert_eq!(ex.bal(1, USD).1, 0);
}

#[test]
fn client_order_ids_are_unique_per_account_and_findable() {
    let mut ex = funded();
    let c = ClientOrderId(0xfeed);
    let first = ex
        .place(PlaceOrder {
            client_id: Some(c),
            ..limit(2, Side::Buy, 29_000, 1)
        })
        .unwrap();
    assert_eq!(
        ex.place(PlaceOrder {
            client_id: Some(c),
            ..limit(2, Side::Buy, 29_500, 2)
        }),
        Err(Reject::DuplicateClientOrderId)
    );
    assert_eq!(
        ex.engine.trading().order_by_client_id(UserId(2), c),
        Some(first.id)
    );
    // Another account may use the same client id.
    ex.deposit(3, USD, 1_000 * DOLLAR);
    ex.place(PlaceOrder {
        client_id: Some(c),
        ..limit(3, Side::Buy, 29_000, 1)
    })
    .unwrap();
    // Cancel by client id; still findable, and still not reusable.
    match ex.ok(Command::CancelOrder {
        user: UserId(2),
        order: OrderRef::Client(c),
    }) {
        Reply::OrderCancelled(o) => assert_eq!(o.id, first.id),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ex.engine.trading().order_by_client_id(UserId(2), c),
        Some(first.id)
    );
    assert!(ex.engine.trading().order(first.id).is_some());
    assert_eq!(
        ex.place(PlaceOrder {
            client_id: Some(c),
            ..limit(2, Side::Buy, 29_000, 1)
        }),
        Err(Reject::DuplicateClientOrderId)
    );
    // Nobody cancels another's order.
    let other = ex.place(limit(3, Side::Buy, 29_000, 1)).unwrap();
    assert_eq!(
        ex.run(Command::CancelOrder {
            user: UserId(2),
            order: OrderRef::Id(other.id)
        }),
        Err(Reject::OrderNotFound)
    );
}

#[test]
fn operators_halt_switch_and_limit() {
    let mut ex = funded();
    let resting = ex.place(limit(2, Side::Buy, 29_000, 1)).unwrap();
    ex.ok(Command::SetMarketState {
        market: M,
        state: MarketState::CancelOnly,
    });
    assert_eq!(
        ex.place(limit(2, Side::Buy, 29_000, 1)),
        Err(Reject::MarketCancelOnly)
    );
    ex.ok(Command::SetMarketState {
        market: M,
        state: MarketState::Halted,
    });
    assert_eq!(
        ex.place(limit(2, Side::Buy, 29_000, 1)),
        Err(Reject::MarketHalted)
    );
    assert_eq!(
        ex.run(Command::CancelOrder {
            user: UserId(2),
            order: OrderRef::Id(resting.id)
        }),
        Err(Reject::MarketHalted)
    );
    ex.ok(Command::SetMarketState {
        market: M,
        state: MarketState::PostOnly,
    });
    assert_eq!(
        ex.place(limit(2, Side::Buy, 29_000, 1)),
        Err(Reject::MarketPostOnly)
    );
    ex.place(with_tif(limit(2, Side::Buy, 29_000, 1), TimeInForce::PostOnly))
        .unwrap();
    ex.ok(Command::SetMarketState {
        market: M,
        state: MarketState::Open,
    });
    // Market orders switched off, as Zaif did after its glitch.
    ex.ok(Command::SetOrderTypes {
        market: M,
        switches: OrderTypeSwitches {
            market: false,
            ..OrderTypeSwitches::ALL_ON
        },
    });
    assert_eq!(
        ex.place(market(2, Side::Buy, Some(COIN / 100), None)),
        Err(Reject::OrderTypeDisabled)
    );
    ex.place(limit(2, Side::Buy, 29_000, 1)).unwrap();
    // Asset trading switch.
    ex.ok(Command::SetAssetSwitches {
        asset: BTC,
        switches: kinko_core::AssetSwitches {
            deposits: true,
            withdrawals: true,
            trading: false,
        },
    });
    assert_eq!(
        ex.place(limit(2, Side::Buy, 29_000, 1)),
        Err(Reject::AssetTradingDisabled)
    );
    ex.ok(Command::SetAssetSwitches {
        asset: BTC,
        switches: kinko_core::AssetSwitches::ALL_ON,
    });
    // Open-order limit.
    let mut s = spec();
    s.symbol = "BTC-USD-SMALL".into();
    s.open_orders_per_account_max = 2;
    ex.ok(Command::DefineMarket(s));
    let small = MarketId(1);
    for _ in 0..2 {
        ex.place(PlaceOrder {
            market: small,
            ..limit(2, Side::Buy, 29_000, 1)
        })
        .unwrap();
    }
    assert_eq!(
        ex.place(PlaceOrder {
            market: small,
            ..limit(2, Side::Buy, 29_000, 1)
        }),
        Err(Reject::TooManyOpenOrders)
    );
    // IOC never rests, so it is not limited.
    ex.place(PlaceOrder {
        market: small,
        ..with_tif(limit(2, Side::Buy, 29_000, 1), TimeInForce::Ioc)
    })
    .unwrap();
    match ex.ok(Command::CancelAll {
        user: UserId(2),
        market: Some(small),
    }) {
        Reply::OrdersCancelled(ids) => assert_eq!(ids.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_busted_trade_is_reversed_through_correcting_transfers_once() {
    let mut ex = funded();
    ex.place(limit(1, Side::Sell, 30_000, 10)).unwrap();
    ex.place(limit(2, Side::Buy, 30_000, 10)).unwrap();
    let t = ex.trades()[0];
    let before_alice = ex.bal(1, USD);
    assert!(before_alice.0 > 0);
    assert_eq!(
        ex.run(Command::BustTrade {
            market: M,
            trade: t.id,
            requested_by: "".into(),
            reason: "fat finger".into()
        }),
        Err(Reject::ReasonRequired)
    );
    ex.ok(Command::BustTrade {
        market: M,
        trade: t.id,
        requested_by: "ops:alice".into(),
        reason: "erroneous price".into(),
    });
    assert!(ex.events.iter().any(|e| matches!(
        e,
        Event::Trading(TradingEvent::TradeBusted { requested_by, reason, .. })
            if requested_by == "ops:alice" && reason == "erroneous price"
    )));
    assert_eq!(ex.bal(1, USD), (0, 0));
    assert_eq!(ex.bal(1, BTC), ((10 * COIN) as i128, 0));
    assert_eq!(ex.bal(2, USD), ((1_000_000 * DOLLAR) as i128, 0));
    assert_eq!(ex.bal(2, BTC), (0, 0));
    assert_eq!(ex.fees(USD), 0);
    assert_eq!(
        ex.run(Command::BustTrade {
            market: M,
            trade: t.id,
            requested_by: "ops:alice".into(),
            reason: "again".into()
        }),
        Err(Reject::TradeAlreadyBusted)
    );
    // A bust that would overdraw (the buyer already moved the coins) is refused, atomically.
    ex.place(limit(1, Side::Sell, 30_000, 10)).unwrap();
    ex.place(limit(2, Side::Buy, 30_000, 10)).unwrap();
    let t2 = ex.trades()[0];
    ex.place(limit(2, Side::Sell, 30_000, 10)).unwrap();
    let before = ex.engine.ledger().accounts().to_vec();
    assert_eq!(
        ex.run(Command::BustTrade {
            market: M,
            trade: t2.id,
            requested_by: "ops:alice".into(),
            reason: "late".into()
        }),
        Err(Reject::FundsInsufficient)
    );
    assert_eq!(ex.engine.ledger().accounts(), &before[..]);
    // Engine-reserved transfer ids cannot be used by clients.
    assert_eq!(
        ex.run(Command::Transfers(vec![TransferRequest {
            id: TransferId(1 << 127),
            kind: TransferKind::Post {
                debit: AccountId(0),
                credit: AccountId(1),
                amount: Amount(1)
            },
            linked: false,
            code: 0,
            user_data: 0
        }])),
        Err(Reject::TransferIdReserved)
    );
}

#[test]
fn market_data_levels_ticker_and_candles() {
    let mut ex = funded();
    ex.place(limit(1, Side::Sell, 30_000, 10)).unwrap();
    ex.place(limit(1, Side::Sell, 30_000, 5)).unwrap();
    let lv = ex.levels();
    assert_eq!(lv, vec![(Side::Sell, Price(30_000), Qty(15), 2, 2)]);
    ex.place(limit(2, Side::Buy, 30_000, 12)).unwrap();
    let lv = ex.levels();
    assert_eq!(lv, vec![(Side::Sell, Price(30_000), Qty(3), 1, 3)]);
    let m = &ex.engine.trading().market(M).unwrap().meta;
    let book = &ex.engine.trading().market(M).unwrap().book;
    use kinko_core::book::OrderBook;
    let t = m.ticker(ex.now_ns, book.best_bid(), book.best_ask());
    assert_eq!(t.last, Some(Price(30_000)));
    assert_eq!(t.best_ask, Some(Price(30_000)));
    assert_eq!(t.volume_24h, 12);
    assert_eq!(t.trades_24h, 2);
    for g in kinko_core::market::CANDLE_GRANULARITIES_S {
        let c = m.candles(g).unwrap().candles.back().unwrap();
        assert_eq!(
            (c.open, c.close, c.volume, c.trades),
            (Price(30_000), Price(30_000), 12, 2)
        );
        assert_eq!(c.start_s % g, 0);
    }
    assert!(m.candles(7).is_none());
}

// ---- property tests ----

#[derive(Clone, Debug)]
enum Op {
    /// A stop order (loss for a sell, entry for a buy), stop-limit or stop-market, some good
    /// till a time.
    Stop {
        user: u64,
        buy: bool,
        stop_off: i64,
        limit_off: Option<i64>,
        lots: u128,
        gtt_s: Option<u64>,
    },
    /// A good-till-time limit order.
    Gtt {
        user: u64,
        buy: bool,
        off: i64,
        lots: u128,
        gtt_s: u64,
    },
    Limit {
        user: u64,
        buy: bool,
        off: i64,
        lots: u128,
        tif: u8,
        stp: u8,
    },
    Market {
        user: u64,
        buy: bool,
        lots: u128,
    },
    MarketFunds {
        user: u64,
        buy: bool,
        usd: u128,
    },
    Cancel {
        nth: usize,
    },
    CancelAll {
        user: u64,
    },
    Bust {
        nth: u64,
    },
    State(u8),
    Tier {
        user: u64,
        tier: u8,
    },
    Deposit {
        user: u64,
        btc: bool,
    },
    Wait,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..4, any::<bool>(), -30i64..30, 1u128..50, 0u8..4, 0u8..3)
            .prop_map(|(user, buy, off, lots, tif, stp)| Op::Limit { user, buy, off, lots, tif, stp }),
        2 => (0u64..4, any::<bool>(), 1u128..40).prop_map(|(user, buy, lots)| Op::Market { user, buy, lots }),
        1 => (0u64..4, any::<bool>(), 1u128..20_000).prop_map(|(user, buy, usd)| Op::MarketFunds { user, buy, usd }),
        3 => (0usize..100).prop_map(|nth| Op::Cancel { nth }),
        1 => (0u64..4).prop_map(|user| Op::CancelAll { user }),
        1 => (1u64..50).prop_map(|nth| Op::Bust { nth }),
        1 => (0u8..8).prop_map(Op::State),
        1 => (0u64..4, 0u8..3).prop_map(|(user, tier)| Op::Tier { user, tier }),
        1 => (0u64..4, any::<bool>()).prop_map(|(user, btc)| Op::Deposit { user, btc }),
        1 => Just(Op::Wait),
        3 => (0u64..4, any::<bool>(), -40i64..40, proptest::option::of(-60i64..60), 1u128..30, proptest::option::of(1u64..200))
            .prop_map(|(user, buy, stop_off, limit_off, lots, gtt_s)| Op::Stop { user, buy, stop_off, limit_off, lots, gtt_s }),
        2 => (0u64..4, any::<bool>(), -30i64..30, 1u128..50, 1u64..200)
            .prop_map(|(user, buy, off, lots, gtt_s)| Op::Gtt { user, buy, off, lots, gtt_s }),
    ]
}

fn run_ops(ops: &[Op]) -> Ex {
    let mut ex = Ex::new();
    for u in 0..4 {
        ex.deposit(u, BTC, 5 * COIN);
        ex.deposit(u, USD, 200_000 * DOLLAR);
    }
    let mut placed: Vec<OrderId> = Vec::new();
    for op in ops {
        let r = match op {
            Op::Stop {
                user,
                buy,
                stop_off,
                limit_off,
                lots,
                gtt_s,
            } => {
                let side = if *buy { Side::Buy } else { Side::Sell };
                let order = match limit_off {
                    Some(off) => limit(*user, side, (30_000i64 + off) as u128, *lots),
                    None => market(*user, side, Some(lots * COIN / 100), None),
                };
                ex.run(Command::PlaceConditionalOrder(
                    kinko_core::trading::ConditionalOrder {
                        order,
                        stop: Some(kinko_core::trading::StopTrigger {
                            direction: kinko_core::trading::StopDirection::for_side(side),
                            price: Amount((30_000i64 + stop_off) as u128 * DOLLAR),
                        }),
                        expiry: gtt_s.map(|s| kinko_core::trading::Expiry::AfterNs(s * 1_000_000_000)),
                    },
                ))
            }
            Op::Gtt {
                user,
                buy,
                off,
                lots,
                gtt_s,
            } => {
                let side = if *buy { Side::Buy } else { Side::Sell };
                ex.run(Command::PlaceConditionalOrder(
                    kinko_core::trading::ConditionalOrder {
                        order: limit(*user, side, (30_000i64 + off) as u128, *lots),
                        stop: None,
                        expiry: Some(kinko_core::trading::Expiry::AfterNs(gtt_s * 1_000_000_000)),
                    },
                ))
            }
            Op::Limit {
                user,
                buy,
                off,
                lots,
                tif,
                stp,
            } => {
                let side = if *buy { Side::Buy } else { Side::Sell };
                let price = (30_000i64 + off) as u128;
                let tif = [
                    TimeInForce::Gtc,
                    TimeInForce::Ioc,
                    TimeInForce::Fok,
                    TimeInForce::PostOnly,
                ][*tif as usize];
                let stp = [Stp::CancelNewest, Stp::CancelOldest, Stp::CancelBoth][*stp as usize];
                ex.run(Command::PlaceOrder(PlaceOrder {
                    stp,
                    ..with_tif(limit(*user, side, price, *lots), tif)
                }))
            }
            Op::Market { user, buy, lots } => {
                let side = if *buy { Side::Buy } else { Side::Sell };
                ex.run(Command::PlaceOrder(market(
                    *user,
                    side,
                    Some(lots * COIN / 100),
                    None,
                )))
            }
            Op::MarketFunds { user, buy, usd } => {
                let side = if *buy { Side::Buy } else { Side::Sell };
                ex.run(Command::PlaceOrder(market(*user, side, None, Some(usd * DOLLAR))))
            }
            Op::Cancel { nth } => {
                if placed.is_empty() {
                    continue;
                }
                let id = placed[nth % placed.len()];
                let user = ex.engine.trading().order(id).map_or(UserId(0), |o| o.user);
                ex.run(Command::CancelOrder {
                    user,
                    order: OrderRef::Id(id),
                })
            }
            Op::CancelAll { user } => ex.run(Command::CancelAll {
                user: UserId(*user),
                market: None,
            }),
            Op::Bust { nth } => ex.run(Command::BustTrade {
                market: M,
                trade: *nth,
                requested_by: "ops".into(),
                reason: "test".into(),
            }),
            Op::State(s) => {
                let state = match s {
                    0 => MarketState::Halted,
                    1 => MarketState::CancelOnly,
                    2 => MarketState::PostOnly,
                    _ => MarketState::Open,
                };
                ex.run(Command::SetMarketState { market: M, state })
            }
            Op::Tier { user, tier } => ex.run(Command::SetUserTier {
                user: UserId(*user),
                tier: *tier,
            }),
            Op::Deposit { user, btc } => {
                if *btc {
                    ex.deposit(*user, BTC, COIN);
                } else {
                    ex.deposit(*user, USD, 50_000 * DOLLAR);
                }
                continue;
            }
            Op::Wait => {
                ex.now_ns += 90_000_000_000;
                ex.run(Command::Tick)
            }
        };
        if let Ok(Reply::OrderPlaced(p)) = r {
            placed.push(p.order.id);
        }
        // The book's own view: held funds equal what open orders need (checked by the audit
        // after every command in `run`), and nobody's balance is negative.
        for a in ex.engine.ledger().accounts() {
            if let kinko_core::ledger::Owner::Customer(_) = a.owner {
                assert!(a.balance() >= 0 && a.available() <= a.balance() as u128);
            }
        }
    }
    ex
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_trading_keeps_invariants_and_replays_exactly(ops in proptest::collection::vec(op(), 1..150)) {
        let ex = run_ops(&ops);
        let live = ex.engine.state_hash();
        // Total of each asset over customers + fees equals what was deposited (trading moves,
        // never creates).
        prop_assert_eq!(replay(&ex.log).state_hash(), live);
        let mid = ex.log.len() / 2;
        let mut restored = Engine::from_snapshot_bytes(&replay(&ex.log[..mid]).snapshot_bytes()).unwrap();
        let mut ev = Vec::new();
        for (seq, ts, cmd) in &ex.log[mid..] {
            let _ = restored.apply(*seq, *ts, cmd, &mut ev);
        }
        prop_assert_eq!(restored.state_hash(), live);
    }
}

/// Per-side bands: with a passive band set, a limit order that would not trade on arrival may
/// rest far out on its passive side (a buy down to 20 % of the reference, a sell up to 5×),
/// while a buy is never priced above the band, a sell never below it, and an order that would
/// trade must be inside the band on both sides. A market without a passive band keeps the band
/// on both sides (journals from before replay unchanged).
#[test]
fn per_side_bands_let_passive_orders_rest_and_hold_aggressive_ones_to_the_band() {
    let mut ex = funded();
    let set = |floor, ceiling| Command::SetPassiveBand {
        market: M,
        band: PassiveBand {
            buy_floor_bps: floor,
            sell_ceiling_bps: ceiling,
        },
    };
    // No passive band yet: a buy at half the reference is refused, as it always was.
    assert_eq!(
        ex.place(limit(2, Side::Buy, 15_000, 1)).err(),
        Some(Reject::PriceOutsideBand)
    );
    // Passive bands narrower than the band, a zero floor or a runaway ceiling are refused.
    for (floor, ceiling) in [(0, 50_000), (9_001, 50_000), (2_000, 10_999), (2_000, 1_000_001)] {
        assert_eq!(
            ex.run(set(floor, ceiling)).err(),
            Some(Reject::MarketSpecInvalid),
            "{floor} {ceiling}"
        );
    }
    assert_eq!(
        ex.run(set(9_000, 11_000)).ok(),
        Some(Reply::MarketUpdated),
        "as wide as the band"
    );
    ex.ok(set(
        PassiveBand::DEFAULT.buy_floor_bps,
        PassiveBand::DEFAULT.sell_ceiling_bps,
    ));
    // Reference 30,000, band 27,000..33,000; a book around it.
    ex.place(limit(1, Side::Sell, 30_500, 10)).unwrap();
    ex.place(limit(2, Side::Buy, 29_500, 10)).unwrap();

    let open = Ok(OrderStatus::Open);
    let refused = Err(Reject::PriceOutsideBand);
    let cases: [(&str, PlaceOrder, Result<OrderStatus, Reject>); 10] = [
        (
            "passive buy at half the reference rests",
            limit(2, Side::Buy, 15_000, 1),
            open,
        ),
        (
            "passive buy at the floor (20 %) rests",
            limit(2, Side::Buy, 6_000, 1),
            open,
        ),
        (
            "passive buy below the floor",
            limit(2, Side::Buy, 5_999, 1),
            refused,
        ),
        (
            "passive post-only buy far below rests",
            with_tif(limit(2, Side::Buy, 10_000, 1), TimeInForce::PostOnly),
            open,
        ),
        ("buy above the band", limit(2, Side::Buy, 33_001, 1), refused),
        (
            "passive sell at twice the reference rests",
            limit(1, Side::Sell, 60_000, 1),
            open,
        ),
        (
            "passive sell at the ceiling (5×) rests",
            limit(1, Side::Sell, 150_000, 1),
            open,
        ),
        (
            "passive sell above the ceiling",
            limit(1, Side::Sell, 150_001, 1),
            refused,
        ),
        ("sell below the band", limit(1, Side::Sell, 26_999, 1), refused),
        (
            "sell at the band's low edge crosses and fills",
            limit(1, Side::Sell, 27_000, 1),
            Ok(OrderStatus::Filled),
        ),
    ];
    for (name, p, want) in cases {
        let book = |ex: &Ex| {
            (
                ex.engine.trading().open_orders(UserId(1)),
                ex.engine.trading().open_orders(UserId(2)),
            )
        };
        let before = (book(&ex), ex.bal(1, BTC), ex.bal(2, USD));
        let got = ex.place(p).map(|o| o.status);
        assert_eq!(got, want, "{name}");
        if got.is_err() {
            assert_eq!(
                (book(&ex), ex.bal(1, BTC), ex.bal(2, USD)),
                before,
                "{name}: a refused order changes nothing"
            );
        }
        for t in ex.trades() {
            assert!(
                (27_000..=33_000).contains(&(u128::from(t.price.0))),
                "{name}: traded at {:?}",
                t.price
            );
        }
    }

    // The reference moves up to 40,000 (band 36,000..44,000): the ask resting at 30,500 is now
    // below the band. A buy that would trade against it is aggressive and must be in the band;
    // the same buy below the ask does not trade and rests.
    ex.ok(Command::SetReferencePrice {
        market: M,
        price: Amount(40_000 * DOLLAR),
    });
    assert_eq!(
        ex.place(limit(2, Side::Buy, 31_000, 1)).err(),
        Some(Reject::PriceOutsideBand)
    );
    assert_eq!(
        ex.place(limit(2, Side::Buy, 30_000, 1)).map(|o| o.status),
        Ok(OrderStatus::Open)
    );
    assert!(ex.trades().is_empty());

    // Market orders keep the band's protection: a market sell fills the bids inside the band
    // (none now: 29,500 and below are under 36,000) and never reaches the far passive bids.
    let m = ex.place(market(1, Side::Sell, Some(COIN), None)).unwrap();
    assert_eq!(m.filled, Qty(0), "{m:?}");
    assert!(ex.trades().is_empty());
    // Back at 30,000: the market sell takes 29,500 (0.10) and 30,000 (0.01) and stops there,
    // above 27,000; the passive bids at 15,000, 10,000 and 6,000 stay.
    ex.ok(Command::SetReferencePrice {
        market: M,
        price: Amount(30_000 * DOLLAR),
    });
    ex.place(market(1, Side::Sell, Some(COIN), None)).unwrap();
    let prices: Vec<u64> = ex.trades().iter().map(|t| t.price.0).collect();
    assert!(
        !prices.is_empty() && prices.iter().all(|p| (27_000..=33_000).contains(p)),
        "{prices:?}"
    );
    assert!(ex
        .engine
        .trading()
        .open_orders(UserId(2))
        .iter()
        .any(|o| o.limit == Price(6_000)));

    // Replays exactly, from the start and from a snapshot in the middle.
    let live = ex.engine.state_hash();
    crate::assert_replays_to(&ex.log, live);
    assert_eq!(
        crate::restore_and_replay(&ex.log, ex.log.len() / 2).state_hash(),
        live
    );
}
