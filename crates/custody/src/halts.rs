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
/// Longest reason forwarded (the signer accepts up to its `REASON_LEN_MAX`).
const REASON_CHARS_MAX: usize = 200;

/// The reason as the signer accepts it: printable, at most [`REASON_CHARS_MAX`] characters.
fn printable(reason: &str) -> String {
    let mut out: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(REASON_CHARS_MAX)
        .collect();
    if reason.chars().count() > REASON_CHARS_MAX {
        out.push('…');
    }
    out
}

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
        let Some(why) = self.engine_halt(asset).map(|w| printable(&w)) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_the_signer() {
        let long = "x".repeat(600);
        let r = printable(&long);
        assert!(
            r.len() <= kinko_signer_proto::protocol::REASON_LEN_MAX,
            "{}",
            r.len()
        );
        assert_eq!(printable("a\nb"), "a b");
    }
}
