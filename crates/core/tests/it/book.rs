//! Order books: a table of scenarios run against every implementation, a property test that the
//! fast book emits exactly the reference book's events on random command streams, snapshot
//! restore, and the LOBWKLD1 oracle (the end state lobgen's reference engine expects).

#[path = "book_workload.rs"]
mod workload;

use kinko_core::book::{
    BookEvent, CancelReason, FastBook, NewOrder, OrderBook, OrderId, OrderView, OwnerId, Price, Qty, RefBook,
    Side, Stp, TimeInForce,
};
use proptest::prelude::*;

use Side::{Buy, Sell};
use TimeInForce::{Fok, Gtc, Ioc, PostOnly};

/// Every implementation, fresh. The narrow window makes the fast book use its out-of-window
/// levels and re-centring on ordinary prices.
fn books() -> Vec<(&'static str, Box<dyn OrderBook>)> {
    vec![
        ("ref", Box::new(RefBook::new())),
        ("fast", Box::new(FastBook::new())),
        ("fast-narrow", Box::new(FastBook::with_window(64))),
    ]
}

// ---- shorthands ----

fn order(id: u64, owner: u32, side: Side, limit: Option<u64>, qty: u64, tif: TimeInForce) -> NewOrder {
    NewOrder {
        id: OrderId(id),
        owner: OwnerId(owner),
        side,
        limit: limit.map(Price),
        qty: Qty(qty),
        quote_budget: None,
        tif,
        stp: Stp::CancelNewest,
    }
}

/// A GTC limit order whose owner is its id (so no self-trade prevention).
fn gtc(id: u64, side: Side, price: u64, qty: u64) -> Cmd {
    Cmd::Submit(order(id, id as u32, side, Some(price), qty, Gtc))
}

fn with(id: u64, side: Side, price: u64, qty: u64, tif: TimeInForce) -> Cmd {
    Cmd::Submit(order(id, id as u32, side, Some(price), qty, tif))
}

fn market(id: u64, side: Side, qty: u64) -> Cmd {
    Cmd::Submit(order(id, id as u32, side, None, qty, Ioc))
}

fn by_quote(id: u64, side: Side, qty: u64, budget: u128, tif: TimeInForce, limit: Option<u64>) -> Cmd {
    Cmd::Submit(NewOrder {
        quote_budget: Some(budget),
        ..order(id, id as u32, side, limit, qty, tif)
    })
}

/// An order of `owner` with self-trade prevention mode `stp`.
fn owned(id: u64, owner: u32, side: Side, price: u64, qty: u64, tif: TimeInForce, stp: Stp) -> Cmd {
    Cmd::Submit(NewOrder {
        stp,
        ..order(id, owner, side, Some(price), qty, tif)
    })
}

fn fill(maker: u64, taker: u64, taker_side: Side, price: u64, qty: u64, maker_remaining: u64) -> BookEvent {
    fill_o(
        maker,
        maker as u32,
        taker,
        taker as u32,
        taker_side,
        price,
        qty,
        maker_remaining,
    )
}

#[allow(clippy::too_many_arguments)]
fn fill_o(
    maker: u64,
    maker_owner: u32,
    taker: u64,
    taker_owner: u32,
    taker_side: Side,
    price: u64,
    qty: u64,
    maker_remaining: u64,
) -> BookEvent {
    BookEvent::Fill {
        maker: OrderId(maker),
        maker_owner: OwnerId(maker_owner),
        taker: OrderId(taker),
        taker_owner: OwnerId(taker_owner),
        taker_side,
        price: Price(price),
        qty: Qty(qty),
        maker_remaining: Qty(maker_remaining),
    }
}

fn rested(id: u64, side: Side, price: u64, qty: u64) -> BookEvent {
    BookEvent::Rested {
        id: OrderId(id),
        side,
        price: Price(price),
        qty: Qty(qty),
    }
}

fn cxl(id: u64, side: Side, price: Option<u64>, remaining: u64, reason: CancelReason) -> BookEvent {
    BookEvent::Cancelled {
        id: OrderId(id),
        side,
        price: price.map(Price),
        remaining: Qty(remaining),
        reason,
    }
}

#[derive(Clone, Copy, Debug)]
enum Cmd {
    Submit(NewOrder),
    Cancel(u64),
}

/// Apply a command; the events it produced (and for a cancel, also whether it found the order).
fn step(book: &mut dyn OrderBook, cmd: &Cmd) -> Vec<BookEvent> {
    let mut out = Vec::new();
    match cmd {
        Cmd::Submit(o) => book.submit(o, &mut out),
        Cmd::Cancel(id) => {
            let found = book.cancel(OrderId(*id), &mut out);
            assert_eq!(found, !out.is_empty(), "cancel result and events disagree");
        }
    }
    out
}

/// Resting orders as (id, price, qty), in priority order (bids, then asks).
fn resting(book: &dyn OrderBook) -> Vec<(u64, u64, u64)> {
    book.orders()
        .iter()
        .map(|o| (o.id.0, o.price.0, o.qty.0))
        .collect()
}

struct Case {
    name: &'static str,
    /// Each command with the events it must produce.
    steps: Vec<(Cmd, Vec<BookEvent>)>,
    /// `orders()` at the end.
    end: Vec<(u64, u64, u64)>,
}

fn case(name: &'static str, steps: Vec<(Cmd, Vec<BookEvent>)>, end: Vec<(u64, u64, u64)>) -> Case {
    Case { name, steps, end }
}

/// Steps that rest orders without trading.
fn setup(cmds: Vec<Cmd>) -> Vec<(Cmd, Vec<BookEvent>)> {
    cmds.into_iter()
        .map(|c| {
            let Cmd::Submit(o) = c else {
                panic!("setup rests orders")
            };
            let limit = o.limit.expect("setup orders have a limit");
            (c, vec![rested(o.id.0, o.side, limit.0, o.qty.0)])
        })
        .collect()
}

fn cases() -> Vec<Case> {
    use CancelReason::*;
    let chain = |a: Vec<(Cmd, Vec<BookEvent>)>, b: Vec<(Cmd, Vec<BookEvent>)>| [a, b].concat();
    vec![
        case(
            "fifo within a level, partial fill of the second maker",
            chain(
                setup(vec![gtc(1, Buy, 100, 5), gtc(2, Buy, 100, 3), gtc(3, Buy, 99, 4)]),
                vec![(
                    gtc(4, Sell, 100, 6),
                    vec![fill(1, 4, Sell, 100, 5, 0), fill(2, 4, Sell, 100, 1, 2)],
                )],
            ),
            vec![(2, 100, 2), (3, 99, 4)],
        ),
        case(
            "a taker walks several levels at the makers' prices and rests the remainder",
            chain(
                setup(vec![
                    gtc(1, Sell, 101, 2),
                    gtc(2, Sell, 102, 2),
                    gtc(3, Sell, 103, 2),
                ]),
                vec![(
                    gtc(4, Buy, 102, 5),
                    vec![
                        fill(1, 4, Buy, 101, 2, 0),
                        fill(2, 4, Buy, 102, 2, 0),
                        rested(4, Buy, 102, 1),
                    ],
                )],
            ),
            vec![(4, 102, 1), (3, 103, 2)],
        ),
        case(
            "a limit that does not reach the best price rests",
            chain(
                setup(vec![gtc(1, Sell, 102, 2)]),
                vec![(gtc(2, Buy, 101, 5), vec![rested(2, Buy, 101, 5)])],
            ),
            vec![(2, 101, 5), (1, 102, 2)],
        ),
        case(
            "IOC: partial fill, remainder cancelled",
            chain(
                setup(vec![gtc(1, Sell, 100, 2), gtc(2, Sell, 101, 2)]),
                vec![(
                    with(3, Buy, 100, 5, Ioc),
                    vec![fill(1, 3, Buy, 100, 2, 0), cxl(3, Buy, Some(100), 3, Unfilled)],
                )],
            ),
            vec![(2, 101, 2)],
        ),
        case(
            "IOC that matches nothing is still cancelled",
            chain(
                setup(vec![gtc(1, Sell, 100, 2)]),
                vec![(with(2, Buy, 99, 5, Ioc), vec![cxl(2, Buy, Some(99), 5, Unfilled)])],
            ),
            vec![(1, 100, 2)],
        ),
        case(
            "market by qty walks levels; the unfilled rest is cancelled",
            chain(
                setup(vec![gtc(1, Sell, 100, 2), gtc(2, Sell, 105, 2)]),
                vec![
                    (
                        market(3, Buy, 3),
                        vec![fill(1, 3, Buy, 100, 2, 0), fill(2, 3, Buy, 105, 1, 1)],
                    ),
                    (
                        market(4, Buy, 3),
                        vec![fill(2, 4, Buy, 105, 1, 0), cxl(4, Buy, None, 2, Unfilled)],
                    ),
                    (market(5, Sell, 3), vec![cxl(5, Sell, None, 3, Unfilled)]),
                ],
            ),
            vec![],
        ),
        case(
            "market buy by quote budget: whole lots that fit, then stop",
            chain(
                setup(vec![gtc(1, Sell, 100, 2), gtc(2, Sell, 101, 5)]),
                vec![(
                    by_quote(3, Buy, u64::MAX, 350, Ioc, None),
                    vec![
                        fill(1, 3, Buy, 100, 2, 0),
                        fill(2, 3, Buy, 101, 1, 4),
                        cxl(3, Buy, None, u64::MAX - 3, Unfilled),
                    ],
                )],
            ),
            vec![(2, 101, 4)],
        ),
        case(
            "market sell by quote budget",
            chain(
                setup(vec![gtc(1, Buy, 100, 5)]),
                vec![(
                    by_quote(2, Sell, 10, 250, Ioc, None),
                    vec![fill(1, 2, Sell, 100, 2, 3), cxl(2, Sell, None, 8, Unfilled)],
                )],
            ),
            vec![(1, 100, 3)],
        ),
        case(
            "a budget exactly spent with qty filled ends cleanly",
            chain(
                setup(vec![gtc(1, Sell, 100, 5)]),
                vec![(
                    by_quote(2, Buy, 3, 300, Ioc, None),
                    vec![fill(1, 2, Buy, 100, 3, 2)],
                )],
            ),
            vec![(1, 100, 2)],
        ),
        case(
            "a GTC stopped by its budget does not rest; one stopped by its limit does",
            chain(
                setup(vec![gtc(1, Sell, 100, 5), gtc(2, Sell, 110, 5)]),
                vec![
                    (
                        by_quote(3, Buy, 4, 250, Gtc, Some(100)),
                        vec![fill(1, 3, Buy, 100, 2, 3), cxl(3, Buy, Some(100), 2, Unfilled)],
                    ),
                    (
                        by_quote(4, Buy, 4, 10_000, Gtc, Some(105)),
                        vec![fill(1, 4, Buy, 100, 3, 0), rested(4, Buy, 105, 1)],
                    ),
                ],
            ),
            vec![(4, 105, 1), (2, 110, 5)],
        ),
        case(
            "FOK fills completely across levels",
            chain(
                setup(vec![gtc(1, Sell, 100, 2), gtc(2, Sell, 101, 2)]),
                vec![(
                    with(3, Buy, 101, 3, Fok),
                    vec![fill(1, 3, Buy, 100, 2, 0), fill(2, 3, Buy, 101, 1, 1)],
                )],
            ),
            vec![(2, 101, 1)],
        ),
        case(
            "FOK that cannot fill within its limit does nothing",
            chain(
                setup(vec![gtc(1, Sell, 100, 2), gtc(2, Sell, 101, 2)]),
                vec![
                    (
                        with(3, Buy, 100, 3, Fok),
                        vec![cxl(3, Buy, Some(100), 3, FokUnfillable)],
                    ),
                    (
                        with(4, Buy, 200, 5, Fok),
                        vec![cxl(4, Buy, Some(200), 5, FokUnfillable)],
                    ),
                    (
                        with(5, Sell, 1, 1, Fok),
                        vec![cxl(5, Sell, Some(1), 1, FokUnfillable)],
                    ),
                ],
            ),
            vec![(1, 100, 2), (2, 101, 2)],
        ),
        case(
            "FOK market by quote: the budget counts",
            chain(
                setup(vec![gtc(1, Sell, 100, 5)]),
                vec![
                    (
                        by_quote(2, Buy, 3, 299, Fok, None),
                        vec![cxl(2, Buy, None, 3, FokUnfillable)],
                    ),
                    (
                        by_quote(3, Buy, 3, 300, Fok, None),
                        vec![fill(1, 3, Buy, 100, 3, 2)],
                    ),
                ],
            ),
            vec![(1, 100, 2)],
        ),
        case(
            "FOK with CancelNewest: liquidity behind an own order does not count",
            chain(
                setup(vec![
                    owned(1, 7, Sell, 100, 2, Gtc, Stp::CancelNewest),
                    owned(2, 8, Sell, 100, 2, Gtc, Stp::CancelNewest),
                    owned(3, 8, Sell, 100, 5, Gtc, Stp::CancelNewest),
                ]),
                vec![
                    (
                        owned(4, 8, Buy, 100, 3, Fok, Stp::CancelNewest),
                        vec![cxl(4, Buy, Some(100), 3, FokUnfillable)],
                    ),
                    (
                        owned(5, 8, Buy, 100, 2, Fok, Stp::CancelBoth),
                        vec![fill_o(1, 7, 5, 8, Buy, 100, 2, 0)],
                    ),
                ],
            ),
            vec![(2, 100, 2), (3, 100, 5)],
        ),
        case(
            "FOK with CancelOldest skips own orders and cancels the ones it passes",
            chain(
                setup(vec![
                    owned(1, 7, Sell, 100, 2, Gtc, Stp::CancelNewest),
                    owned(2, 8, Sell, 100, 2, Gtc, Stp::CancelNewest),
                    owned(3, 9, Sell, 101, 5, Gtc, Stp::CancelNewest),
                ]),
                vec![
                    (
                        owned(4, 8, Buy, 101, 8, Fok, Stp::CancelOldest),
                        vec![cxl(4, Buy, Some(101), 8, FokUnfillable)],
                    ),
                    (
                        owned(5, 8, Buy, 101, 4, Fok, Stp::CancelOldest),
                        vec![
                            fill_o(1, 7, 5, 8, Buy, 100, 2, 0),
                            cxl(2, Sell, Some(100), 2, SelfTrade),
                            fill_o(3, 9, 5, 8, Buy, 101, 2, 3),
                        ],
                    ),
                ],
            ),
            vec![(3, 101, 3)],
        ),
        case(
            "post-only rests when it does not cross, is cancelled when it would",
            chain(
                setup(vec![gtc(1, Sell, 100, 2), gtc(2, Buy, 98, 2)]),
                vec![
                    (with(3, Buy, 99, 1, PostOnly), vec![rested(3, Buy, 99, 1)]),
                    (
                        with(4, Buy, 100, 1, PostOnly),
                        vec![cxl(4, Buy, Some(100), 1, PostOnlyWouldCross)],
                    ),
                    (
                        with(5, Sell, 99, 1, PostOnly),
                        vec![cxl(5, Sell, Some(99), 1, PostOnlyWouldCross)],
                    ),
                    (with(6, Sell, 100, 3, PostOnly), vec![rested(6, Sell, 100, 3)]),
                ],
            ),
            vec![(3, 99, 1), (2, 98, 2), (1, 100, 2), (6, 100, 3)],
        ),
        case(
            "STP CancelNewest: the taker's remainder is cancelled, the own maker stays",
            chain(
                setup(vec![
                    owned(1, 2, Sell, 100, 1, Gtc, Stp::CancelNewest),
                    owned(2, 1, Sell, 100, 2, Gtc, Stp::CancelNewest),
                    owned(3, 3, Sell, 100, 2, Gtc, Stp::CancelNewest),
                ]),
                vec![(
                    owned(4, 1, Buy, 100, 5, Gtc, Stp::CancelNewest),
                    vec![
                        fill_o(1, 2, 4, 1, Buy, 100, 1, 0),
                        cxl(4, Buy, Some(100), 4, SelfTrade),
                    ],
                )],
            ),
            vec![(2, 100, 2), (3, 100, 2)],
        ),
        case(
            "STP CancelOldest: the own maker is cancelled and matching goes on",
            chain(
                setup(vec![
                    owned(1, 2, Sell, 100, 1, Gtc, Stp::CancelNewest),
                    owned(2, 1, Sell, 100, 2, Gtc, Stp::CancelNewest),
                    owned(3, 3, Sell, 100, 2, Gtc, Stp::CancelNewest),
                ]),
                vec![(
                    owned(4, 1, Buy, 100, 5, Gtc, Stp::CancelOldest),
                    vec![
                        fill_o(1, 2, 4, 1, Buy, 100, 1, 0),
                        cxl(2, Sell, Some(100), 2, SelfTrade),
                        fill_o(3, 3, 4, 1, Buy, 100, 2, 0),
                        rested(4, Buy, 100, 2),
                    ],
                )],
            ),
            vec![(4, 100, 2)],
        ),
        case(
            "STP CancelBoth: maker then taker cancelled",
            chain(
                setup(vec![
                    owned(1, 2, Sell, 100, 1, Gtc, Stp::CancelNewest),
                    owned(2, 1, Sell, 100, 2, Gtc, Stp::CancelNewest),
                    owned(3, 3, Sell, 100, 2, Gtc, Stp::CancelNewest),
                ]),
                vec![(
                    owned(4, 1, Buy, 100, 5, Ioc, Stp::CancelBoth),
                    vec![
                        fill_o(1, 2, 4, 1, Buy, 100, 1, 0),
                        cxl(2, Sell, Some(100), 2, SelfTrade),
                        cxl(4, Buy, Some(100), 4, SelfTrade),
                    ],
                )],
            ),
            vec![(3, 100, 2)],
        ),
        case(
            "STP does not trigger on a maker beyond the limit",
            chain(
                setup(vec![owned(1, 1, Sell, 101, 1, Gtc, Stp::CancelNewest)]),
                vec![(
                    owned(2, 1, Buy, 100, 1, Gtc, Stp::CancelBoth),
                    vec![rested(2, Buy, 100, 1)],
                )],
            ),
            vec![(2, 100, 1), (1, 101, 1)],
        ),
        case(
            "cancel in the middle of a queue keeps FIFO; dead and unknown ids are refused",
            chain(
                setup(vec![
                    gtc(1, Buy, 100, 1),
                    gtc(2, Buy, 100, 1),
                    gtc(3, Buy, 100, 1),
                    gtc(4, Buy, 100, 1),
                ]),
                vec![
                    (Cmd::Cancel(2), vec![cxl(2, Buy, Some(100), 1, User)]),
                    (Cmd::Cancel(2), vec![]),
                    (Cmd::Cancel(99), vec![]),
                    (Cmd::Cancel(4), vec![cxl(4, Buy, Some(100), 1, User)]),
                    (gtc(5, Buy, 100, 1), vec![rested(5, Buy, 100, 1)]),
                    (
                        gtc(6, Sell, 100, 3),
                        vec![
                            fill(1, 6, Sell, 100, 1, 0),
                            fill(3, 6, Sell, 100, 1, 0),
                            fill(5, 6, Sell, 100, 1, 0),
                        ],
                    ),
                    (Cmd::Cancel(1), vec![]),
                ],
            ),
            vec![],
        ),
        case(
            "a partly filled order cancels with its remaining quantity",
            chain(
                setup(vec![gtc(1, Buy, 100, 10)]),
                vec![
                    (gtc(2, Sell, 90, 4), vec![fill(1, 2, Sell, 100, 4, 6)]),
                    (Cmd::Cancel(1), vec![cxl(1, Buy, Some(100), 6, User)]),
                ],
            ),
            vec![],
        ),
        case(
            "invalid orders are rejected without effect",
            chain(
                setup(vec![gtc(1, Sell, 100, 2)]),
                vec![
                    (gtc(2, Buy, 100, 0), vec![cxl(2, Buy, Some(100), 0, Unfilled)]),
                    (gtc(3, Buy, 0, 1), vec![cxl(3, Buy, Some(0), 1, Unfilled)]),
                    (
                        Cmd::Submit(order(4, 4, Buy, None, 1, Gtc)),
                        vec![cxl(4, Buy, None, 1, Unfilled)],
                    ),
                    (
                        Cmd::Submit(order(5, 5, Buy, None, 1, PostOnly)),
                        vec![cxl(5, Buy, None, 1, Unfilled)],
                    ),
                    (market(6, Buy, 0), vec![cxl(6, Buy, None, 0, Unfilled)]),
                ],
            ),
            vec![(1, 100, 2)],
        ),
        case(
            "extreme and far-apart prices",
            chain(
                setup(vec![
                    gtc(1, Sell, u64::MAX, 1),
                    gtc(2, Sell, 1_000_000, 1),
                    gtc(3, Buy, 1, 1),
                    gtc(4, Buy, 100, 1),
                    gtc(5, Sell, 5_000, 1),
                ]),
                vec![
                    (
                        market(6, Buy, 3),
                        vec![
                            fill(5, 6, Buy, 5_000, 1, 0),
                            fill(2, 6, Buy, 1_000_000, 1, 0),
                            fill(1, 6, Buy, u64::MAX, 1, 0),
                        ],
                    ),
                    (
                        by_quote(7, Sell, 5, u128::MAX, Ioc, None),
                        vec![
                            fill(4, 7, Sell, 100, 1, 0),
                            fill(3, 7, Sell, 1, 1, 0),
                            cxl(7, Sell, None, 3, Unfilled),
                        ],
                    ),
                    (gtc(8, Buy, u64::MAX, 2), vec![rested(8, Buy, u64::MAX, 2)]),
                    (
                        with(9, Sell, u64::MAX, 1, Fok),
                        vec![fill(8, 9, Sell, u64::MAX, 1, 1)],
                    ),
                ],
            ),
            vec![(8, u64::MAX, 1)],
        ),
    ]
}

#[test]
fn scenarios_on_every_book() {
    for c in cases() {
        for (name, mut book) in books() {
            for (i, (cmd, want)) in c.steps.iter().enumerate() {
                let got = step(book.as_mut(), cmd);
                assert_eq!(&got, want, "{name}: case {:?}, step {i}: {cmd:?}", c.name);
            }
            assert_eq!(
                resting(book.as_ref()),
                c.end,
                "{name}: case {:?}: resting orders",
                c.name
            );
            assert_eq!(book.len(), c.end.len(), "{name}: case {:?}: len", c.name);
        }
    }
}

#[test]
fn queries_on_every_book() {
    for (name, mut book) in books() {
        let b = book.as_mut();
        assert!(
            b.is_empty() && b.best_bid().is_none() && b.best_ask().is_none(),
            "{name}"
        );
        for cmd in [
            gtc(1, Buy, 100, 5),
            gtc(2, Buy, 100, 7),
            gtc(3, Buy, 98, 1),
            gtc(4, Sell, 103, 2),
            gtc(5, Sell, 101, 4),
            gtc(6, Sell, 200_000, 9),
        ] {
            step(b, &cmd);
        }
        assert_eq!(b.best_bid(), Some(Price(100)), "{name}");
        assert_eq!(b.best_ask(), Some(Price(101)), "{name}");
        assert_eq!(b.len(), 6, "{name}");
        let mut d = vec![(Price(1), Qty(1), 1)];
        b.depth(Buy, 10, &mut d);
        assert_eq!(
            d,
            vec![(Price(100), Qty(12), 2), (Price(98), Qty(1), 1)],
            "{name}"
        );
        b.depth(Sell, 2, &mut d);
        assert_eq!(
            d,
            vec![(Price(101), Qty(4), 1), (Price(103), Qty(2), 1)],
            "{name}"
        );
        assert_eq!(b.level(Buy, Price(100)), (Qty(12), 2), "{name}");
        assert_eq!(b.level(Sell, Price(200_000)), (Qty(9), 1), "{name}");
        assert_eq!(b.level(Sell, Price(100)), (Qty(0), 0), "{name}");
        assert_eq!(b.level(Buy, Price(99)), (Qty(0), 0), "{name}");
        b.depth(Sell, 0, &mut d);
        assert!(d.is_empty(), "{name}");
        assert_eq!(
            b.order(OrderId(2)),
            Some(OrderView {
                id: OrderId(2),
                owner: OwnerId(2),
                side: Buy,
                price: Price(100),
                qty: Qty(7)
            }),
            "{name}"
        );
        assert_eq!(b.order(OrderId(7)), None, "{name}");
        let probe = |side, limit, qty| order(9, 9, side, limit, qty, Fok);
        assert_eq!(b.available_qty(&probe(Buy, Some(103), 100)), Qty(6), "{name}");
        assert_eq!(b.available_qty(&probe(Buy, None, 100)), Qty(15), "{name}");
        assert_eq!(b.available_qty(&probe(Buy, None, 5)), Qty(5), "{name}");
        assert_eq!(b.available_qty(&probe(Sell, Some(99), 100)), Qty(12), "{name}");
        assert_eq!(b.available_qty(&probe(Sell, Some(101), 100)), Qty(0), "{name}");
        let mine = NewOrder {
            owner: OwnerId(1),
            ..probe(Sell, None, 100)
        };
        assert_eq!(
            b.available_qty(&mine),
            Qty(0),
            "{name}: own order first, CancelNewest"
        );
        let mine = NewOrder {
            stp: Stp::CancelOldest,
            ..mine
        };
        assert_eq!(
            b.available_qty(&mine),
            Qty(8),
            "{name}: own order skipped, CancelOldest"
        );
        // Restore ignores orders a book never holds (qty 0, price 0).
        let before = b.orders();
        for (price, qty) in [(100, 0), (0, 5)] {
            b.restore(OrderView {
                id: OrderId(50),
                owner: OwnerId(50),
                side: Buy,
                price: Price(price),
                qty: Qty(qty),
            });
        }
        assert_eq!(b.orders(), before, "{name}: invalid restore ignored");
        assert_eq!(b.order(OrderId(50)), None, "{name}");
    }
}

// ---- random streams: the fast book must behave exactly like the reference ----

#[derive(Clone, Debug)]
enum Op {
    Submit {
        side: Side,
        price: u64,
        qty: u64,
        tif: TimeInForce,
        market: bool,
        budget: Option<u128>,
        owner: u32,
        stp: Stp,
    },
    /// Cancel the `n`-th id issued so far (modulo), or an id never issued.
    Cancel(usize),
}

fn price_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 95u64..=105,
        3 => 1u64..=400,
        1 => prop::sample::select(vec![1, 2, 1 << 20, 1 << 40, u64::MAX / 2, u64::MAX - 1, u64::MAX]),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Buy), Just(Sell)];
    let tif = prop_oneof![4 => Just(Gtc), 1 => Just(Ioc), 1 => Just(Fok), 1 => Just(PostOnly)];
    let stp = prop_oneof![
        Just(Stp::CancelNewest),
        Just(Stp::CancelOldest),
        Just(Stp::CancelBoth)
    ];
    let budget = prop_oneof![6 => Just(None), 1 => (0u128..3_000).prop_map(Some), 1 => Just(Some(u128::MAX))];
    let submit = (
        side,
        price_strategy(),
        0u64..=12,
        tif,
        prop::bool::weighted(0.1),
        budget,
        0u32..4,
        stp,
    )
        .prop_map(|(side, price, qty, tif, market, budget, owner, stp)| Op::Submit {
            side,
            price,
            qty,
            tif,
            market,
            budget,
            owner,
            stp,
        });
    prop_oneof![3 => submit, 1 => any::<usize>().prop_map(Op::Cancel)]
}

/// How the stream numbers its orders: sequentially, with a stride that makes every id collide in
/// the fast book's id ring, or scattered over the whole `u64` range.
fn id_of(mode: u8, n: u64) -> u64 {
    match mode {
        0 => n,
        1 => n << 12,
        _ => n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

/// Turn ops into commands with unique ids.
fn commands(ops: &[Op], id_mode: u8) -> Vec<Cmd> {
    let mut issued = Vec::new();
    let mut cmds = Vec::with_capacity(ops.len());
    for op in ops {
        match *op {
            Op::Submit {
                side,
                price,
                qty,
                tif,
                market,
                budget,
                owner,
                stp,
            } => {
                let id = id_of(id_mode, issued.len() as u64 + 1);
                issued.push(id);
                let limit = if market { None } else { Some(Price(price)) };
                let tif = if market && tif != Fok { Ioc } else { tif };
                cmds.push(Cmd::Submit(NewOrder {
                    id: OrderId(id),
                    owner: OwnerId(owner),
                    side,
                    limit,
                    qty: Qty(qty),
                    quote_budget: budget,
                    tif,
                    stp,
                }));
            }
            Op::Cancel(n) => {
                let id = match n % (issued.len() + 1) {
                    0 => id_of(id_mode, u64::MAX / 3),
                    k => issued[k - 1],
                };
                cmds.push(Cmd::Cancel(id));
            }
        }
    }
    cmds
}

fn assert_same_state(a: &dyn OrderBook, b: &dyn OrderBook, what: &str) {
    for side in [Buy, Sell] {
        for price in [1, 2, 94, 95, 96, 99, 100, 101, 104, 105, 106, 200, 399, u64::MAX] {
            let p = Price(price);
            assert_eq!(
                a.level(side, p),
                b.level(side, p),
                "{what}: level {side:?} {price}"
            );
        }
    }
    assert_eq!(a.orders(), b.orders(), "{what}: orders");
    assert_eq!(a.len(), b.len(), "{what}: len");
    assert_eq!(a.best_bid(), b.best_bid(), "{what}: best bid");
    assert_eq!(a.best_ask(), b.best_ask(), "{what}: best ask");
    let (mut da, mut db) = (Vec::new(), Vec::new());
    for side in [Buy, Sell] {
        a.depth(side, usize::MAX, &mut da);
        b.depth(side, usize::MAX, &mut db);
        assert_eq!(da, db, "{what}: depth {side:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn fast_book_matches_reference(ops in prop::collection::vec(op_strategy(), 1..400), id_mode in 0u8..3) {
        let cmds = commands(&ops, id_mode);
        let mut reference = RefBook::new();
        let mut fast = [FastBook::with_window(64), FastBook::new()];
        for (i, cmd) in cmds.iter().enumerate() {
            if let Cmd::Submit(o) = cmd {
                // The FOK pre-check agrees too, for every order, before it is applied.
                for f in &fast {
                    prop_assert_eq!(f.available_qty(o), reference.available_qty(o), "step {}: {:?}", i, o);
                }
            }
            let want = step(&mut reference, cmd);
            for f in &mut fast {
                let got = step(f, cmd);
                prop_assert_eq!(&got, &want, "step {}: {:?}", i, cmd);
                assert_same_state(&reference, f, &format!("after step {i}"));
            }
            for o in reference.orders().iter().step_by(7) {
                for f in &fast {
                    prop_assert_eq!(f.order(o.id), Some(*o));
                }
            }
        }
    }

    #[test]
    fn available_qty_agrees(ops in prop::collection::vec(op_strategy(), 1..200), probes in prop::collection::vec(op_strategy(), 1..20)) {
        let cmds = commands(&ops, 0);
        let mut reference = RefBook::new();
        let mut fast = FastBook::with_window(64);
        for cmd in &cmds {
            step(&mut reference, cmd);
            step(&mut fast, cmd);
        }
        for probe in commands(&probes, 2) {
            if let Cmd::Submit(o) = probe {
                prop_assert_eq!(reference.available_qty(&o), fast.available_qty(&o), "{:?}", o);
            }
        }
    }

    #[test]
    fn snapshot_restore_reproduces_the_book(ops in prop::collection::vec(op_strategy(), 1..300), split in 0usize..300) {
        let cmds = commands(&ops, 0);
        let split = split.min(cmds.len());
        let mut original = FastBook::with_window(64);
        for cmd in &cmds[..split] {
            step(&mut original, cmd);
        }
        let mut restored: [Box<dyn OrderBook>; 2] = [Box::new(RefBook::new()), Box::new(FastBook::with_window(64))];
        for r in &mut restored {
            for o in original.orders() {
                r.restore(o);
            }
            assert_same_state(&original, r.as_ref(), "restored");
        }
        for (i, cmd) in cmds[split..].iter().enumerate() {
            let want = step(&mut original, cmd);
            for r in &mut restored {
                prop_assert_eq!(&step(r.as_mut(), cmd), &want, "step {} after restore", i);
            }
        }
    }
}

/// A market drifting far beyond the fast book's window: the window must follow it (re-centring
/// while it holds levels), park stale levels outside it, and still behave like the reference.
#[test]
fn window_follows_a_drifting_market() {
    let mut reference = RefBook::new();
    let mut fast = FastBook::with_window(64);
    let mut outside_seen = 0;
    let mut id = 0;
    let mut next = |side, price, qty, tif| {
        id += 1;
        Cmd::Submit(order(id, id as u32, side, Some(price), qty, tif))
    };
    for i in 0u64..6_000 {
        // Up by 600 ticks, then down by 1,200.
        let mid = if i < 3_000 {
            1_000 + i / 5
        } else {
            1_600 - (i - 3_000) * 2 / 5
        };
        let k = i % 7;
        let cmds = [
            next(Buy, mid - 1 - k, 1 + k, Gtc),
            next(Sell, mid + 1 + k, 1 + k, Gtc),
            next(
                if i % 2 == 0 { Buy } else { Sell },
                mid,
                2,
                if i % 3 == 0 { Ioc } else { Gtc },
            ),
            Cmd::Cancel((3 * i + 3).saturating_sub(7 * (k + 1))),
        ];
        for cmd in &cmds {
            let want = step(&mut reference, cmd);
            assert_eq!(step(&mut fast, cmd), want, "command {i}: {cmd:?}");
        }
        outside_seen = outside_seen.max(fast.stats().levels_outside_window);
    }
    assert_same_state(&reference, &fast, "end");
    let stats = fast.stats();
    assert!(stats.recenters > 0, "the window never moved: {stats:?}");
    assert!(
        outside_seen > 0,
        "no level was ever outside the window: {stats:?}"
    );
    assert!(reference.len() > 100, "the book kept depth: {}", reference.len());
}

// ---- the standard workload: lobgen's reference engine states the end state ----

#[test]
fn lobwkld1_oracle_1m() {
    let dir = std::env::temp_dir().join(format!("kinko-book-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("wl_1m.bin");
    workload::generate(&path, 1_000_000, 42);
    let expected = workload::expected(&path);
    let cmds = workload::load(&path);
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    assert_eq!(cmds.len(), 1_000_000);

    let mut fast = FastBook::new();
    let tally = workload::run(&mut fast, &cmds);
    assert_eq!(workload::end_state(&fast, tally), expected, "FastBook");

    let mut reference = RefBook::new();
    let tally = workload::run(&mut reference, &cmds);
    assert_eq!(workload::end_state(&reference, tally), expected, "RefBook");
    assert_eq!(
        fast.orders(),
        reference.orders(),
        "same resting orders in the same order"
    );
}
