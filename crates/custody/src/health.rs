//! What the custody loop of one asset tells the process's health registry after each poll
//! (`kinko_engine::health`, the registry behind `/ready`, `/metrics` and the withdrawal views'
//! `waiting_reason`), and the fail-closed rule of reconciliation.
//!
//! Components, each up or down with a reason that names no secret:
//! - `node:ASSET` — the node answered the probe that starts each poll ([`Custody::probe_node`],
//!   2 s) and every call after it (Degraded when down);
//! - `signer:ASSET` — the signer answered (a `status` probe each poll, 2 s), and has not halted
//!   signing (Degraded);
//! - `custody:ASSET` — the poll's bookkeeping steps and the cursor file all succeeded (Degraded);
//! - `reconcile:ASSET` — reconciliation ran (Degraded when down). After
//!   `reconcile_failures_max` failures in a row the asset's withdrawals are halted and an
//!   incident opened ([`Custody::fail_closed`]); it stays Degraded, because `/ready` going 503
//!   would take trading of every asset out of service for one asset's node while withdrawals
//!   are already stopped. Only when the halt itself cannot be recorded (theft detection blind
//!   *and* withdrawals still on) does it become Critical;
//! - `hot:ASSET` — the hot wallet can pay the withdrawals waiting for it (Degraded; down means
//!   a refill from cold is needed).

use crate::error::CustodyError;
use crate::service::{now_ns, Custody};
use kinko_chain::rpc::{RpcError, RPC_WALLET_NOT_FOUND};
use kinko_core::wallet::WithdrawalStatus;
use kinko_core::AssetId;
use kinko_engine::health::Severity;
use kinko_signer_proto::client::SignerClient;
use kinko_signer_proto::protocol::{Request, Response};
use std::time::Duration;

/// How long the signer probe waits (connect, ask, answer): a hung signer must not stall the
/// poll for the client's full call timeout.
pub const SIGNER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the node probe at the start of each poll waits.
pub const NODE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A waiting withdrawal needs at least its amount plus this many vbytes of fee (one input, two
/// outputs, rounded up) from the hot wallet.
const WITHDRAWAL_VBYTES_MIN: u64 = 150;

/// The component names of `asset`.
pub fn node(asset: &str) -> String {
    format!("node:{asset}")
}
pub fn signer(asset: &str) -> String {
    format!("signer:{asset}")
}
pub fn custody(asset: &str) -> String {
    format!("custody:{asset}")
}
pub fn reconcile(asset: &str) -> String {
    format!("reconcile:{asset}")
}
pub fn hot(asset: &str) -> String {
    format!("hot:{asset}")
}
/// Down while the hot wallet is above its limit and the sweep to cold waits for company funds.
pub fn sweep(asset: &str) -> String {
    format!("sweep:{asset}")
}

/// Which outside party an error comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Node,
    Signer,
    Engine,
    Kinko,
}

fn part(e: &CustodyError) -> Part {
    use CustodyError as E;
    match e {
        E::Rpc { .. }
        | E::Import { .. }
        | E::ScriptHex(_)
        | E::Txid(_)
        | E::Outpoint(_)
        | E::TxDecode { .. }
        | E::TxidWrong(_)
        | E::TxidMismatch { .. }
        | E::ReconcileBlind(_) => Part::Node,
        E::SignerUnreachable { .. } | E::Signer(_) | E::SignerAnswer { .. } | E::SignerTxChanged(_) => {
            Part::Signer
        }
        E::Engine(_)
        | E::Refused { .. }
        | E::UnexpectedReply { .. }
        | E::AssetUndefined(_)
        | E::NotLeader(_) => Part::Engine,
        _ => Part::Kinko,
    }
}

/// The node no longer has our watch-only wallets loaded (restarted, or replaced by another).
fn wallet_missing(e: &CustodyError) -> bool {
    matches!(
        e,
        CustodyError::Rpc {
            source: RpcError::Node {
                code: RPC_WALLET_NOT_FOUND,
                ..
            },
            ..
        }
    )
}

/// A reason short enough for a status line (the errors carry no secret: the RPC password is
/// never in them, see `kinko_chain::rpc`).
fn reason(e: &CustodyError) -> String {
    e.to_string()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect()
}

impl Custody {
    /// Asks the node its height with a short time limit: a node that does not answer fails
    /// the poll at once (bookkeeping and reconciliation both wait for it), instead of after
    /// every call's full timeout.
    pub(crate) fn probe_node(&self) -> Result<(), CustodyError> {
        self.probe
            .get_block_count()
            .map(|_| ())
            .map_err(|e| crate::error::rpc_err("getblockcount (probe)", e))
    }

    /// Reports one poll's outcome: `books` (imports and bookkeeping), `checked`
    /// (reconciliation, when on), `saved` (the cursor file).
    pub(crate) fn report(
        &mut self,
        asset: AssetId,
        books: &Result<(), CustodyError>,
        checked: Option<&Result<(), CustodyError>>,
        saved: &Result<(), CustodyError>,
    ) {
        let code = self.cfg.asset.clone();
        let errors: Vec<&CustodyError> = [books.as_ref().err(), checked.and_then(|c| c.as_ref().err())]
            .into_iter()
            .flatten()
            .collect();
        match errors.iter().find(|e| part(e) == Part::Node) {
            Some(e) => {
                self.health.down(&node(&code), Severity::Degraded, reason(e));
            }
            None => self.health.up(&node(&code), Severity::Degraded),
        }
        if errors.iter().any(|e| wallet_missing(e)) {
            // Load or create the wallets and import every range again on the next poll.
            tracing::warn!(asset = %code, "the node lost our watch-only wallets; loading and importing them again");
            self.wallets_ready = false;
            self.imported.clear();
        }
        self.report_signer(books);
        match books.as_ref().err().or(saved.as_ref().err()) {
            Some(e) => {
                self.health.down(&custody(&code), Severity::Degraded, reason(e));
            }
            None => self.health.up(&custody(&code), Severity::Degraded),
        }
        if let Some(c) = checked {
            self.report_reconcile(asset, c);
        }
        if books.is_ok() {
            self.report_hot(asset);
        }
    }

    fn report_signer(&self, books: &Result<(), CustodyError>) {
        let name = signer(&self.cfg.asset);
        if let Err(e) = books {
            if part(e) == Part::Signer {
                self.health.down(&name, Severity::Degraded, reason(e));
                return;
            }
        }
        let probe = SignerClient::connect_with_timeout(&self.cfg.signer_socket, SIGNER_PROBE_TIMEOUT)
            .map_err(|e| format!("signer unreachable: {e}"))
            .and_then(|mut c| c.call(&Request::Status).map_err(|e| format!("signer: {e}")));
        match probe {
            Ok(Response::Status { halted: None, .. }) => self.health.up(&name, Severity::Degraded),
            Ok(Response::Status {
                halted: Some(why), ..
            }) => {
                let why: String = why.chars().filter(|c| !c.is_control()).take(200).collect();
                self.health.down(
                    &name,
                    Severity::Degraded,
                    format!("the signer has halted signing: {why}"),
                );
            }
            Ok(_) => {
                self.health.down(
                    &name,
                    Severity::Degraded,
                    "the signer answered status unexpectedly",
                );
            }
            Err(why) => {
                self.health.down(&name, Severity::Degraded, why);
            }
        }
    }

    /// Counts reconciliation failures in a row; at the limit, fails closed.
    fn report_reconcile(&mut self, asset: AssetId, checked: &Result<(), CustodyError>) {
        let name = reconcile(&self.cfg.asset);
        let Err(e) = checked else {
            self.health.up(&name, Severity::Degraded);
            return;
        };
        let why = reason(e);
        let failures = self.health.down(&name, Severity::Degraded, why.clone());
        if failures < u64::from(self.cfg.reconcile_failures_max.max(1)) {
            return;
        }
        if let Err(halt) = self.fail_closed(asset, failures, &why) {
            tracing::error!(asset = %self.cfg.asset, error = %halt,
                "CRITICAL: reconciliation is blind and withdrawals could not be halted");
            self.health.down(
                &name,
                Severity::Critical,
                format!("{why}; withdrawals could not be halted: {}", reason(&halt)),
            );
        }
    }

    /// Whether the hot wallet can pay the withdrawals still waiting after this poll's sends.
    fn report_hot(&mut self, asset: AssetId) {
        let name = hot(&self.cfg.asset);
        let now = now_ns();
        let smallest = self.link.view(|e| {
            e.wallet()
                .withdrawals()
                .iter()
                .filter(|w| {
                    w.asset == asset && w.status != WithdrawalStatus::Signing && w.ready_for_signing(now)
                })
                .map(|w| w.amount.0)
                .min()
        });
        let Some(smallest) = smallest else {
            self.health.up(&name, Severity::Degraded);
            return;
        };
        let Ok(utxos) = self.hot_utxos() else {
            return; // the node's state is reported above
        };
        let held: u128 = utxos.iter().map(|u| u128::from(u.value)).sum();
        let fee = u128::from(self.cfg.fee_rate_sat_vb.saturating_mul(WITHDRAWAL_VBYTES_MIN));
        if held >= smallest.saturating_add(fee) {
            self.health.up(&name, Severity::Degraded);
        } else {
            self.health.down(
                &name,
                Severity::Degraded,
                format!(
                    "the hot wallet holds {held} spendable and the smallest waiting withdrawal needs \
                     {smallest} plus the fee (minor units): a refill from cold is needed"
                ),
            );
        }
    }
}
