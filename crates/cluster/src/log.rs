//! [`JetStreamLog`]: the stream, the lease, publishing and following.

use crate::wire;
use async_nats::jetstream::{self, kv, stream};
use async_nats::HeaderMap;
use kinko_engine::replication::{Follow, ReplBatch, ReplicateError, Replicator};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The key of the lease in its bucket.
const LEASE_KEY: &str = "leader";
/// Most batches one `follow` call hands the sequencer.
const FOLLOW_BATCHES_MAX: u64 = 256;
/// How long a stream or bucket may take to appear (a new cluster electing its leaders).
const SETUP_WAIT: Duration = Duration::from_secs(30);

/// `[cluster]`: where the NATS servers are and what this node is called.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://127.0.0.1:4222`, …).
    pub servers: Vec<String>,
    /// This node's name (unique in the cluster).
    pub node: String,
    /// The API address clients are sent to when this node leads (`http://host:port`).
    pub advertise: String,
    /// The JetStream stream holding the journal.
    pub stream: String,
    /// The key-value bucket holding the lease.
    pub bucket: String,
    /// Replicas of the stream and the bucket (3 in production).
    pub replicas: usize,
    /// The lease's time to live: a primary that cannot renew it for this long stops writing,
    /// and a standby takes over at most this long after the primary's last renewal.
    pub lease_ttl: Duration,
    /// How long one publish waits for the stream's acknowledgement before it is retried.
    pub publish_timeout: Duration,
    /// A standby takes the lease only after another node has held it (epoch ≥ 1 seen), so it
    /// never becomes the first primary of a new cluster.
    pub standby: bool,
}

impl ClusterConfig {
    pub fn new(servers: Vec<String>, node: impl Into<String>, advertise: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            servers,
            node: node.into(),
            advertise: advertise.into(),
            stream: "KINKO_JOURNAL".into(),
            bucket: "kinko_lease".into(),
            replicas: 3,
            lease_ttl: Duration::from_millis(10_000),
            publish_timeout: Duration::from_millis(1_000),
            standby: false,
        }
    }

    fn subject(&self) -> String {
        format!("kinko.journal.{}", self.stream.to_ascii_lowercase())
    }
}

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot start the cluster client's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect { servers: String, reason: String },
    #[error("JetStream stream or lease bucket not available within {0:?}: {1}")]
    Setup(Duration, String),
}

/// The lease's value.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LeaseValue {
    node: String,
    epoch: u64,
    api: String,
}

/// What this node knows of leadership, shared with the renewal task and with services that
/// must act only for the current epoch (custody, the signer's client).
#[derive(Debug, Default)]
pub struct Leadership {
    /// This node holds the lease.
    held: AtomicBool,
    /// The epoch it holds (or held last).
    epoch: AtomicU64,
    /// Until when (monotonic) the last successful renewal keeps it valid, and the revision.
    lease: Mutex<Option<(Instant, u64)>>,
    /// The leader's advertised API address, as last seen.
    leader: Mutex<String>,
    /// Renewals that succeeded (for tests and metrics).
    pub renewals: AtomicU64,
}

impl Leadership {
    /// Whether this node leads `epoch` right now: it holds the lease and the last renewal is
    /// still within its TTL.
    pub fn is_current(&self, epoch: u64) -> bool {
        self.leads() && self.epoch.load(Ordering::Acquire) == epoch
    }

    /// Whether this node holds a lease that has not lapsed.
    pub fn leads(&self) -> bool {
        self.held.load(Ordering::Acquire)
            && self.lease.lock().is_some_and(|(until, _)| Instant::now() < until)
    }

    /// The epoch this node leads or led last (0 = never).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The leader's API address as last seen (empty when unknown).
    pub fn leader(&self) -> String {
        self.leader.lock().clone()
    }

    fn lose(&self, why: &str) {
        if self.held.swap(false, Ordering::AcqRel) {
            tracing::error!(reason = why, epoch = self.epoch(), "cluster: lease lost");
        }
    }
}

/// The replicated log on JetStream. Owns a small runtime of its own (one worker thread): the
/// sequencer calls it synchronously, the lease renewal runs on it as a task.
pub struct JetStreamLog {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    stream: stream::Stream,
    kv: kv::Store,
    cfg: ClusterConfig,
    subject: String,
    lead: Arc<Leadership>,
    /// Stream sequence of the last batch this node applied or published.
    stream_seq: u64,
    /// Journal sequence of the last record of that batch.
    journal_seq: u64,
    /// The newest epoch seen in the stream or the lease.
    epoch_seen: u64,
    /// The stream's last sequence when this node last looked (for the lag it reports).
    stream_last: u64,
    /// When the lease was last looked at (a standby looks every TTL/4).
    lease_checked: Option<Instant>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl JetStreamLog {
    /// Connects, and creates the stream and the lease bucket if they do not exist yet (waiting,
    /// bounded, for a new cluster to elect its leaders).
    pub fn connect(cfg: ClusterConfig) -> Result<JetStreamLog, ClusterError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kinko-cluster")
            .enable_all()
            .build()
            .map_err(ClusterError::Runtime)?;
        let servers = cfg.servers.join(",");
        let addrs = cfg
            .servers
            .iter()
            .map(|s| s.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClusterError::Connect {
                servers: servers.clone(),
                reason: e.to_string(),
            })?;
        let client = rt
            .block_on(
                async_nats::ConnectOptions::new()
                    .name(format!("kinko-{}", cfg.node))
                    .connection_timeout(Duration::from_secs(5))
                    .retry_on_initial_connect()
                    .connect(addrs),
            )
            .map_err(|e| ClusterError::Connect {
                servers: servers.clone(),
                reason: e.to_string(),
            })?;
        let js = {
            let _in_runtime = rt.enter();
            jetstream::new(client)
        };
        let subject = cfg.subject();
        let (stream, kv) = rt.block_on(setup(&js, &cfg, &subject))?;
        Ok(JetStreamLog {
            rt,
            js,
            stream,
            kv,
            subject,
            cfg,
            lead: Arc::new(Leadership::default()),
            stream_seq: 0,
            journal_seq: 0,
            epoch_seen: 0,
            stream_last: 0,
            lease_checked: None,
            renewer: None,
        })
    }

    /// What this node knows of leadership (shared; custody checks it before acting).
    pub fn leadership(&self) -> Arc<Leadership> {
        self.lead.clone()
    }

    /// Reads the stream's messages after `self.stream_seq`, at most [`FOLLOW_BATCHES_MAX`].
    async fn fetch(&mut self, last: u64) -> Result<Vec<(u64, u64, Option<ReplBatch>)>, String> {
        let mut out = Vec::new();
        let end = last.min(self.stream_seq + FOLLOW_BATCHES_MAX);
        for seq in self.stream_seq + 1..=end {
            let m = tokio::time::timeout(self.cfg.publish_timeout, self.stream.get_raw_message(seq))
                .await
                .map_err(|_| format!("reading stream message {seq} timed out"))?
                .map_err(|e| format!("reading stream message {seq}: {e}"))?;
            let epoch = m
                .headers
                .get(wire::EPOCH_HEADER)
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .unwrap_or(0);
            if m.payload.is_empty() {
                // A fence: a new leader's mark, no records.
                self.epoch_seen = self.epoch_seen.max(epoch);
                out.push((seq, epoch, None));
                continue;
            }
            let b = wire::decode(&m.payload).map_err(|e| format!("stream message {seq}: {e}"))?;
            out.push((seq, epoch, Some(b)));
        }
        Ok(out)
    }

    async fn last_stream_seq(&mut self) -> Result<u64, String> {
        let info = tokio::time::timeout(self.cfg.publish_timeout, self.stream.info())
            .await
            .map_err(|_| "stream info timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(info.state.last_sequence)
    }

    /// A standby that has applied the whole stream: takes the lease if nobody holds it.
    async fn try_lead(&mut self) -> Option<u64> {
        let entry = match tokio::time::timeout(self.cfg.publish_timeout, self.kv.entry(LEASE_KEY)).await {
            Ok(Ok(e)) => e,
            _ => return None,
        };
        if let Some(e) = entry.filter(|e| e.operation == kv::Operation::Put) {
            if let Ok(v) = serde_json::from_slice::<LeaseValue>(&e.value) {
                self.epoch_seen = self.epoch_seen.max(v.epoch);
                *self.lead.leader.lock() = v.api;
            }
            return None;
        }
        if self.cfg.standby && self.epoch_seen == 0 {
            return None;
        }
        let epoch = self.epoch_seen + 1;
        let value = LeaseValue {
            node: self.cfg.node.clone(),
            epoch,
            api: self.cfg.advertise.clone(),
        };
        let bytes = serde_json::to_vec(&value).expect("the lease value serializes");
        let sent = Instant::now();
        match tokio::time::timeout(self.cfg.publish_timeout, self.kv.create(LEASE_KEY, bytes.into())).await {
            Ok(Ok(revision)) => {
                *self.lead.lease.lock() = Some((sent + self.cfg.lease_ttl, revision));
                self.lead.epoch.store(epoch, Ordering::Release);
                self.lead.held.store(true, Ordering::Release);
                *self.lead.leader.lock() = self.cfg.advertise.clone();
                self.epoch_seen = epoch;
                Some(epoch)
            }
            _ => None,
        }
    }

    /// Starts the task that renews the lease every TTL/3 while this node holds it.
    fn start_renewing(&mut self) {
        let kv = self.kv.clone();
        let lead = self.lead.clone();
        let ttl = self.cfg.lease_ttl;
        let value = LeaseValue {
            node: self.cfg.node.clone(),
            epoch: self.lead.epoch(),
            api: self.cfg.advertise.clone(),
        };
        let bytes: Vec<u8> = serde_json::to_vec(&value).expect("the lease value serializes");
        self.renewer = Some(self.rt.spawn(async move {
            let every = ttl / 3;
            while lead.held.load(Ordering::Acquire) {
                tokio::time::sleep(every).await;
                let Some((until, revision)) = *lead.lease.lock() else {
                    return;
                };
                if Instant::now() >= until {
                    lead.lose("the lease could not be renewed within its time to live");
                    return;
                }
                let sent = Instant::now();
                match tokio::time::timeout(every, kv.update(LEASE_KEY, bytes.clone().into(), revision)).await
                {
                    Ok(Ok(rev)) => {
                        *lead.lease.lock() = Some((sent + ttl, rev));
                        lead.renewals.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        lead.lose("another node holds the lease");
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cluster: lease renewal failed; retrying"),
                    Err(_) => tracing::warn!("cluster: lease renewal timed out; retrying"),
                }
            }
        }));
    }

    /// Publishes one batch with the expected last sequence; retried (same message id) while
    /// the lease lasts.
    async fn publish_batch(&mut self, b: &ReplBatch) -> Result<(), ReplicateError> {
        let epoch = self.lead.epoch();
        let msg_id = format!("{epoch}-{}", b.first_seq);
        let body: Vec<u8> = wire::encode(b);
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Sequence",
            self.stream_seq.to_string().as_str(),
        );
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        headers.insert(wire::EPOCH_HEADER, epoch.to_string().as_str());
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let sent = self
                .js
                .publish_with_headers(self.subject.clone(), headers.clone(), body.clone().into())
                .await;
            let outcome = match sent {
                Ok(ack) => tokio::time::timeout(self.cfg.publish_timeout, ack).await,
                Err(e) => Ok(Err(e)),
            };
            match outcome {
                Ok(Ok(ack)) => {
                    self.stream_seq = ack.sequence;
                    self.journal_seq = b.last_seq();
                    return Ok(());
                }
                Ok(Err(e)) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    // A retry may find its own first attempt stored: then it is committed.
                    if attempt > 1 && self.last_is_ours(&msg_id).await {
                        return Ok(());
                    }
                    self.lead.lose("the stream has a batch this node did not write");
                    return Err(ReplicateError::Fenced(self.lead.leader()));
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, attempt, "cluster: publish failed; retrying while the lease lasts")
                }
                Err(_) => tracing::warn!(
                    attempt,
                    "cluster: publish not acknowledged in time; retrying while the lease lasts"
                ),
            }
            if !self.lead.leads() {
                return Err(ReplicateError::Unknown(format!(
                    "no acknowledgement after {attempt} attempts and the lease has lapsed"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Appends an empty message with the expected last sequence: after it, no append made with
    /// an older view of the stream can succeed.
    async fn fence(&mut self) -> Result<(), String> {
        let epoch = self.lead.epoch();
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Sequence",
            self.stream_seq.to_string().as_str(),
        );
        headers.insert(
            "Nats-Msg-Id",
            format!("fence-{epoch}-{}-{}", self.cfg.node, self.stream_seq).as_str(),
        );
        headers.insert(wire::EPOCH_HEADER, epoch.to_string().as_str());
        let ack = self
            .js
            .publish_with_headers(self.subject.clone(), headers, Vec::new().into())
            .await
            .map_err(|e| e.to_string())?;
        let ack = tokio::time::timeout(self.cfg.publish_timeout, ack)
            .await
            .map_err(|_| "the fence was not acknowledged in time".to_owned())?
            .map_err(|e| e.to_string())?;
        self.stream_seq = ack.sequence;
        Ok(())
    }

    /// Whether the stream's last message is the one with `msg_id` (a retried publish whose
    /// first attempt was stored).
    async fn last_is_ours(&mut self, msg_id: &str) -> bool {
        let Ok(last) = self.last_stream_seq().await else {
            return false;
        };
        let Ok(Ok(m)) =
            tokio::time::timeout(self.cfg.publish_timeout, self.stream.get_raw_message(last)).await
        else {
            return false;
        };
        if m.headers.get("Nats-Msg-Id").map(|v| v.as_str()) == Some(msg_id) {
            self.stream_seq = last;
            true
        } else {
            false
        }
    }
}

async fn setup(
    js: &jetstream::Context,
    cfg: &ClusterConfig,
    subject: &str,
) -> Result<(stream::Stream, kv::Store), ClusterError> {
    let started = Instant::now();
    let mut last_err;
    loop {
        let s = js
            .get_or_create_stream(stream::Config {
                name: cfg.stream.clone(),
                subjects: vec![subject.to_owned()],
                num_replicas: cfg.replicas,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await;
        match s {
            Ok(stream) => {
                // The bucket's stream, made as the key-value layer makes it (history 1, the
                // lease's TTL as `max_age`); made directly because the client's own
                // `create_key_value` first asks for account details older servers lack.
                let bucket = js
                    .get_or_create_stream(stream::Config {
                        name: format!("KV_{}", cfg.bucket),
                        subjects: vec![format!("$KV.{}.>", cfg.bucket)],
                        max_messages_per_subject: 1,
                        max_age: cfg.lease_ttl,
                        duplicate_window: cfg.lease_ttl,
                        storage: stream::StorageType::File,
                        num_replicas: cfg.replicas,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: stream::DiscardPolicy::New,
                        ..Default::default()
                    })
                    .await;
                let store = match bucket {
                    Ok(_) => js
                        .get_key_value(cfg.bucket.clone())
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match store {
                    Ok(store) => return Ok((stream, store)),
                    Err(e) => last_err = e,
                }
            }
            Err(e) => last_err = e.to_string(),
        }
        if started.elapsed() > SETUP_WAIT {
            return Err(ClusterError::Setup(SETUP_WAIT, last_err));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Replicator for JetStreamLog {
    fn check_lead(&mut self) -> Result<(), ReplicateError> {
        if self.lead.leads() {
            Ok(())
        } else {
            self.lead.lose("the lease lapsed");
            Err(ReplicateError::Fenced(self.lead.leader()))
        }
    }

    fn publish(&mut self, batch: &ReplBatch) -> Result<(), ReplicateError> {
        let rt = self.rt.handle().clone();
        rt.block_on(self.publish_batch(batch))
    }

    fn follow(&mut self, after_seq: u64, head_hash: [u8; 32], wait: Duration) -> Follow {
        let rt = self.rt.handle().clone();
        let outcome = rt.block_on(async {
            let last = match self.last_stream_seq().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: cannot read the stream; waiting");
                    tokio::time::sleep(wait).await;
                    return Follow::Batches(Vec::new());
                }
            };
            self.stream_last = last;
            if last > self.stream_seq {
                let fetched = match self.fetch(last).await {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: cannot read the stream; waiting");
                        tokio::time::sleep(wait).await;
                        return Follow::Batches(Vec::new());
                    }
                };
                let mut out = Vec::with_capacity(fetched.len());
                let mut head = after_seq;
                for (seq, epoch, b) in fetched {
                    self.stream_seq = seq;
                    self.epoch_seen = self.epoch_seen.max(epoch);
                    let Some(b) = b else {
                        continue;
                    };
                    self.journal_seq = b.last_seq();
                    if b.last_seq() < head {
                        continue;
                    }
                    if b.last_seq() == head && out.is_empty() {
                        if b.head_hash != head_hash {
                            return Follow::Diverged(format!(
                                "the stream's record {head} is not this journal's record {head}"
                            ));
                        }
                        continue;
                    }
                    if b.first_seq <= head {
                        return Follow::Diverged(format!(
                            "the stream's batch {}..={} overlaps this journal's head {head}",
                            b.first_seq,
                            b.last_seq()
                        ));
                    }
                    head = b.last_seq();
                    out.push(b);
                }
                return Follow::Batches(out);
            }
            // Caught up with the stream: is the lease free?
            if after_seq > self.journal_seq {
                return Follow::Diverged(format!(
                    "this journal holds records up to {after_seq} that the stream does not"
                ));
            }
            let due = self
                .lease_checked
                .is_none_or(|t| t.elapsed() >= self.cfg.lease_ttl / 4);
            if self.lead.leads()
                || (due && {
                    self.lease_checked = Some(Instant::now());
                    let won = self.try_lead().await.is_some();
                    if won {
                        self.start_renewing();
                    }
                    won
                })
            {
                // Holding the lease and caught up: the fence makes the old leader's next
                // append fail; if it got one in first, read it and fence again.
                match self.fence().await {
                    Ok(()) => {
                        return Follow::Lead {
                            epoch: self.lead.epoch(),
                            node: self.cfg.node.clone(),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: fencing the stream failed; reading it again")
                    }
                }
            }
            tokio::time::sleep(wait).await;
            Follow::Batches(Vec::new())
        });
        outcome
    }

    fn leader(&self) -> String {
        self.lead.leader()
    }

    fn lag(&self) -> u64 {
        self.stream_last.saturating_sub(self.stream_seq)
    }

    fn epoch_seen(&self) -> u64 {
        self.epoch_seen.max(self.lead.epoch())
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}
