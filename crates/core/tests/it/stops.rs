//! Stop and good-till-time orders through the engine: a stop waits with its funds held until the
//! last trade price reaches it (loss: at or below, a sell; entry: at or above, a buy), then
//! enters the book through every pre-trade check in trigger order; a good-till-time order is
//! cancelled with reason `Expired` at the first command at or after its expiry. Every case
//! ends with the same state rebuilt from the journal and from a snapshot plus its tail.

use crate::assert_replays_to;
use crate::trading::{funded, limit, market, Ex, BTC, COIN, DOLLAR, M, USD};
use kinko_core::book::{CancelReason, OrderId, Price, Side, TimeInForce};
use kinko_core::engine::{Command, Event, Reply};
use kinko_core::market::MarketState;
use kinko_core::money::{Amount, UserId};
use kinko_core::reject::Reject;
use kinko_core::trading::{
    ConditionalOrder, Expiry, Order, OrderRef, OrderStatus, OrderType, PlaceOrder, StopDirection,
    StopTrigger, TradingEvent,
};

fn stop(p: PlaceOrder, direction: StopDirection, stop_usd: u128) -> Command {
    Command::PlaceConditionalOrder(ConditionalOrder {
        order: p,
        stop: Some(StopTrigger {
            direction,
            price: Amount(stop_usd * DOLLAR),
        }),
        expiry: None,
    })
}

/// A stop-limit sell (stop loss) or buy (stop entry) of `lots` hundredths of a BTC.
fn stop_limit(user: u64, side: Side, stop_usd: u128, limit_usd: u128, lots: u128) -> Command {
    stop(
        limit(user, side, limit_usd, lots),
        StopDirection::for_side(side),
        stop_usd,
    )
}

fn gtt(p: PlaceOrder, expiry: Expiry) -> Command {
    Command::PlaceConditionalOrder(ConditionalOrder {
        order: p,
        stop: None,
        expiry: Some(expiry),
    })
}

fn placed(r: Result<Reply, Reject>) -> Result<Order, Reject> {
    r.map(|r| match r {
        Reply::OrderPlaced(o) => o.order,
        other => panic!("{other:?}"),
    })
}

impl Ex {
    fn order(&self, id: OrderId) -> Order {
        *self.engine.trading().order(id).expect("the order is known")
    }
    /// The stops the last command triggered, in order.
    fn triggered(&self) -> Vec<OrderId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Trading(TradingEvent::StopTriggered { order, .. }) => Some(*order),
                _ => None,
            })
            .collect()
    }
    /// A trade of 0.01 BTC at `usd` between users 5 (buyer) and 6 (seller): moves the last price.
    fn print(&mut self, usd: u128) {
        self.ok(Command::PlaceOrder(limit(6, Side::Sell, usd, 1)));
        placed(self.run(Command::PlaceOrder(limit(5, Side::Buy, usd, 1)))).unwrap();
    }
}

/// Users 1 and 2 as in `funded`, 3 and 4 with both assets, 5 and 6 who print trades.
fn world() -> Ex {
    let mut ex = funded();
    for u in 3..=6 {
        ex.deposit(u, BTC, 10 * COIN);
        ex.deposit(u, USD, 1_000_000 * DOLLAR);
    }
    ex
}

/// What a buy of `lots` hundredths at `usd` holds: notional plus the highest fee (20 bps).
fn buy_hold(usd: u128, lots: u128) -> u128 {
    let n = usd * DOLLAR * lots / 100;
    n + n * 20 / 10_000
}

#[test]
fn a_stop_loss_triggers_at_or_below_its_price_and_an_entry_at_or_above() {
    let mut ex = world();
    // A bid for the stop loss to sell into once it triggers.
    ex.ok(Command::PlaceOrder(limit(4, Side::Buy, 29_400, 100)));
    let loss = placed(ex.run(stop_limit(1, Side::Sell, 29_500, 29_400, 50))).unwrap();
    assert_eq!(loss.status, OrderStatus::Pending);
    assert!(matches!(
        ex.events.last(),
        Some(Event::Trading(TradingEvent::StopAccepted { .. }))
    ));
    // Its base is held from placement.
    assert_eq!(ex.bal(1, BTC).1, 50 * COIN / 100);
    let entry = placed(ex.run(stop_limit(2, Side::Buy, 30_500, 30_600, 10))).unwrap();
    assert_eq!(ex.bal(2, USD).1, buy_hold(30_600, 10));
    // Trades above the loss stop and below the entry stop trigger nothing.
    ex.print(29_600);
    ex.print(30_400);
    assert!(ex.triggered().is_empty());
    assert_eq!(ex.order(loss.id).status, OrderStatus::Pending);
    assert_eq!(ex.order(entry.id).status, OrderStatus::Pending);
    // At the entry stop: the buy enters the book (nothing to buy below 30,600: it rests).
    ex.ok(Command::PlaceOrder(limit(6, Side::Sell, 30_700, 1)));
    ex.print(30_500);
    assert_eq!(ex.triggered(), vec![entry.id]);
    let e = ex.order(entry.id);
    assert_eq!((e.status, e.limit), (OrderStatus::Open, Price(30_600)));
    assert_eq!(
        ex.bal(2, USD).1,
        buy_hold(30_600, 10),
        "the same hold, placed again"
    );
    ex.ok(Command::CancelOrder {
        user: UserId(2),
        order: OrderRef::Id(entry.id),
    });
    // Below the loss stop: the sell triggers and fills against the 29,400 bid.
    ex.ok(Command::PlaceOrder(limit(5, Side::Buy, 29_450, 1)));
    placed(ex.run(Command::PlaceOrder(limit(6, Side::Sell, 29_450, 1)))).unwrap();
    assert_eq!(ex.triggered(), vec![loss.id]);
    let l = ex.order(loss.id);
    assert_eq!(l.status, OrderStatus::Filled);
    assert_eq!(l.stop.map(|s| s.direction), Some(StopDirection::Loss));
    assert_eq!(ex.bal(1, BTC), ((10 * COIN - 50 * COIN / 100) as i128, 0));
    assert_replays_to(&ex.log, ex.engine.state_hash());
}

#[test]
fn a_stop_on_the_wrong_side_is_refused_and_a_move_the_other_way_triggers_nothing() {
    let mut ex = world();
    let wrong = [
        stop(limit(1, Side::Sell, 29_000, 10), StopDirection::Entry, 31_000),
        stop(limit(2, Side::Buy, 31_000, 10), StopDirection::Loss, 29_000),
        stop(limit(1, Side::Sell, 29_000, 10), StopDirection::Loss, 0),
        // Off tick: the tick is one dollar.
        Command::PlaceConditionalOrder(ConditionalOrder {
            order: limit(1, Side::Sell, 29_000, 10),
            stop: Some(StopTrigger {
                direction: StopDirection::Loss,
                price: Amount(29_000 * DOLLAR + 1),
            }),
            expiry: None,
        }),
    ];
    for c in wrong {
        assert_eq!(ex.run(c), Err(Reject::StopInvalid));
    }
    assert_eq!(ex.bal(1, BTC).1, 0, "a refused stop holds nothing");
    let loss = placed(ex.run(stop_limit(1, Side::Sell, 29_500, 29_400, 10))).unwrap();
    let entry = placed(ex.run(stop_limit(2, Side::Buy, 30_500, 30_600, 10))).unwrap();
    // Up for the loss stop, down for the entry stop: neither triggers.
    ex.print(30_000);
    ex.print(29_900);
    ex.print(30_100);
    for id in [loss.id, entry.id] {
        assert_eq!(ex.order(id).status, OrderStatus::Pending);
    }
    assert_replays_to(&ex.log, ex.engine.state_hash());
}

#[test]
fn equal_stops_trigger_in_placement_order_and_a_lower_price_after_a_higher_one() {
    let mut ex = world();
    // Stop-market sells: they sell into the bids below once triggered.
    ex.ok(Command::PlaceOrder(limit(4, Side::Buy, 29_000, 300)));
    let sell = |user: u64, stop_usd: u128| {
        stop(
            market(user, Side::Sell, Some(10 * COIN / 100), None),
            StopDirection::Loss,
            stop_usd,
        )
    };
    let a = placed(ex.run(sell(3, 29_800))).unwrap();
    let b = placed(ex.run(sell(1, 29_900))).unwrap();
    let c = placed(ex.run(sell(3, 29_800))).unwrap();
    // One trade at 29,700 reaches all three: the higher stop first, then equal ones by placement.
    ex.print(29_700);
    assert_eq!(ex.triggered(), vec![b.id, a.id, c.id]);
    for id in [a.id, b.id, c.id] {
        let o = ex.order(id);
        assert_eq!(o.status, OrderStatus::Filled, "{o:?}");
        assert_eq!(o.filled_notional, 29_000 * DOLLAR * 10 / 100);
    }
    assert_replays_to(&ex.log, ex.engine.state_hash());
}

#[test]
fn a_cascade_of_triggers_runs_in_one_command_in_trigger_order_and_ends() {
    let mut ex = world();
    // Bids stepping down: each stop's sale prints a lower price that reaches the next stop.
    for usd in [29_800, 29_600, 29_400] {
        ex.ok(Command::PlaceOrder(limit(4, Side::Buy, usd, 10)));
    }
    let sell = |user: u64, stop_usd: u128| {
        stop(
            market(user, Side::Sell, Some(10 * COIN / 100), None),
            StopDirection::Loss,
            stop_usd,
        )
    };
    let a = placed(ex.run(sell(1, 29_850))).unwrap();
    let b = placed(ex.run(sell(3, 29_800))).unwrap();
    let c = placed(ex.run(sell(3, 29_600))).unwrap();
    let untouched = placed(ex.run(sell(1, 20_000))).unwrap();
    // The print at 29,850 reaches a; a sells at 29,800, which reaches b; b sells at 29,600,
    // which reaches c; c sells at 29,400, which reaches nothing more: the cascade ends.
    ex.print(29_850);
    assert_eq!(ex.triggered(), vec![a.id, b.id, c.id]);
    let prices: Vec<u64> = ex.trades().iter().map(|t| t.price.0).collect();
    assert_eq!(prices, vec![29_850, 29_800, 29_600, 29_400]);
    for id in [a.id, b.id, c.id] {
        assert_eq!(ex.order(id).status, OrderStatus::Filled);
    }
    assert_eq!(ex.order(untouched.id).status, OrderStatus::Pending);
    assert_replays_to(&ex.log, ex.engine.state_hash());
}

#[test]
fn a_triggered_order_the_band_refuses_is_cancelled_and_its_hold_released() {
    let mut ex = world();
    // A stop loss whose limit lies far below the band around the price it triggers at.
    let o = placed(ex.run(stop_limit(1, Side::Sell, 29_500, 20_000, 30))).unwrap();
    assert_eq!(ex.bal(1, BTC).1, 30 * COIN / 100);
    let buy = placed(ex.run(stop_limit(2, Side::Buy, 29_000, 40_000, 1))).unwrap();
    assert_eq!(ex.bal(2, USD).1, buy_hold(40_000, 1));
    ex.print(29_500);
    assert_eq!(ex.triggered(), vec![o.id, buy.id]);
    assert_eq!(
        ex.order(o.id).status,
        OrderStatus::Cancelled(CancelReason::StopRefused(Reject::PriceOutsideBand))
    );
    assert_eq!(
        ex.order(buy.id).status,
        OrderStatus::Cancelled(CancelReason::StopRefused(Reject::PriceOutsideBand))
    );
    assert_eq!(ex.bal(1, BTC), (10 * COIN as i128, 0));
    assert_eq!(ex.bal(2, USD), ((1_000_000 * DOLLAR) as i128, 0));
    assert_replays_to(&ex.log, ex.engine.state_hash());
}

#[test]
fn stops_cancel_before_and_after_triggering_and_with_cancel_all() {
    let mut ex = world();
    let before = placed(ex.run(stop_limit(1, Side::Sell, 29_500, 29_400, 10))).unwrap();
    let after = placed(ex.run(stop_limit(1, Side::Sell, 29_800, 29_700, 10))).unwrap();
    let all_a = placed(ex.run(stop_limit(1, Side::Sell, 28_000, 27_900, 10))).unwrap();
    let all_b = placed(ex.run(stop_limit(1, Side::Sell, 27_500, 27_400, 10))).unwrap();
    assert_eq!(ex.bal(1, BTC).1, 40 * COIN / 100);
    let c = match ex.ok(Command::CancelOrder {
        user: UserId(1),
        order: OrderRef::Id(before.id),
    }) {
        Reply::OrderCancelled(o) => o,
        other => panic!("{other:?}"),
    };
    assert_eq!(c.status, OrderStatus::Cancelled(CancelReason::User));
    assert_eq!(ex.bal(1, BTC).1, 30 * COIN / 100);
    // Triggered, the stop-limit rests in the book at 29,700 (no bid there) and cancels as usual.
    ex.print(29_750);
    assert_eq!(ex.triggered(), vec![after.id]);
    assert_eq!(ex.order(after.id).status, OrderStatus::Open);
    ex.ok(Command::CancelOrder {
        user: UserId(1),
        order: OrderRef::Id(after.id),
    });
    assert_eq!(ex.bal(1, BTC).1, 20 * COIN / 100);
    // Cancel-all takes the untriggered ones too.
    match ex.ok(Command::CancelAll {
        user: UserId(1),
        market: None,
    }) {
        Reply::OrdersCancelled(ids) => assert_eq!(ids, vec![all_a.id, all_b.id]),
        other => panic!("{other:?}"),
    }
    assert_eq!(ex.bal(1, BTC), (10 * COIN as i128, 0));
    // A cancelled stop never triggers.
    ex.print(27_000);
    assert!(ex.triggered().is_empty());
    assert_replays_to(&ex.log, ex.engine.state_hash());
}

#[test]
fn stops_count_toward_the_open_order_limit_and_obey_the_market_state() {
    let mut ex = world();
    // The limit is 50 open orders per account and market.
    for i in 0..50u128 {
        ex.run(stop_limit(3, Side::Sell, 20_000 + i, 19_000, 1)).unwrap();
    }
    assert_eq!(
        ex.run(stop_limit(3, Side::Sell, 21_000, 19_000, 1)),
        Err(Reject::TooManyOpenOrders)
    );
    assert_eq!(
        ex.run(Command::PlaceOrder(limit(3, Side::Sell, 31_000, 1))),
        Err(Reject::TooManyOpenOrders)
    );
    ex.ok(Command::SetMarketState {
        market: M,
        state: MarketState::Halted,
    });
    assert_eq!(
        ex.run(stop_limit(1, Side::Sell, 29_500, 29_400, 10)),
        Err(Reject::MarketHalted)
    );
    let first = ex.engine.trading().open_orders(UserId(3))[0].id;
    assert_eq!(
        ex.run(Command::CancelOrder {
            user: UserId(3),
            order: OrderRef::Id(first),
        }),
        Err(Reject::MarketHalted)
    );
    ex.ok(Command::SetMarketState {
        market: M,
        state: MarketState::CancelOnly,
    });
    assert_eq!(
        ex.run(stop_limit(1, Side::Sell, 29_500, 29_400, 10)),
        Err(Reject::MarketCancelOnly)
    );
    ex.ok(Command::CancelOrder {
        user: UserId(3),
        order: OrderRef::Id(first),
    });
    assert_replays_to(&ex.log, ex.engine.state_hash());
}

#[test]
fn stop_market_orders_hold_from_placement_and_release_exactly() {
    let mut ex = world();
    // A stop-market buy by size holds its size at the band's top edge around the stop price
    // (31,000 + 10 % = 34,100) plus the taker fee (20 bps).
    let by_size = placed(ex.run(stop(
        market(2, Side::Buy, Some(10 * COIN / 100), None),
        StopDirection::Entry,
        31_000,
    )))
    .unwrap();
    let n = 34_100 * DOLLAR * 10 / 100;
    assert_eq!(ex.bal(2, USD).1, n + n * 20 / 10_000);
    // By funds: the funds.
    let by_funds = placed(ex.run(stop(
        market(3, Side::Buy, None, Some(5_000 * DOLLAR)),
        StopDirection::Entry,
        31_000,
    )))
    .unwrap();
    assert_eq!(ex.bal(3, USD).1, 5_000 * DOLLAR);
    // A sell by funds holds the lots the funds need at the band's low edge around the
    // reference or the stop, whichever is lower (29,000 − 10 % = 26,100): ⌈3,000 / 26,100⌉ lots.
    let sell_funds = placed(ex.run(stop(
        market(4, Side::Sell, None, Some(3_000 * DOLLAR)),
        StopDirection::Loss,
        29_000,
    )))
    .unwrap();
    let lots = (3_000u128 * 100).div_ceil(26_100);
    assert_eq!(ex.bal(4, BTC).1, lots * COIN / 100);
    // Asks for the buys to take once triggered.
    ex.ok(Command::PlaceOrder(limit(1, Side::Sell, 31_100, 50)));
    ex.print(31_000);
    assert_eq!(ex.triggered(), vec![by_size.id, by_funds.id]);
    for id in [by_size.id, by_funds.id] {
        assert_eq!(ex.order(id).status, OrderStatus::Filled, "{:?}", ex.order(id));
    }
    let bought = 31_100 * DOLLAR * 10 / 100;
    assert_eq!(
        ex.bal(2, USD),
        ((1_000_000 * DOLLAR - bought - bought * 20 / 10_000) as i128, 0)
    );
    assert_eq!(ex.bal(3, USD).1, 0);
    ex.ok(Command::CancelOrder {
        user: UserId(4),
        order: OrderRef::Id(sell_funds.id),
    });
    assert_eq!(ex.bal(4, BTC), (10 * COIN as i128, 0));
    assert_replays_to(&ex.log, ex.engine.state_hash());
}

#[test]
fn good_till_time_orders_expire_at_the_tick_and_replay_identically() {
    let mut ex = world();
    let minute = 60_000_000_000u64;
    let o = placed(ex.run(gtt(limit(2, Side::Buy, 29_000, 10), Expiry::AfterNs(minute)))).unwrap();
    let expires = o.expires_ns.unwrap();
    assert_eq!(expires, ex.now_ns + minute);
    assert_eq!(o.status, OrderStatus::Open);
    assert_eq!(ex.engine.next_deadline_ns(), Some(expires));
    // A good-till-time stop: it expires while pending.
    let s = placed(ex.run(Command::PlaceConditionalOrder(ConditionalOrder {
        order: limit(1, Side::Sell, 28_900, 10),
        stop: Some(StopTrigger {
            direction: StopDirection::Loss,
            price: Amount(29_000 * DOLLAR),
        }),
        expiry: Some(Expiry::AtNs(expires + 1)),
    })))
    .unwrap();
    // An expiry that is not in the future, or on an order that does not rest, is refused.
    let now = ex.now_ns;
    assert_eq!(
        ex.run(gtt(limit(2, Side::Buy, 29_000, 10), Expiry::AtNs(now))),
        Err(Reject::ExpiryInvalid)
    );
    assert_eq!(
        ex.run(gtt(
            crate::trading::with_tif(limit(2, Side::Buy, 29_000, 10), TimeInForce::Ioc),
            Expiry::AfterNs(minute)
        )),
        Err(Reject::ExpiryInvalid)
    );
    assert_eq!(
        ex.run(gtt(
            market(2, Side::Buy, Some(COIN / 100), None),
            Expiry::AfterNs(minute)
        )),
        Err(Reject::ExpiryInvalid)
    );
    // Just before: still open.
    ex.now_ns = expires - 2_000_000;
    ex.ok(Command::Tick);
    assert_eq!(ex.order(o.id).status, OrderStatus::Open);
    // The tick at the expiry cancels it (the sequencer sends one at `next_deadline_ns`).
    ex.now_ns = expires - 1_000_000;
    ex.ok(Command::Tick);
    assert!(ex.events.iter().any(|e| matches!(
        e,
        Event::Trading(TradingEvent::OrderExpired { order, .. }) if *order == o.id
    )));
    assert_eq!(
        ex.order(o.id).status,
        OrderStatus::Cancelled(CancelReason::Expired)
    );
    assert_eq!(ex.bal(2, USD), ((1_000_000 * DOLLAR) as i128, 0));
    assert_eq!(ex.order(s.id).status, OrderStatus::Pending);
    ex.ok(Command::Tick);
    assert_eq!(
        ex.order(s.id).status,
        OrderStatus::Cancelled(CancelReason::Expired)
    );
    assert_eq!(ex.bal(1, BTC), (10 * COIN as i128, 0));
    assert_eq!(ex.engine.next_deadline_ns(), None);
    // A filled good-till-time order leaves nothing to expire.
    let f = placed(ex.run(gtt(limit(3, Side::Sell, 30_000, 10), Expiry::AfterNs(minute)))).unwrap();
    ex.ok(Command::PlaceOrder(limit(4, Side::Buy, 30_000, 10)));
    assert_eq!(ex.order(f.id).status, OrderStatus::Filled);
    assert_eq!(ex.engine.next_deadline_ns(), None);
    assert_replays_to(&ex.log, ex.engine.state_hash());
}

#[test]
fn a_stop_keeps_its_client_id_and_a_reply_describes_it() {
    let mut ex = world();
    let mut p = limit(1, Side::Sell, 29_400, 10);
    p.client_id = Some(kinko_core::trading::ClientOrderId(7));
    let o = placed(ex.run(stop(p, StopDirection::Loss, 29_500))).unwrap();
    assert!(matches!(o.order_type, OrderType::Limit { .. }));
    assert_eq!(
        ex.engine
            .trading()
            .order_by_client_id(UserId(1), kinko_core::trading::ClientOrderId(7)),
        Some(o.id)
    );
    assert_eq!(
        ex.run(stop(p, StopDirection::Loss, 29_500)),
        Err(Reject::DuplicateClientOrderId)
    );
    ex.print(29_500);
    assert_eq!(ex.triggered(), vec![o.id]);
    ex.ok(Command::CancelOrder {
        user: UserId(1),
        order: OrderRef::Client(kinko_core::trading::ClientOrderId(7)),
    });
    assert_replays_to(&ex.log, ex.engine.state_hash());
}
