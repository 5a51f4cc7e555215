//! The read side: a replica of the engine fed with committed batches, plus indexes the engine
//! does not keep (fills per user), the stream of events for subscribers (the gateway's
//! WebSocket), and an [`Observer`] hook for whoever reacts to committed events (the gateway's
//! security messages).
//!
//! The gateway never reads the sequencer's engine. The sequencer sends every durable batch to
//! this replica, which applies it to its own copy of the state machine — deterministic, so it
//! reaches the same state and produces the same events. Reads take a shared lock on the replica;
//! the replica thread takes it exclusively once per batch.

use crate::FeedBatch;
use kinko_core::book::{OrderId, Price, Qty, Side};
use kinko_core::engine::{Engine, Event};
use kinko_core::ledger::{LedgerEvent, Owner};
use kinko_core::market::MarketId;
use kinko_core::trading::TradingEvent;
use kinko_core::{AccountId, AssetId, UserId};
use parking_lot::{RwLock, RwLockReadGuard};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Fills kept per user in the read model (older ones are dropped first).
pub const FILLS_KEPT_PER_USER: usize = 10_000;
/// Batches buffered per WebSocket subscriber before it counts as too slow.
pub const EVENT_BUFFER_BATCHES: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liquidity {
    Maker,
    Taker,
}

/// One side of a trade, as its owner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    pub market: MarketId,
    pub trade_id: u64,
    pub order: OrderId,
    pub user: UserId,
    pub side: Side,
    pub price: Price,
    pub qty: Qty,
    /// Base minor units.
    pub base_amount: u128,
    /// Quote minor units.
    pub notional: u128,
    /// Quote minor units.
    pub fee: u128,
    pub liquidity: Liquidity,
    pub timestamp_ns: u64,
}

impl Fill {
    /// The maker's and the taker's side of a trade.
    pub fn both(t: &kinko_core::trading::Trade) -> [Fill; 2] {
        let taker_side = t.maker_side.opposite();
        let fee_of = |side: Side| {
            if side == Side::Buy {
                t.buyer_fee
            } else {
                t.seller_fee
            }
        };
        let mk = |user, order, side, liquidity| Fill {
            market: t.market,
            trade_id: t.id,
            order,
            user,
            side,
            price: t.price,
            qty: t.qty,
            base_amount: t.base_amount,
            notional: t.notional,
            fee: fee_of(side),
            liquidity,
            timestamp_ns: t.timestamp_ns,
        };
        [
            mk(t.maker_user, t.maker_order, t.maker_side, Liquidity::Maker),
            mk(t.taker_user, t.taker_order, taker_side, Liquidity::Taker),
        ]
    }
}

/// What the replica holds.
pub struct ReadModel {
    pub engine: Engine,
    fills: HashMap<UserId, VecDeque<Fill>>,
}

impl ReadModel {
    /// A user's fills, newest first, optionally of one market or one order.
    pub fn fills(
        &self,
        user: UserId,
        market: Option<MarketId>,
        order: Option<OrderId>,
        limit: usize,
    ) -> Vec<Fill> {
        self.fills
            .get(&user)
            .map(|q| {
                q.iter()
                    .rev()
                    .filter(|f| market.is_none_or(|m| f.market == m))
                    .filter(|f| order.is_none_or(|o| f.order == o))
                    .take(limit)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn record_fill(&mut self, f: Fill) {
        let q = self.fills.entry(f.user).or_default();
        if q.len() >= FILLS_KEPT_PER_USER {
            q.pop_front();
        }
        q.push_back(f);
    }
}

/// The events of one committed batch, for subscribers.
#[derive(Debug)]
pub struct BatchEvents {
    pub first_seq: u64,
    pub timestamp_ns: u64,
    pub events: Vec<Event>,
    /// Customer accounts whose balance or hold changed in the batch: (user, asset, available,
    /// held) after the batch.
    pub balances: Vec<(UserId, AssetId, u128, u128)>,
}

/// Reacts to what the replica applies, on the replica's thread: [`Observer::on_command`] under
/// the write lock after each command (keep it short and non-blocking), [`Observer::on_batch`]
/// after the batch, with the lock released.
pub trait Observer: Send {
    fn on_command(&mut self, model: &ReadModel, events: &[Event]);
    fn on_batch(&mut self);
}

struct Inner {
    /// Where the committed batches come from (set once by `launch::open`): what
    /// [`ReadSide::replay`] reads again.
    source: std::sync::OnceLock<crate::EngineConfig>,
    /// Set once (the gateway's security messages).
    observer: std::sync::OnceLock<parking_lot::Mutex<Box<dyn Observer>>>,
    model: RwLock<ReadModel>,
    applied: watch::Sender<u64>,
    events: broadcast::Sender<Arc<BatchEvents>>,
}

thread_local! {
    static MODEL_LOCK_ALLOWED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Marks the calling thread as one that must never hold the read model's lock: a thread the
/// scheduler may put behind others (a low-priority one) would, while holding it, keep the
/// replica from applying the next batch. [`ReadSide::model`] checks it in debug builds.
pub fn no_model_lock_here() {
    MODEL_LOCK_ALLOWED.with(|c| c.set(false));
}

#[derive(Clone)]
pub struct ReadSide {
    inner: Arc<Inner>,
}

impl ReadSide {
    /// Starts the replica thread on a copy of the engine at the sequencer's starting point.
    /// Returns the side and the sender to hand to the sequencer.
    pub fn start(engine: Engine, feed_batches_max: usize) -> (ReadSide, crate::FeedSender) {
        let (tx, rx) = crossbeam_channel::bounded::<Arc<FeedBatch>>(feed_batches_max.max(1));
        let mut model = ReadModel {
            engine,
            fills: HashMap::new(),
        };
        // Fills the engine still remembers (its trade history) seed the index after a restart.
        let mut seed = Vec::new();
        for m in model.engine.trading().markets() {
            let id = model.engine.trading().market_by_symbol(&m.meta.spec.symbol);
            if let Some(id) = id {
                seed.extend(model.engine.trading().recent_trades(id, usize::MAX));
            }
        }
        seed.sort_by_key(|t| (t.timestamp_ns, t.market, t.id));
        for t in &seed {
            for f in Fill::both(t) {
                model.record_fill(f);
            }
        }
        let (applied, _) = watch::channel(model.engine.last_seq());
        let (events, _) = broadcast::channel(EVENT_BUFFER_BATCHES);
        let inner = Arc::new(Inner {
            source: std::sync::OnceLock::new(),
            observer: std::sync::OnceLock::new(),
            model: RwLock::new(model),
            applied,
            events,
        });
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("kinko-read".into())
            .spawn(move || run(worker, rx))
            .expect("cannot start the read-side thread");
        (ReadSide { inner }, tx)
    }

    /// A shared view of the replica. Hold it briefly: the replica waits for it to apply.
    ///
    /// Never on a thread marked with [`no_model_lock_here`] (debug builds check it).
    pub fn model(&self) -> RwLockReadGuard<'_, ReadModel> {
        debug_assert!(
            MODEL_LOCK_ALLOWED.with(std::cell::Cell::get),
            "the read model's lock taken on a thread that must not hold it"
        );
        self.inner.model.read()
    }

    pub fn applied_seq(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// Waits until the replica has applied `seq` (read-your-writes), at most `timeout`.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        if self.applied_seq() >= seq {
            return true;
        }
        let mut rx = self.inner.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// `observer` sees every command applied from now on. Only the first one set is kept;
    /// returns whether this one was.
    pub fn set_observer(&self, observer: Box<dyn Observer>) -> bool {
        self.inner.observer.set(parking_lot::Mutex::new(observer)).is_ok()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BatchEvents>> {
        self.inner.events.subscribe()
    }

    /// Records the data directory whose journal feeds this side (once; `launch::open` does).
    pub fn set_source(&self, config: crate::EngineConfig) {
        let _ = self.inner.source.set(config);
    }

    /// The data directory whose journal feeds this side, if known.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.inner.source.get().map(|c| c.data_dir.as_path())
    }

    /// Applies the committed commands `from..=to` again, on a private copy of the state
    /// machine rebuilt from the journal (the newest snapshot at or before `from - 1`, or the
    /// journal from its start), and hands `f` the model, sequence, timestamp and events of each
    /// — exactly what [`Observer::on_command`] saw, or would have seen, when the command was
    /// first applied. Observers use it to catch up after a restart or after they fell behind.
    /// Reads only durable records (`to` must not be past what this side has applied); costs a
    /// second copy of the state while it runs.
    pub fn replay(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(&ReadModel, u64, u64, &[Event]),
    ) -> Result<(), ReplayError> {
        let from = from.max(1);
        if to < from {
            return Ok(());
        }
        let applied = self.applied_seq();
        if to > applied {
            return Err(ReplayError::Ahead { to, applied });
        }
        let cfg = self.inner.source.get().ok_or(ReplayError::NoJournal)?;
        let mut model = ReadModel {
            engine: base_engine(cfg, from - 1)?,
            fills: HashMap::new(),
        };
        let mut events = Vec::new();
        for rec in kinko_journal::read_from(&cfg.journal_dir(), model.engine.last_seq() + 1)? {
            let rec = rec?;
            let cmd = crate::decode_command(rec.kind, &rec.payload)
                .map_err(|reason| ReplayError::Undecodable { seq: rec.seq, reason })?;
            events.clear();
            let _ = model.engine.apply(rec.seq, rec.timestamp_ns, &cmd, &mut events);
            if rec.seq >= from {
                f(&model, rec.seq, rec.timestamp_ns, &events);
            }
            if rec.seq >= to {
                return Ok(());
            }
        }
        Err(ReplayError::Short {
            to,
            end: model.engine.last_seq(),
        })
    }
}

/// Why [`ReadSide::replay`] could not read the committed history again.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("this read side was not started from a data directory")]
    NoJournal,
    #[error("replay up to {to} asked for, but only {applied} is applied")]
    Ahead { to: u64, applied: u64 },
    #[error("the journal ends at {end}, before {to}")]
    Short { to: u64, end: u64 },
    #[error(transparent)]
    Journal(#[from] kinko_journal::JournalError),
    #[error("journal record {seq} does not decode as a command: {reason}")]
    Undecodable { seq: u64, reason: crate::DecodeError },
}

/// The state machine as it was at `seq` or before: the newest valid snapshot at or before `seq`
/// that belongs to this journal, or an empty engine (the journal keeps every record).
fn base_engine(cfg: &crate::EngineConfig, seq: u64) -> Result<Engine, ReplayError> {
    let store = kinko_journal::SnapshotStore::reader(cfg.snapshot_dir());
    let found = match store.latest_valid_at_most(seq) {
        Ok(l) => l.found,
        Err(e) => {
            tracing::warn!(error = %e, "replay: snapshots unreadable, starting from the journal's start");
            None
        }
    };
    if let Some((meta, payload)) = found {
        if let Ok(e) = Engine::from_snapshot_bytes(&payload) {
            let ours = meta.seq == 0
                || kinko_journal::read_from(&cfg.journal_dir(), meta.seq)?
                    .next()
                    .transpose()?
                    .is_some_and(|r| r.hash == meta.journal_hash);
            if ours && e.state_hash() == meta.state_hash && e.last_seq() == meta.seq {
                return Ok(e);
            }
        }
    }
    Ok(Engine::new())
}

fn run(inner: Arc<Inner>, rx: crossbeam_channel::Receiver<Arc<FeedBatch>>) {
    let mut events: Vec<Event> = Vec::new();
    let mut touched: Vec<AccountId> = Vec::new();
    while let Ok(batch) = rx.recv() {
        let mut all = Vec::new();
        let mut balances = Vec::new();
        let last;
        let mut observer = inner.observer.get().map(|o| o.lock());
        {
            let mut m = inner.model.write();
            for (i, c) in batch.commands.iter().enumerate() {
                let seq = batch.first_seq + i as u64;
                events.clear();
                if m.engine.last_seq() >= seq {
                    continue; // already applied (cannot happen with one feed; kept for safety)
                }
                let _ = m.engine.apply(seq, batch.timestamp_ns, c, &mut events);
                index(&mut m, &events, &mut touched);
                if let Some(o) = observer.as_mut() {
                    o.on_command(&m, &events);
                }
                all.append(&mut events);
            }
            touched.sort_unstable();
            touched.dedup();
            for a in touched.drain(..) {
                if let Some(acc) = m.engine.ledger().account(a) {
                    if let Owner::Customer(u) = acc.owner {
                        balances.push((u, acc.asset, acc.available(), acc.held));
                    }
                }
            }
            last = m.engine.last_seq();
        }
        if let Some(o) = observer.as_mut() {
            o.on_batch();
        }
        drop(observer);
        if inner.events.receiver_count() > 0 {
            let _ = inner.events.send(Arc::new(BatchEvents {
                first_seq: batch.first_seq,
                timestamp_ns: batch.timestamp_ns,
                events: all,
                balances,
            }));
        }
        inner.applied.send_replace(last);
    }
}

/// Updates the indexes from one command's events and notes the accounts it touched.
fn index(m: &mut ReadModel, events: &[Event], touched: &mut Vec<AccountId>) {
    for e in events {
        match e {
            Event::Trading(TradingEvent::Trade(t)) => {
                for f in Fill::both(t) {
                    m.record_fill(f);
                    touch_market_accounts(m, f.user, f.market, touched);
                }
            }
            Event::Trading(
                TradingEvent::OrderAccepted {
                    user, market, side, ..
                }
                | TradingEvent::StopAccepted {
                    user, market, side, ..
                },
            ) => {
                let asset = m
                    .engine
                    .trading()
                    .market(*market)
                    .map(|x| kinko_core::market::hold_asset(&x.meta.spec, *side));
                if let Some(a) = asset.and_then(|a| m.engine.ledger().customer_account(*user, a)) {
                    touched.push(a);
                }
            }
            Event::Trading(TradingEvent::OrderDone { user, market, .. }) => {
                touch_market_accounts(m, *user, *market, touched);
            }
            Event::Ledger(LedgerEvent::Transferred(t)) => {
                touched.push(t.debit);
                touched.push(t.credit);
            }
            Event::AccountOpened { account, .. } => touched.push(*account),
            _ => {}
        }
    }
}

/// The user's base and quote accounts of a market.
fn touch_market_accounts(m: &ReadModel, user: UserId, market: MarketId, touched: &mut Vec<AccountId>) {
    let Some(mk) = m.engine.trading().market(market) else {
        return;
    };
    for asset in [mk.meta.spec.base, mk.meta.spec.quote] {
        touched.extend(m.engine.ledger().customer_account(user, asset));
    }
}
