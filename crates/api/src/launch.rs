//! Starting the pieces in order: recovery, the read-side replica, the sequencer feeding it, the
//! gateway. Shared by `kinko serve` and the tests (which run real servers on loopback sockets).

use crate::chain::ChainAdapter;
use crate::read::ReadSide;
use crate::vault::Vault;
use crate::{ApiConfig, AppState, Gateway};
use kinko_engine::{recover, EngineConfig, RecoveryReport, Sequencer, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;

/// Committed batches the read side may fall behind before the sequencer waits for it.
pub const FEED_BATCHES_MAX: usize = 1_024;

/// The engine with its read side.
pub struct Node {
    pub sequencer: Sequencer,
    pub read: ReadSide,
    pub report: RecoveryReport,
}

/// Recovers the data directory and starts the sequencer and the read side.
pub fn open(cfg: &EngineConfig) -> anyhow::Result<Node> {
    let (engine, journal, report) = recover(cfg)?;
    let (read, feed) = ReadSide::start(engine.clone(), FEED_BATCHES_MAX);
    let sequencer = Sequencer::start_with_feed(engine, journal, cfg.clone(), SystemClock, Some(feed))
        .map_err(anyhow::Error::msg)?;
    Ok(Node {
        sequencer,
        read,
        report,
    })
}

impl Node {
    pub fn gateway(&self, vault: Vault, config: ApiConfig, chain: Arc<dyn ChainAdapter>) -> AppState {
        Gateway::new(self.sequencer.handle(), self.read.clone(), vault, config, chain)
    }
}

/// An HTTP server running on a tokio task.
pub struct Http {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Http {
    /// Binds `gateway.config.listen` and serves until [`Http::stop`].
    pub async fn start(gateway: AppState) -> std::io::Result<Http> {
        let listener = tokio::net::TcpListener::bind(gateway.config.listen).await?;
        let addr = listener.local_addr()?;
        gateway.set_bound_port(addr.port());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve(listener, gateway, async move {
            let _ = rx.await;
        }));
        Ok(Http {
            addr,
            stop: Some(tx),
            task,
        })
    }

    /// Stops accepting, drains in-flight requests (bounded by the shutdown timeout).
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or(Ok(()))
    }
}
