//! What is working right now, for `/ready`, `/metrics` and the public status: each part of the
//! process that can fail on its own (the journal, a chain node, a signer, a custody loop)
//! reports here, by name, whether it works and, if not, why and since when. The gateway reads
//! it; the services write it. Nothing here changes engine state: a component that must stop
//! withdrawals does so with a journaled command and reports here as well.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// How much a failing component matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The process cannot do its job (the journal): `/ready` answers 503.
    Critical,
    /// Part of the service waits (a node or signer of one asset): reported, still ready.
    Degraded,
}

/// One component's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub up: bool,
    pub severity: Severity,
    /// Why it is down (empty when up). Never holds a secret.
    pub reason: String,
    /// When it last changed between up and down (Unix seconds).
    pub since_s: u64,
    /// Consecutive failures since it was last up.
    pub failures: u64,
}

/// The process's components, by name (`journal`, `node:LTC`, `signer:LTC`, `custody:LTC`,
/// `reconcile:LTC`, ...). Cheap to clone; shared by everyone.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<RwLock<BTreeMap<String, Component>>>,
    /// Requests the signer refused, by (asset, the signer's policy code).
    signer_refusals: Arc<RwLock<BTreeMap<(String, String), u64>>>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// `name` works.
    pub fn up(&self, name: &str, severity: Severity) {
        let mut m = self.inner.write();
        let c = m.entry(name.to_owned()).or_insert_with(|| Component {
            up: true,
            severity,
            reason: String::new(),
            since_s: now_s(),
            failures: 0,
        });
        if !c.up {
            c.since_s = now_s();
        }
        c.up = true;
        c.severity = severity;
        c.reason.clear();
        c.failures = 0;
    }

    /// `name` failed, for `reason`. Returns the number of consecutive failures.
    pub fn down(&self, name: &str, severity: Severity, reason: impl Into<String>) -> u64 {
        let mut m = self.inner.write();
        let c = m.entry(name.to_owned()).or_insert_with(|| Component {
            up: false,
            severity,
            reason: String::new(),
            since_s: now_s(),
            failures: 0,
        });
        if c.up {
            c.since_s = now_s();
        }
        c.up = false;
        c.severity = severity;
        c.reason = reason.into();
        c.failures = c.failures.saturating_add(1);
        c.failures
    }

    /// Every component, by name.
    pub fn snapshot(&self) -> BTreeMap<String, Component> {
        self.inner.read().clone()
    }

    /// The components that are down with `Critical` severity.
    pub fn critical_down(&self) -> Vec<(String, Component)> {
        self.inner
            .read()
            .iter()
            .filter(|(_, c)| !c.up && c.severity == Severity::Critical)
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<Component> {
        self.inner.read().get(name).cloned()
    }

    /// The signer refused a request for `asset` with `code` (one of its fixed policy codes).
    pub fn signer_refused(&self, asset: &str, code: &str) {
        let mut m = self.signer_refusals.write();
        // Codes come from the signer's fixed table; the bound only guards against a signer
        // that sends something else.
        if m.len() < 1_024 || m.contains_key(&(asset.to_owned(), code.to_owned())) {
            *m.entry((asset.to_owned(), code.to_owned())).or_default() += 1;
        }
    }

    /// Signer refusals so far, by (asset, code).
    pub fn signer_refusals(&self) -> BTreeMap<(String, String), u64> {
        self.signer_refusals.read().clone()
    }
}
