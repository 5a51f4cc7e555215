//! Running the gateway: built on an engine [`Node`] (recovery, read side and sequencer, started
//! by `kinko_engine::launch`), served over HTTP on a tokio task. Shared by `kinko serve`, the
//! benchmarks and the tests (which run real servers on loopback sockets).

use crate::vault::Vault;
use crate::{ApiConfig, AppState, Gateway};
use kinko_engine::launch::Node;
use kinko_engine::ports::ChainAdapter;
use std::net::SocketAddr;
use std::sync::Arc;

/// The gateway over `node`'s sequencer and read side.
pub fn gateway(node: &Node, vault: Vault, config: ApiConfig, chain: Arc<dyn ChainAdapter>) -> AppState {
    Gateway::new(node.sequencer.handle(), node.read.clone(), vault, config, chain)
}

/// Journals the relying party the gateway serves (its origins name the bound port unless
/// configured), so that the engine verifies admins' passkey assertions against it.
/// A cluster standby takes no writes: the relying party is the one the primary journaled (a
/// cluster's nodes are configured with the same `identity` origins).
async fn relying_party(gateway: &AppState) -> std::io::Result<()> {
    match crate::stepup::journal_relying_party(gateway).await {
        Ok(()) => Ok(()),
        Err(e) if e.code == "NOT_LEADER" => {
            tracing::info!("cluster standby: the relying party is the one the primary journaled");
            Ok(())
        }
        Err(e) => Err(std::io::Error::other(format!(
            "journaling the relying party: {} {}",
            e.code, e.message
        ))),
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
        relying_party(&gateway).await?;
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

    /// Serves on `listener`, bound beforehand (so that a port in use is found before anything
    /// else is created). It must be in non-blocking mode.
    pub async fn start_on(gateway: AppState, listener: std::net::TcpListener) -> std::io::Result<Http> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        gateway.set_bound_port(addr.port());
        relying_party(&gateway).await?;
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
