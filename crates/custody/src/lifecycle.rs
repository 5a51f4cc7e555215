//! Recorded transactions followed on chain until they are final, and reverted when they leave it.
//!
//! kinko records a withdrawal's or custody move's signed transaction (txid and raw hex) in the
//! engine before it broadcasts it (`RecordWithdrawalTx`, `RecordCustodyTx`), so every
//! transaction of ours on the network is one the engine accepted, and reconciliation knows it
//! as ours even before it is sent. Each poll, before deposits are settled:
//!
//! - a withdrawal `Signed` (recorded, maybe not sent: a crash, a node error) is sent again,
//!   exactly the recorded transaction, never a rebuilt one, then noted `Broadcast`;
//! - a withdrawal `Signed` or `Broadcast` at [`crate::CustodyConfig::finality_depth`] is
//!   `Completed`; one still unconfirmed is sent again (the node may have evicted it);
//! - a recorded transaction (withdrawal `Signed`, `Broadcast` or `Completed`, custody move
//!   `Recorded`) that the node reports conflicted (negative confirmations: a double spend won,
//!   possibly of a deposit it descends from) is reverted in the engine (`RevertWithdrawal`,
//!   `RevertCustodyMove`), which credits the customer back and opens an incident in the same
//!   command. Withdrawals and moves are reverted before deposits are reversed, so that a
//!   customer whose deposit paid a withdrawal is credited back before the deposit is taken
//!   back, and only what they really spent goes to suspense.
//!
//! A reverted withdrawal is never sent again automatically: its transaction may still come
//! back (a reorg of the conflicting block), and a second transaction would pay twice. The
//! customer, credited back, asks again with a fresh second factor once operators have looked.
//!
//! Completed withdrawals and moves are watched until [`REORG_WATCH_DEPTH`], like credited
//! deposits: all of them once after a start, then those still shallower.

use crate::error::{rpc_err, CustodyError};
use crate::service::{refused, Custody, REORG_WATCH_DEPTH};
use kinko_chain::rpc::{RpcError, RPC_INVALID_ADDRESS_OR_KEY};
use kinko_core::wallet::{CustodyMoveStatus, WithdrawalId, WithdrawalStatus};
use kinko_core::{AssetId, Command};
use std::collections::BTreeSet;

/// Unconfirmed transactions of ours looked through for a conflicted ancestor.
const ANCESTORS_MAX: u32 = 4;

/// What the lifecycle remembers in one run.
#[derive(Default)]
pub(crate) struct Lifecycle {
    /// Completed withdrawals' and recorded moves' txids still shallower than the watch depth.
    watched: BTreeSet<String>,
    /// Whether every completed withdrawal and move was looked at once in this run.
    started: bool,
    /// Custody moves before this index were looked at (new ones are followed from here).
    moves_seen: usize,
}

struct Tracked {
    id: Option<WithdrawalId>,
    status: WithdrawalStatus,
    txid: String,
    raw_tx: Option<String>,
}

impl Custody {
    /// Follows every recorded withdrawal and custody move of `asset` (see the module doc).
    pub(crate) fn follow_transactions(&mut self, asset: AssetId) -> Result<(), CustodyError> {
        let started = self.life.started;
        let watched = &self.life.watched;
        let moves_seen = self.life.moves_seen;
        let (todo, moves_len): (Vec<Tracked>, usize) = self.link.view(|e| {
            let w = e.wallet();
            let keep = |status: WithdrawalStatus, txid: &str| {
                status != WithdrawalStatus::Completed || !started || watched.contains(txid)
            };
            let withdrawals = w
                .withdrawals()
                .iter()
                .filter(|x| x.asset == asset && x.status.has_tx())
                .filter_map(|x| {
                    let txid = x.txid.clone()?;
                    keep(x.status, &txid).then(|| Tracked {
                        id: Some(x.id),
                        status: x.status,
                        txid,
                        raw_tx: x.raw_tx.clone(),
                    })
                });
            // A move is followed like a completed withdrawal: booked when recorded.
            let moves = w
                .custody_moves()
                .iter()
                .enumerate()
                .filter(|(i, m)| {
                    m.asset == asset
                        && m.status == CustodyMoveStatus::Recorded
                        && (*i >= moves_seen || keep(WithdrawalStatus::Completed, &m.txid))
                })
                .map(|(_, m)| m)
                .map(|m| Tracked {
                    id: None,
                    status: WithdrawalStatus::Completed,
                    txid: m.txid.clone(),
                    raw_tx: m.raw_tx.clone(),
                });
            (withdrawals.chain(moves).collect(), w.custody_moves().len())
        });
        for t in todo {
            self.follow(asset, t)?;
        }
        self.life.started = true;
        self.life.moves_seen = moves_len;
        Ok(())
    }

    fn follow(&mut self, asset: AssetId, t: Tracked) -> Result<(), CustodyError> {
        let depth = match self.depth(&t.txid)? {
            // Unconfirmed or unknown: conflicted if what it spends was (a deposit it descends
            // from double-spent; the node may not mark every descendant).
            Some(d) if d > 0 => Some(d),
            d => match self.conflicted_ancestor(&t.txid, t.raw_tx.as_deref(), ANCESTORS_MAX)? {
                Some(c) => Some(c),
                None => d,
            },
        };
        let finality = i64::from(self.cfg.finality_depth.max(1));
        match depth {
            Some(d) if d < 0 => {
                self.life.watched.remove(&t.txid);
                self.revert(asset, &t, d)
            }
            Some(d) if d >= finality && t.status != WithdrawalStatus::Completed => {
                let id = t.id.expect("only withdrawals are not completed");
                if t.status == WithdrawalStatus::Signed {
                    self.note_broadcast(id, &t.txid)?;
                }
                self.submit_ok(Command::WithdrawalConfirmed { id }, "confirm withdrawal")?;
                tracing::info!(withdrawal = id.0, txid = %t.txid, depth = d, "withdrawal final");
                self.life.watched.insert(t.txid);
                Ok(())
            }
            Some(d) if d >= REORG_WATCH_DEPTH => {
                self.life.watched.remove(&t.txid);
                Ok(())
            }
            Some(d) if d > 0 => {
                if t.status == WithdrawalStatus::Completed {
                    self.life.watched.insert(t.txid);
                }
                Ok(())
            }
            // Unconfirmed or unknown to the node: send the recorded transaction again.
            _ => {
                if let Some(raw) = &t.raw_tx {
                    match self.broadcast(raw) {
                        Ok(sent) if sent == t.txid => {
                            if let (Some(id), WithdrawalStatus::Signed) = (t.id, t.status) {
                                self.note_broadcast(id, &t.txid)?;
                                tracing::info!(withdrawal = id.0, txid = %t.txid, "recorded withdrawal sent");
                            }
                        }
                        Ok(sent) => {
                            return Err(CustodyError::TxidMismatch {
                                txid: t.txid.clone(),
                                reported: sent,
                            })
                        }
                        Err(e) => tracing::warn!(txid = %t.txid, error = %e,
                            "the node does not take a recorded transaction of ours; retrying"),
                    }
                }
                if t.status == WithdrawalStatus::Completed {
                    self.life.watched.insert(t.txid);
                }
                Ok(())
            }
        }
    }

    /// The depth (negative) of a conflicted transaction that `txid` spends from, directly or
    /// through at most `levels` unconfirmed transactions of ours.
    fn conflicted_ancestor(
        &self,
        txid: &str,
        raw: Option<&str>,
        levels: u32,
    ) -> Result<Option<i64>, CustodyError> {
        let hex = match raw {
            Some(r) => r.to_owned(),
            None => match self.hot.get_transaction(txid) {
                Ok(t) => t.hex,
                Err(RpcError::Node {
                    code: RPC_INVALID_ADDRESS_OR_KEY,
                    ..
                }) => return Ok(None),
                Err(e) => return Err(rpc_err("gettransaction", e)),
            },
        };
        let tx: bitcoin::Transaction =
            bitcoin::consensus::encode::deserialize_hex(&hex).map_err(|source| CustodyError::TxDecode {
                txid: txid.to_owned(),
                source,
            })?;
        let mut parents: Vec<String> = tx
            .input
            .iter()
            .map(|i| i.previous_output.txid.to_string())
            .collect();
        parents.sort();
        parents.dedup();
        for parent in parents {
            match self.depth(&parent)? {
                Some(d) if d < 0 => return Ok(Some(d)),
                Some(0) if levels > 0 => {
                    if let Some(d) = self.conflicted_ancestor(&parent, None, levels - 1)? {
                        return Ok(Some(d));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// The depth of one of our transactions in the hot wallet (negative: conflicted); `None`
    /// when the node's wallet does not know it (never sent, or sent and forgotten).
    fn depth(&self, txid: &str) -> Result<Option<i64>, CustodyError> {
        match self.hot.get_transaction(txid) {
            Ok(t) => Ok(Some(t.confirmations)),
            Err(RpcError::Node {
                code: RPC_INVALID_ADDRESS_OR_KEY,
                ..
            }) => Ok(None),
            Err(e) => Err(rpc_err("gettransaction", e)),
        }
    }

    fn note_broadcast(&self, id: WithdrawalId, txid: &str) -> Result<(), CustodyError> {
        let fee = self
            .link
            .view(|e| e.wallet().withdrawal(id).map(|w| w.network_fee))
            .unwrap_or_default();
        self.submit_ok(
            Command::WithdrawalBroadcast {
                id,
                txid: txid.to_owned(),
                network_fee: fee,
            },
            "note withdrawal broadcast",
        )
    }

    fn revert(&mut self, asset: AssetId, t: &Tracked, depth: i64) -> Result<(), CustodyError> {
        let reason = format!(
            "transaction {} conflicted on chain ({depth} confirmations)",
            t.txid
        );
        match t.id {
            Some(id) => {
                self.submit_ok(Command::RevertWithdrawal { id, reason }, "revert withdrawal")?;
                tracing::error!(asset = %self.cfg.asset, withdrawal = id.0, txid = %t.txid, depth,
                    was = t.status.name(),
                    "CRITICAL: a recorded withdrawal left the chain; reverted, customer credited back, incident opened");
            }
            None => {
                self.submit_ok(
                    Command::RevertCustodyMove {
                        asset,
                        txid: t.txid.clone(),
                        reason,
                    },
                    "revert custody move",
                )?;
                tracing::error!(asset = %self.cfg.asset, txid = %t.txid, depth,
                    "CRITICAL: a recorded custody move left the chain; reverted, incident opened");
            }
        }
        Ok(())
    }

    /// Submits `cmd`; a refusal is an error naming `what`.
    pub(crate) fn submit_ok(&self, cmd: Command, what: &str) -> Result<(), CustodyError> {
        self.link
            .submit(cmd)
            .map_err(CustodyError::Engine)?
            .map(|_| ())
            .map_err(|r| refused(what.to_owned(), r))
    }
}
