//! What both WebSocket feeds (the native `/api/v1/ws` and the Coinbase feed `/ws-feed`) share:
//! the fan-out runtime, the rendered batch stream, the outgoing queue and the socket writer.
//!
//! # Market data never starves order entry
//!
//! - **Own threads, behind order entry.** Every WebSocket connection runs on a runtime of its
//!   own ([`fanout_threads`]: one per core), never on the runtime that serves
//!   HTTP, and its threads run under Linux's `SCHED_IDLE` policy: fan-out uses whatever CPU
//!   order entry leaves, and a waking order-entry thread takes the core at once. (A nice-19
//!   thread is not enough: the scheduler may let it finish its slice first, and an order crosses
//!   several threads, each of which could wait so.)
//! - **No lock held behind order entry.** A thread the scheduler puts behind others must never
//!   hold the read model's lock: the replica could not apply the next batch, and every reader
//!   queued behind it (order entry among them) would wait. So a connection never takes it on
//!   its own thread: what needs the model (subscriptions and their snapshots, a stale book's
//!   fresh snapshot, a user's private messages, heartbeats) runs through [`Fanout::locked`] on
//!   a thread of normal priority while the connection's thread waits; debug builds refuse the
//!   lock on a fan-out thread ([`kinko_engine::replica::no_model_lock_here`]). The renderer has
//!   a thread of its own at normal priority.
//! - **Serialised once.** The renderer reads the replica's committed batches (the same
//!   broadcast the read side feeds, no second source of truth) and turns each batch's public
//!   messages into JSON once per feed ([`Part`]); every subscriber gets the same bytes
//!   (`Message` text is reference-counted, a clone copies no byte). Only private messages
//!   (a user's own orders, fills, balances) are made per connection. Only the kinds some
//!   connection reads are rendered ([`Fanout`]'s interest counts, set before a subscription's
//!   snapshot is taken).
//! - **Coalesced deliveries.** Batches committed within [`crate::ws::WsConfig::coalesce`] of
//!   the last delivery go to the connections together ([`Rendered`]), so under load a
//!   connection wakes, filters and writes once per window, not once per committed batch; a
//!   batch after a quiet spell goes out at once.
//! - **A batch per write.** The writer takes everything queued (up to [`WRITE_BATCH_MAX`]
//!   messages) and hands it to the kernel in one vectored write ([`crate::wsio::Writer`]):
//!   the shared payloads are written from their buffers, only frame headers are made per
//!   connection.
//! - **Falling behind is not back-pressure.** A full queue drops book updates and tickers
//!   instead of waiting: the book of that market is marked stale and a fresh snapshot follows
//!   as soon as there is room again (rendered once per book sequence and shared by every
//!   connection that resynchronises at it, [`Fanout::snapshot`]); the next ticker supersedes a
//!   dropped one. Trades and private
//!   messages are never dropped: when they do not fit within [`crate::ws::WsConfig::queue_wait`]
//!   the client is a slow consumer.
//! - **Stuck clients are found by time.** A write that makes no progress for
//!   [`crate::ws::WsConfig::write_stall`] ends the connection with a `SLOW_CONSUMER` error
//!   message and a close (written within [`crate::ws::WsConfig::final_write`]). Every
//!   [`crate::ws::WsConfig::ping_every`] the server pings; a client from which nothing (not even
//!   a pong) has arrived for [`crate::ws::WsConfig::pong_wait`] is closed the same way, so a dead
//!   client is noticed in a quiet market too.

use crate::wsio::Writer;
use crate::AppState;
use axum::extract::ws::{close_code, CloseFrame, Message};
use kinko_core::market::MarketId;
use kinko_core::UserId;
use kinko_engine::replica::BatchEvents;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// How often a connection whose book went stale checks for room to send a fresh snapshot.
pub const RESYNC_EVERY: Duration = Duration::from_millis(50);
/// Worker threads of the fan-out runtime: one per core. They run under `SCHED_IDLE`, so they use
/// only the CPU that order entry (and everything else of normal priority) leaves idle, on every
/// core; with half the cores, fan-out could not use an idle core and delivered about a third
/// fewer messages (`kinko bench feed`).
pub fn fanout_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
/// Most messages written per flush.
pub const WRITE_BATCH_MAX: usize = 256;

/// One public message of a batch, rendered once for every subscriber of a feed.
pub(crate) struct Pub {
    /// Index (in the batch's events) of the event this message follows; `usize::MAX` for the
    /// messages made after the whole batch (tickers, candles).
    pub at: usize,
    pub market: MarketId,
    /// The feed's channel of the message (each feed numbers its own).
    pub kind: u8,
    /// The market's sequence the message carries (level-2 sequence, or the Coinbase feed's
    /// product sequence), 0 if none.
    pub seq: u64,
    /// Whose orders the message is about (Coinbase `full` messages: the owners, for the
    /// `user` channel).
    pub users: [Option<UserId>; 2],
    /// What each of `users` gets instead of `msg` (the Coinbase `user` channel's messages).
    pub own: [Option<Message>; 2],
    pub msg: Message,
}

/// A committed batch with its public messages rendered for each feed that has connections.
pub(crate) struct Part {
    pub batch: Arc<BatchEvents>,
    pub native: Vec<Pub>,
    pub coinbase: Vec<Pub>,
    /// The Coinbase feed's product sequences after this batch, of the products it touched.
    pub cb_seqs: Vec<(MarketId, u64)>,
}

/// What the connections get at once: the batches committed since the last delivery, in order
/// (at most one [`crate::ws::WsConfig::coalesce`] window's worth).
pub(crate) struct Rendered {
    /// The renderer fell behind the committed stream and lost batches: subscribers that need
    /// every message must start over.
    pub lost: bool,
    pub parts: Vec<Part>,
}

/// The fan-out runtime and the rendered stream (part of [`crate::ws::Hub`]).
pub struct Fanout {
    runtime: Option<tokio::runtime::Runtime>,
    /// The renderer's own thread: it renders each batch as it is committed, whatever the
    /// connections are doing.
    render_runtime: Option<tokio::runtime::Runtime>,
    /// The thread that takes the read model's lock for connections, at normal priority.
    model_pool: rayon_core::ThreadPool,
    /// The runtime that serves HTTP (where connections are accepted): what a connection awaits
    /// that takes the model's lock (authentication) runs there.
    home: OnceLock<tokio::runtime::Handle>,
    /// The latest level-2 snapshot rendered per (feed, market), with the book sequence it
    /// shows: connections that fell behind together resynchronise from one rendering.
    /// Read without any lock (a connection's thread must never wait for one a normal thread
    /// may hold, nor hold one a normal thread waits for); replaced whole when one changes.
    snapshots: arc_swap::ArcSwap<std::collections::HashMap<(u8, MarketId), (u64, Message)>>,
    stream: OnceLock<broadcast::Sender<Arc<Rendered>>>,
    /// Open connections of each feed.
    pub(crate) native_conns: AtomicUsize,
    pub(crate) coinbase_conns: AtomicUsize,
    /// Connections that want each kind of message ([`crate::ws::Renderer`]'s and
    /// [`crate::coinbase::feed::Renderer`]'s kinds): the renderer makes only what someone reads.
    pub(crate) native_interest: [AtomicUsize; 3],
    pub(crate) coinbase_interest: [AtomicUsize; 4],
    /// The Coinbase feed's product sequences as the renderer last left them.
    pub(crate) cb_seqs: parking_lot::Mutex<BTreeMap<MarketId, u64>>,
}

impl Default for Fanout {
    fn default() -> Fanout {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(fanout_threads())
            .thread_name("kinko-fanout")
            .on_thread_start(yield_to_order_entry)
            .enable_all()
            .build()
            .expect("cannot start the WebSocket fan-out runtime");
        let render_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kinko-render")
            .enable_all()
            .build()
            .expect("cannot start the WebSocket renderer runtime");
        // Built here, by a thread of normal priority: a new thread takes its creator's niceness.
        let model_pool = rayon_core::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "kinko-wsmodel".into())
            .build()
            .expect("cannot start the WebSocket model thread");
        Fanout {
            runtime: Some(runtime),
            render_runtime: Some(render_runtime),
            model_pool,
            home: OnceLock::new(),
            snapshots: Default::default(),
            stream: OnceLock::new(),
            native_conns: AtomicUsize::new(0),
            coinbase_conns: AtomicUsize::new(0),
            native_interest: Default::default(),
            coinbase_interest: Default::default(),
            cb_seqs: parking_lot::Mutex::new(BTreeMap::new()),
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        // May run inside another runtime: never block here.
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
        if let Some(r) = self.render_runtime.take() {
            r.shutdown_background();
        }
    }
}

impl Fanout {
    /// Runs a connection on the fan-out runtime and resolves when it ends.
    pub(crate) async fn run<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let _ = self.home.get_or_init(|| h);
        }
        match &self.runtime {
            Some(r) => {
                let _ = r.spawn(f).await;
            }
            None => f.await,
        }
    }

    /// The level-2 snapshot of `market` for `feed` rendered last, with its book sequence, if it
    /// shows at least book sequence `at_least`. Takes no lock at all: a connection that dropped
    /// updates up to `at_least` can resynchronise from it (the updates after it are still ahead
    /// of that connection in the stream), so connections that fell behind together take the read
    /// model's lock once between them.
    pub(crate) fn cached_snapshot(
        &self,
        feed: u8,
        market: MarketId,
        at_least: u64,
    ) -> Option<(u64, Message)> {
        match self.snapshots.load().get(&(feed, market)) {
            Some((s, m)) if *s >= at_least => Some((*s, m.clone())),
            _ => None,
        }
    }

    /// The level-2 snapshot of `market` at book sequence `seq` for `feed` (0 native, 1 Coinbase):
    /// the one rendered last if it shows that sequence, else `make`'s (kept for the next).
    /// Called with the read model's lock held, so that `seq` is the book's current sequence.
    pub(crate) fn snapshot(
        &self,
        feed: u8,
        market: MarketId,
        seq: u64,
        make: impl FnOnce() -> Message,
    ) -> Message {
        if let Some((s, m)) = self.snapshots.load().get(&(feed, market)) {
            if *s == seq {
                return m.clone();
            }
        }
        let m = make();
        self.snapshots.rcu(|cache| {
            let mut cache = std::collections::HashMap::clone(cache);
            match cache.get(&(feed, market)) {
                Some((s, _)) if *s > seq => {}
                _ => {
                    cache.insert((feed, market), (seq, m.clone()));
                }
            }
            cache
        });
        m
    }

    /// The rendered stream. Subscribe before taking a snapshot: everything committed after the
    /// snapshot then arrives on it (batches rendered before were applied before the snapshot).
    pub(crate) fn subscribe(&self, g: &AppState) -> broadcast::Receiver<Arc<Rendered>> {
        self.stream
            .get_or_init(|| {
                let (tx, _) = broadcast::channel(kinko_engine::replica::EVENT_BUFFER_BATCHES);
                let rx = g.read.subscribe();
                let task = render_loop(Arc::downgrade(g), rx, tx.clone());
                match &self.render_runtime {
                    Some(r) => drop(r.spawn(task)),
                    None => drop(tokio::spawn(task)),
                }
                tx
            })
            .subscribe()
    }
}

/// Puts the calling thread behind every other thread of the host: Linux's `SCHED_IDLE`, which
/// runs only on a core no normal thread wants, and gives way at once when one wakes (a nice-19
/// thread may still finish its slice first, which delays every hop of an order). Changing to
/// `SCHED_IDLE` needs no privilege; a failure is logged and leaves the thread as it was. Marks
/// the thread as one that never holds the read model's lock.
fn yield_to_order_entry() {
    kinko_engine::replica::no_model_lock_here();
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
            ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
            tracing::warn!(error = ?e, "cannot put the WebSocket fan-out thread behind order entry");
        }
    }
}

impl Fanout {
    /// Runs `f`, which may take the read model's lock, on a thread of normal priority; the
    /// calling (fan-out) thread waits for it. Keep `f` short: every connection shares it.
    pub(crate) fn locked<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.model_pool.install(f)
    }

    /// Runs `f`, which may take the read model's lock while it awaits, on the runtime that
    /// serves HTTP; `None` if that runtime is shutting down.
    pub(crate) async fn at_home<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        match self.home.get() {
            Some(h) => h.spawn(f).await.ok(),
            None => Some(f.await),
        }
    }
}

/// Moves a connection's interest from `have` to `want` in the shared `counters`.
pub(crate) fn track(counters: &[AtomicUsize], have: &mut [bool], want: &[bool]) {
    for ((c, h), w) in counters.iter().zip(have.iter_mut()).zip(want) {
        if *h != *w {
            if *w {
                c.fetch_add(1, Ordering::SeqCst);
            } else {
                c.fetch_sub(1, Ordering::SeqCst);
            }
            *h = *w;
        }
    }
}

fn wanted<const N: usize>(counters: &[AtomicUsize; N]) -> [bool; N] {
    std::array::from_fn(|i| counters[i].load(Ordering::SeqCst) > 0)
}

/// The read side's lock, as the renderer holds it.
pub(crate) type ModelGuard<'a> = parking_lot::RwLockReadGuard<'a, kinko_engine::replica::ReadModel>;

/// Events rendered between chances for the replica to apply the next batch.
const RENDER_EVENTS_PER_LOCK: usize = 64;

/// Every [`RENDER_EVENTS_PER_LOCK`] events, lets a waiting replica take the lock, so that
/// rendering a large batch never holds up the engine (and with it order entry). What the
/// renderer reads of the model is immutable (market specs, order ids, sides, types, fee
/// rates) or meant as the latest (tickers).
pub(crate) fn let_the_replica_in(guard: &mut ModelGuard<'_>, event: usize) {
    if event > 0 && event.is_multiple_of(RENDER_EVENTS_PER_LOCK) {
        parking_lot::RwLockReadGuard::bump(guard);
    }
}

/// Counts a connection of one feed while it lives.
pub(crate) struct FeedConn<'a>(&'a AtomicUsize);

impl<'a> FeedConn<'a> {
    pub fn new(n: &'a AtomicUsize) -> FeedConn<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        FeedConn(n)
    }
}

impl Drop for FeedConn<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Most batches delivered together.
const PARTS_MAX: usize = 256;

async fn render_loop(
    gateway: Weak<crate::Gateway>,
    mut rx: broadcast::Receiver<Arc<BatchEvents>>,
    tx: broadcast::Sender<Arc<Rendered>>,
) {
    let mut native = crate::ws::Renderer::default();
    let mut coinbase = crate::coinbase::feed::Renderer::default();
    let mut last_sent: Option<tokio::time::Instant> = None;
    loop {
        let mut r = Rendered {
            lost: false,
            parts: Vec::new(),
        };
        let first = rx.recv().await;
        let Some(g) = gateway.upgrade() else { return };
        let window = g.config.ws.coalesce;
        drop(g);
        let mut next = first;
        // Render what was committed; wait for more until the window since the last delivery is
        // over (a batch after a quiet spell goes out at once).
        let until = last_sent.map(|t| t + window);
        loop {
            match next {
                Ok(b) => {
                    let Some(g) = gateway.upgrade() else { return };
                    r.parts.push(render(&g, &mut native, &mut coinbase, b));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    r.lost = true;
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
            if r.parts.len() >= PARTS_MAX {
                break;
            }
            next = match rx.try_recv() {
                Ok(b) => Ok(b),
                Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                Err(broadcast::error::TryRecvError::Closed) => Err(broadcast::error::RecvError::Closed),
                Err(broadcast::error::TryRecvError::Empty) => match until {
                    Some(until) if tokio::time::Instant::now() < until => {
                        match tokio::time::timeout_at(until, rx.recv()).await {
                            Ok(n) => n,
                            Err(_) => break,
                        }
                    }
                    _ => break,
                },
            };
        }
        if r.lost {
            r.parts.clear();
        }
        let _ = tx.send(Arc::new(r));
        last_sent = Some(tokio::time::Instant::now());
    }
}

/// Renders one committed batch for the feeds that have readers.
fn render(
    g: &crate::Gateway,
    native: &mut crate::ws::Renderer,
    coinbase: &mut crate::coinbase::feed::Renderer,
    batch: Arc<BatchEvents>,
) -> Part {
    let mut p = Part {
        batch,
        native: Vec::new(),
        coinbase: Vec::new(),
        cb_seqs: Vec::new(),
    };
    let native_want = wanted(&g.ws.fanout.native_interest);
    let coinbase_want = wanted(&g.ws.fanout.coinbase_interest);
    let mut m = g.read.model();
    if native_want.iter().any(|w| *w) {
        native.render(&mut m, &p.batch, native_want, &mut p.native);
    }
    // The product sequences advance whether or not anyone listens.
    coinbase.render(&mut m, &p.batch, coinbase_want, &mut p.coinbase, &mut p.cb_seqs);
    drop(m);
    if !p.cb_seqs.is_empty() {
        let mut seqs = g.ws.fanout.cb_seqs.lock();
        for (id, s) in &p.cb_seqs {
            seqs.insert(*id, *s);
        }
    }
    p
}

/// Why a connection ends.
pub(crate) enum End {
    /// The socket failed or the client went away without a close frame.
    Gone,
    /// The client sent a close frame (answered with one).
    Closed,
    /// Fell behind (a message that may not be dropped did not fit, the stream lagged, or no
    /// pong came back).
    Slow(&'static str),
    /// A binary frame (1003) or one that could not be read, e.g. too large (1008).
    Refused(u16),
    Shutdown,
}

/// A connection's bounded outgoing queue.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Message>,
    wait: Duration,
    capacity: usize,
}

impl Outbox {
    pub fn new(g: &AppState) -> (Outbox, mpsc::Receiver<Message>) {
        let capacity = g.config.ws.queue_messages.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        (
            Outbox {
                tx,
                wait: g.config.ws.queue_wait,
                capacity,
            },
            rx,
        )
    }

    /// Queues a message that must not be lost; waits at most `queue_wait` for room.
    pub async fn push(&self, m: Message) -> Result<(), End> {
        let m = match self.tx.try_send(m) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(End::Gone),
            Err(mpsc::error::TrySendError::Full(m)) => m,
        };
        match tokio::time::timeout(self.wait, self.tx.send(m)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Slow(
                "the connection fell too far behind and is being closed; reconnect and resubscribe",
            )),
        }
    }

    /// Queues a message a later one supersedes (a book update, a ticker, a ping) if there is
    /// room; returns whether it was queued.
    pub fn offer(&self, m: Message) -> Result<bool, End> {
        match self.tx.try_send(m) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(End::Gone),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
        }
    }

    /// Whether at least half the queue is free (a stale book's fresh snapshot may go out).
    pub fn has_room(&self) -> bool {
        self.tx.capacity() * 2 >= self.capacity
    }

    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

pub(crate) fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Writes queued messages, a batch per flush, until the connection ends; then writes `last`
/// (if given) with a deadline. A batch that makes no progress for `write_stall` ends the
/// connection as a slow consumer: `slow` (the feed's `SLOW_CONSUMER` message) and a close go
/// out, if the client reads them in time. Queued messages not yet written are dropped.
pub(crate) async fn write(
    g: AppState,
    mut sink: Writer,
    mut queue: mpsc::Receiver<Message>,
    mut last: oneshot::Receiver<Vec<Message>>,
    slow: Message,
) {
    let stall = g.config.ws.write_stall;
    let final_write = g.config.ws.final_write;
    let mut batch: Vec<Message> = Vec::with_capacity(WRITE_BATCH_MAX);
    loop {
        // Everything queued, up to the batch size, in one go (one release of the queue's room).
        let n = tokio::select! {
            biased;
            l = &mut last => return finish(sink, queue, l.ok(), final_write).await,
            n = queue.recv_many(&mut batch, WRITE_BATCH_MAX) => n,
        };
        if n == 0 {
            // The connection task is ending: its last words follow.
            let l = last.await.ok();
            return finish(sink, queue, l, final_write).await;
        }
        let wrote = tokio::select! {
            biased;
            l = &mut last => return finish(sink, queue, l.ok(), final_write).await,
            r = tokio::time::timeout(stall, sink.send(&batch)) => r,
        };
        batch.clear();
        match wrote {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                g.metrics.ws_slow_disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    stall_ms = stall.as_millis() as u64,
                    "websocket client made no progress; disconnected as a slow consumer"
                );
                return finish(
                    sink,
                    queue,
                    Some(vec![slow, close(close_code::POLICY, "slow consumer")]),
                    final_write,
                )
                .await;
            }
        }
    }
}

/// How long the client has, once the last words are written, to close its side.
pub const LINGER: Duration = Duration::from_secs(1);

/// Waits for the writer to write the last words, reading (and discarding) what the client
/// still sends until it closes its side, at most [`LINGER`] after the writer is done: a socket
/// closed with unread bytes in it is reset, and a reset makes the client's kernel discard what
/// it had not yet read, the `SLOW_CONSUMER` message and the close frame among them.
pub(crate) async fn close_out(
    mut writer: tokio::task::JoinHandle<()>,
    mut reader: crate::wsio::Reader,
    final_write: Duration,
) {
    let drain = async { while let Some(Ok(_)) = reader.next().await {} };
    tokio::pin!(drain);
    tokio::select! {
        _ = &mut drain => {
            let _ = writer.await;
        }
        _ = &mut writer => {
            let _ = tokio::time::timeout(LINGER.min(final_write), drain).await;
        }
    }
}

async fn finish(
    mut sink: Writer,
    queue: mpsc::Receiver<Message>,
    last: Option<Vec<Message>>,
    deadline: Duration,
) {
    drop(queue);
    let Some(last) = last else { return };
    let _ = tokio::time::timeout(deadline, async {
        sink.send(&last).await?;
        sink.shutdown().await;
        Ok::<(), std::io::Error>(())
    })
    .await;
}
