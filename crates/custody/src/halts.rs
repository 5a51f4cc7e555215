//! Halts bind the signer: every halt of the asset's withdrawals in the engine (a global halt,
//! an admin's or reconciliation's asset halt, an incident that halts) is forwarded to the
//! signer as a `halt` request, which the signer applies at once and logs. Resuming in the
//! engine does not resume the signer: that takes a quorum of the admins enrolled there
//! (`kinko-signer clear`).

use crate::error::CustodyError;
use crate::service::Custody;
use kinko_core::admin::IncidentStatus;
use kinko_core::AssetId;
use kinko_signer_proto::protocol::{Request, Response};

/// The `source` the signer records for halts kinko forwards.
pub const HALT_SOURCE: &str = "kinko engine";

impl Custody {
    /// Why the engine has this asset's withdrawals halted, if it does.
    pub(crate) fn engine_halt(&self, asset: AssetId) -> Option<String> {
        self.link.view(|e| {
            if let Some(why) = &e.admin().global_halt {
                return Some(format!("global halt: {why}"));
            }
            match e.asset(asset) {
                Some(a) if !a.switches.withdrawals => {
                    let incident = e
                        .admin()
                        .incidents
                        .iter()
                        .rev()
                        .find(|i| i.status == IncidentStatus::Open && i.asset == Some(asset));
                    Some(match incident {
                        Some(i) => format!(
                            "withdrawals of {} halted (incident {}: {})",
                            self.cfg.asset, i.id, i.kind
                        ),
                        None => format!("withdrawals of {} halted", self.cfg.asset),
                    })
                }
                _ => None,
            }
        })
    }

    /// Forwards the engine's halt to the signer, once per halt (and again after a restart).
    pub(crate) fn forward_halt(&mut self, asset: AssetId) -> Result<(), CustodyError> {
        let Some(why) = self.engine_halt(asset) else {
            self.halt_forwarded = None;
            return Ok(());
        };
        if self.halt_forwarded.as_deref() == Some(why.as_str()) {
            return Ok(());
        }
        let mut signer = self.signer()?;
        match signer.call(&Request::Halt {
            reason: why.clone(),
            source: HALT_SOURCE.into(),
        })? {
            Response::Ok => {
                tracing::warn!(asset = %self.cfg.asset, reason = %why, "engine halt forwarded to the signer");
                self.halt_forwarded = Some(why);
                Ok(())
            }
            other => Err(CustodyError::SignerAnswer {
                request: "halt",
                answer: crate::service::refusal(&other),
            }),
        }
    }
}
