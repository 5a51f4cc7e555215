//! The signer's configuration file (TOML; unknown keys refused). Relative paths resolve against
//! the directory of the file.
//!
//! ```toml
//! network = "litecoin-regtest"
//! asset = "LTC"
//! asset_id = 1                     # kinko's AssetId of that asset (step-up digests use it)
//! keystore = "hot.keystore"
//! log = "signer.log"
//! socket = "run/signer.sock"       # its directory must not be group- or world-writable
//! allowed_uids = [1000]            # default: the signer's own uid
//!
//! [policy]
//! per_tx_max_sats = 100000000
//! window_s = 86400
//! window_max_sats = 500000000
//! address_cooling_s = 86400
//! credential_maturity_s = 86400     # a factor approved with a factor the signer holds
//! registration_maturity_s = 259200  # a first factor, accepted without such an approval (72 h)
//! registrations_per_hour_max = 60   # more are refused REGISTRATION_RATE (and alerted)
//! totp_budget_sats = 5000000        # per user per 24 h approvable by TOTP alone (0.05 LTC)
//! proof_max_age_s = 300             # the engine's window
//! delay_max_s = 86400               # most a withdrawal's (risk) delay may add to it
//! wait_max_s = 604800               # most any legitimate wait may add to it (7 days)
//! fee_max_sats = 1000000
//!
//! [review]                         # the signer's own review rule (all optional; these are the
//! dual_approval_sats = 37500000000 # defaults: 375 LTC, as kinko's LTC dual_approval_from);
//!                                  #   an admin ceremony overrides the first four
//! approvals = 2
//! fan_in_users_max = 3
//! fan_in_window_s = 86400
//! review_max_age_s = 86400         # how old a reviewer's assertion may be
//!
//! [alerts]                         # the signer's own channel; without it: the outbox only
//! outbox = "alerts"                # default: "alerts" next to the log
//! webhook_url = "http://127.0.0.1:9000/kinko-signer"   # plain HTTP POST of each alert's JSON
//! smtp_relay = "127.0.0.1:25"      # plain SMTP to a relay
//! smtp_from = "kinko-signer@exchange.example"
//! recipients = ["security@exchange.example"]
//! retry_s = 30
//! attempts_max = 100
//!
//! [webauthn]
//! rp_id = "exchange.example"
//! origins = ["https://exchange.example"]
//!
//! [cold]                           # the multisig sweeps may pay
//! threshold = 2
//! keys = ["[0a1b2c3d/48h/1h/0h/2h]tpub…", "…", "…"]
//!
//! [eth]                            # an Ethereum signer (docs/design/ethereum.md): `asset` is
//! chain_id = 31337                 #   ETH and the policy's amounts are wei; withdrawals come
//!                                  #   as `sign_eth_withdrawal` (required; the rest: defaults)
//! max_fee_per_gas_max = 200000000000 # wei per gas
//! priority_fee_max = 5000000000
//! gas_limit_max = 200000          # a refill's execute offers 150000; fee_max_wei still bounds
//! fee_max_wei = 10000000000000000  # most one transaction's gas may cost (0.01 ETH)
//! start_nonce = 0                  # the hot key's on-chain nonce when this signer took it over
//! cold_contract = "0x…"            # the cold multisig: the only address hot → cold may pay and
//!                                  #   the only contract a refill may call (none: both refused)
//! [[eth.tokens]]                   # an ERC-20 it may pay with `transfer`, with its own limits
//! asset_id = 2                     #   (in the token's minor unit)
//! contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
//! per_tx_max = 100000000
//! window_max = 500000000
//! ```

use crate::alerts::{AlertsConfig, Webhook, RECIPIENTS_MAX};
use kinko_chain::keys::{ColdKeys, KeyError, WatchKey};
use kinko_chain::Network;
use kinko_core::{AssetCode, AssetId};
use kinko_factors::webauthn::RelyingParty;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Most keys a cold multisig may have (`sortedmulti` in P2WSH allows 20; we keep it small).
pub const COLD_KEYS_MAX: usize = 15;
/// Most uids in the allowlist.
pub const ALLOWED_UIDS_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub per_tx_max_sats: u64,
    #[serde(default = "day")]
    pub window_s: u64,
    pub window_max_sats: u64,
    #[serde(default = "day")]
    pub address_cooling_s: u64,
    #[serde(default = "day")]
    pub credential_maturity_s: u64,
    /// Maturity of a user's first factor (accepted without an approval the signer verifies).
    #[serde(default = "three_days")]
    pub registration_maturity_s: u64,
    #[serde(default = "registrations_per_hour")]
    pub registrations_per_hour_max: u64,
    /// What TOTP alone (a TOTP proof, or an address approved by TOTP) may approve per user in
    /// a rolling 24 h.
    #[serde(default = "totp_budget")]
    pub totp_budget_sats: u64,
    #[serde(default = "five_minutes")]
    pub proof_max_age_s: u64,
    /// The longest risk delay a withdrawal's `waited_s` may add to `proof_max_age_s`.
    #[serde(default = "day")]
    pub delay_max_s: u64,
    /// The longest any legitimate wait may add to `proof_max_age_s`.
    #[serde(default = "week")]
    pub wait_max_s: u64,
    pub fee_max_sats: u64,
}

/// Defaults of the signer's policy (seconds, satoshis).
pub const REGISTRATION_MATURITY_S_DEFAULT: u64 = 259_200;
pub const REGISTRATIONS_PER_HOUR_MAX_DEFAULT: u64 = 60;
pub const TOTP_BUDGET_SATS_DEFAULT: u64 = 5_000_000;
pub const PROOF_MAX_AGE_S_DEFAULT: u64 = 300;
pub const WAIT_MAX_S_DEFAULT: u64 = 604_800;

fn day() -> u64 {
    86_400
}
fn three_days() -> u64 {
    REGISTRATION_MATURITY_S_DEFAULT
}
fn registrations_per_hour() -> u64 {
    REGISTRATIONS_PER_HOUR_MAX_DEFAULT
}
fn totp_budget() -> u64 {
    TOTP_BUDGET_SATS_DEFAULT
}
fn five_minutes() -> u64 {
    PROOF_MAX_AGE_S_DEFAULT
}
fn week() -> u64 {
    WAIT_MAX_S_DEFAULT
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    outbox: Option<PathBuf>,
    webhook_url: Option<String>,
    smtp_relay: Option<String>,
    smtp_from: Option<String>,
    #[serde(default)]
    recipients: Vec<String>,
    retry_s: Option<u64>,
    attempts_max: Option<u32>,
}

/// The signer's own review rule (`[review]`): a withdrawal of at least `dual_approval_sats`,
/// or to a destination more than `fan_in_users_max` other users were paid at within
/// `fan_in_window_s`, needs `approvals` reviewers' assertions no older than `review_max_age_s`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    pub dual_approval_sats: u64,
    pub approvals: u32,
    pub fan_in_users_max: u32,
    pub fan_in_window_s: u64,
    pub review_max_age_s: u64,
}

impl Default for ReviewConfig {
    fn default() -> ReviewConfig {
        ReviewConfig {
            dual_approval_sats: 37_500_000_000,
            approvals: 2,
            fan_in_users_max: 3,
            fan_in_window_s: 86_400,
            review_max_age_s: 86_400,
        }
    }
}

impl ReviewConfig {
    pub fn thresholds(&self) -> kinko_signer_proto::protocol::ReviewThresholds {
        kinko_signer_proto::protocol::ReviewThresholds {
            dual_approval_sats: self.dual_approval_sats,
            approvals: self.approvals,
            fan_in_users_max: self.fan_in_users_max,
            fan_in_window_s: self.fan_in_window_s,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebauthnConfig {
    pub rp_id: String,
    pub origins: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdConfig {
    pub threshold: u32,
    pub keys: Vec<String>,
}

/// `[eth]`: this signer signs Ethereum withdrawals of `asset` (ETH) and of `tokens`. Only
/// the chain id has no default; the caps' defaults are the safe side of normal mainnet fees.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEth {
    chain_id: u64,
    // TOML integers are 64-bit: wei caps up to 9.2 ETH, read as u64.
    #[serde(default = "eth_max_fee_per_gas_max")]
    max_fee_per_gas_max: u64,
    #[serde(default = "eth_priority_fee_max")]
    priority_fee_max: u64,
    #[serde(default = "eth_gas_limit_max")]
    gas_limit_max: u64,
    #[serde(default = "eth_fee_max_wei")]
    fee_max_wei: u64,
    /// The hot key's next nonce when this signer took it over (its on-chain count then).
    #[serde(default)]
    start_nonce: u64,
    /// The cold multisig contract: the only address a hot → cold transfer may pay and the
    /// only contract a refill's `execute` may call (none: both refused).
    #[serde(default)]
    cold_contract: Option<String>,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

/// Defaults of `[eth]` (wei per gas, gas, wei).
pub const ETH_MAX_FEE_PER_GAS_MAX_DEFAULT: u64 = 200_000_000_000;
pub const ETH_PRIORITY_FEE_MAX_DEFAULT: u64 = 5_000_000_000;
pub const ETH_GAS_LIMIT_MAX_DEFAULT: u64 = 200_000;
pub const ETH_FEE_MAX_WEI_DEFAULT: u64 = 10_000_000_000_000_000;
/// Most tokens one Ethereum signer pays.
pub const ETH_TOKENS_MAX: usize = 16;
/// The least gas a transaction can use (a plain ETH transfer).
const ETH_TRANSFER_GAS: u64 = 21_000;

fn eth_max_fee_per_gas_max() -> u64 {
    ETH_MAX_FEE_PER_GAS_MAX_DEFAULT
}
fn eth_priority_fee_max() -> u64 {
    ETH_PRIORITY_FEE_MAX_DEFAULT
}
fn eth_gas_limit_max() -> u64 {
    ETH_GAS_LIMIT_MAX_DEFAULT
}
fn eth_fee_max_wei() -> u64 {
    ETH_FEE_MAX_WEI_DEFAULT
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    asset_id: u32,
    contract: String,
    per_tx_max: u64,
    window_max: u64,
}

/// An ERC-20 token the Ethereum signer pays, with its own limits (the token's minor unit; the
/// window is `policy.window_s`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthToken {
    pub asset_id: AssetId,
    pub contract: kinko_chain::eth::EthAddress,
    pub per_tx_max: u64,
    pub window_max: u64,
}

/// An Ethereum signer's configuration: the caps and allowlist of its own reading of a
/// transaction, and its tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthConfig {
    pub policy: crate::eth::EthPolicy,
    pub tokens: Vec<EthToken>,
    /// The hot key's first nonce (a key it never signed with expects it).
    pub start_nonce: u64,
    /// The cold multisig contract (`cold_contract`): what hot → cold pays and refills call.
    pub cold_contract: Option<kinko_chain::eth::EthAddress>,
}

impl EthConfig {
    /// The token paid by withdrawals of `asset`.
    pub fn token(&self, asset: AssetId) -> Option<&EthToken> {
        self.tokens.iter().find(|t| t.asset_id == asset)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    network: String,
    asset: String,
    asset_id: u32,
    keystore: PathBuf,
    log: PathBuf,
    socket: PathBuf,
    #[serde(default)]
    allowed_uids: Option<Vec<u32>>,
    policy: PolicyConfig,
    #[serde(default)]
    review: ReviewConfig,
    webauthn: WebauthnConfig,
    cold: Option<ColdConfig>,
    alerts: Option<RawAlerts>,
    eth: Option<RawEth>,
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub network: Network,
    pub asset: AssetCode,
    pub asset_id: AssetId,
    pub keystore: PathBuf,
    pub log: PathBuf,
    pub socket: PathBuf,
    pub allowed_uids: Vec<u32>,
    pub policy: PolicyConfig,
    pub review: ReviewConfig,
    pub webauthn: WebauthnConfig,
    /// The cold multisig sweeps may pay; `None` refuses every sweep.
    pub cold: Option<ColdKeys>,
    /// The signer's own alert channel.
    pub alerts: AlertsConfig,
    /// An Ethereum signer (`[eth]`); `None`: a Litecoin one.
    pub eth: Option<EthConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfigInvalid,
    },
}

/// Why configuration text is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigInvalid {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("unknown network {name:?} (one of: {known})")]
    Network { name: String, known: String },
    #[error("{0}")]
    Asset(#[from] kinko_core::money::InvalidAssetCode),
    #[error("allowed_uids must not be empty")]
    UidsEmpty,
    #[error("allowed_uids is too long")]
    UidsTooMany,
    #[error("policy.window_s and policy.proof_max_age_s must be positive")]
    PolicyZero,
    #[error("policy.per_tx_max_sats must not exceed policy.window_max_sats")]
    PolicyTxAboveWindow,
    #[error("review: {0}")]
    Review(String),
    #[error("webauthn.rp_id and webauthn.origins must be set")]
    WebauthnUnset,
    #[error("cold.keys must have 1 to {COLD_KEYS_MAX} keys")]
    ColdKeyCount,
    #[error("cold.threshold must be between 1 and the number of keys")]
    ColdThreshold,
    #[error("cold key {key:?}: {source}")]
    ColdKey {
        key: String,
        #[source]
        source: KeyError,
    },
    #[error("cold: {0}")]
    Cold(#[source] KeyError),
    #[error("alerts.webhook_url must be http://host[:port][/path]")]
    AlertsWebhook,
    #[error("alerts.smtp_relay must be host:port, and recipients 1 to {RECIPIENTS_MAX} addresses")]
    AlertsSmtp,
    #[error("policy.wait_max_s must be at least policy.delay_max_s")]
    PolicyWait,
    #[error("eth: {0}")]
    Eth(String),
}

/// Checks `[eth]`: a chain id, caps that let a plain transfer through and are consistent,
/// tokens that are addresses, distinct, and not the signer's own asset.
fn eth_config(e: &RawEth, asset_id: u32) -> Result<EthConfig, ConfigInvalid> {
    let bad = |m: String| Err(ConfigInvalid::Eth(m));
    if e.chain_id == 0 {
        return bad("chain_id must be set (1 mainnet, 31337 Anvil, …)".into());
    }
    if e.max_fee_per_gas_max == 0 || e.priority_fee_max > e.max_fee_per_gas_max {
        return bad("max_fee_per_gas_max must be positive and at least priority_fee_max".into());
    }
    if e.gas_limit_max < ETH_TRANSFER_GAS {
        return bad(format!("gas_limit_max must be at least {ETH_TRANSFER_GAS}"));
    }
    if e.fee_max_wei == 0 {
        return bad("fee_max_wei must be positive".into());
    }
    if e.tokens.len() > ETH_TOKENS_MAX {
        return bad(format!("at most {ETH_TOKENS_MAX} tokens"));
    }
    let mut tokens: Vec<EthToken> = Vec::new();
    for t in &e.tokens {
        let Ok(contract) = kinko_chain::eth::EthAddress::parse(&t.contract) else {
            return bad(format!("token contract {:?} is not an address", t.contract));
        };
        if t.asset_id == asset_id || tokens.iter().any(|o| o.asset_id.0 == t.asset_id) {
            return bad(format!("token asset_id {} is used twice", t.asset_id));
        }
        if tokens.iter().any(|o| o.contract == contract) {
            return bad(format!("token contract {contract} is listed twice"));
        }
        if t.per_tx_max == 0 || t.per_tx_max > t.window_max {
            return bad("a token's per_tx_max must be positive and at most its window_max".into());
        }
        tokens.push(EthToken {
            asset_id: AssetId(t.asset_id),
            contract,
            per_tx_max: t.per_tx_max,
            window_max: t.window_max,
        });
    }
    let cold_contract = match &e.cold_contract {
        None => None,
        Some(c) => match kinko_chain::eth::EthAddress::parse(c) {
            Ok(a)
                if a != kinko_chain::eth::EthAddress([0; 20]) && !tokens.iter().any(|t| t.contract == a) =>
            {
                Some(a)
            }
            _ => return bad(format!("cold_contract {c:?} is not an address (nor a token's)")),
        },
    };
    Ok(EthConfig {
        cold_contract,
        policy: crate::eth::EthPolicy {
            chain_id: e.chain_id,
            tokens: tokens.iter().map(|t| t.contract).collect(),
            max_fee_per_gas_max: u128::from(e.max_fee_per_gas_max),
            priority_fee_max: u128::from(e.priority_fee_max),
            gas_limit_max: e.gas_limit_max,
            fee_max_wei: u128::from(e.fee_max_wei),
        },
        tokens,
        start_nonce: e.start_nonce,
    })
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|source| ConfigError::Invalid {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses configuration text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigInvalid> {
        let raw: RawConfig = toml::from_str(text)?;
        let network = Network::from_name(&raw.network).ok_or_else(|| ConfigInvalid::Network {
            name: raw.network.clone(),
            known: Network::ALL.map(|n| n.name()).join(", "),
        })?;
        let asset = AssetCode::new(&raw.asset)?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let allowed_uids = match raw.allowed_uids {
            Some(u) if u.is_empty() => return Err(ConfigInvalid::UidsEmpty),
            Some(u) if u.len() > ALLOWED_UIDS_MAX => return Err(ConfigInvalid::UidsTooMany),
            Some(u) => u,
            None => vec![nix::unistd::getuid().as_raw()],
        };
        let p = &raw.policy;
        if p.window_s == 0 || p.proof_max_age_s == 0 {
            return Err(ConfigInvalid::PolicyZero);
        }
        if p.per_tx_max_sats > p.window_max_sats {
            return Err(ConfigInvalid::PolicyTxAboveWindow);
        }
        crate::admins::check_thresholds(&raw.review.thresholds()).map_err(ConfigInvalid::Review)?;
        if raw.review.review_max_age_s == 0 {
            return Err(ConfigInvalid::Review("review_max_age_s must be positive".into()));
        }
        if p.wait_max_s < p.delay_max_s {
            return Err(ConfigInvalid::PolicyWait);
        }
        if raw.webauthn.rp_id.is_empty() || raw.webauthn.origins.is_empty() {
            return Err(ConfigInvalid::WebauthnUnset);
        }
        let cold = match raw.cold {
            None => None,
            Some(c) => {
                if c.keys.is_empty() || c.keys.len() > COLD_KEYS_MAX {
                    return Err(ConfigInvalid::ColdKeyCount);
                }
                if c.threshold == 0 || c.threshold as usize > c.keys.len() {
                    return Err(ConfigInvalid::ColdThreshold);
                }
                let keys = c
                    .keys
                    .iter()
                    .map(|k| {
                        WatchKey::from_str(k).map_err(|source| ConfigInvalid::ColdKey {
                            key: k.clone(),
                            source,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let cold = ColdKeys {
                    threshold: c.threshold as usize,
                    keys,
                };
                // The keys must be of this network and distinct; derive one address to check.
                kinko_chain::keys::derive_cold(network, &cold, 0).map_err(ConfigInvalid::Cold)?;
                Some(cold)
            }
        };
        let eth = match raw.eth {
            None => None,
            Some(e) => Some(eth_config(&e, raw.asset_id)?),
        };
        let log = resolve(raw.log);
        let default_outbox = log.parent().unwrap_or(Path::new(".")).join("alerts");
        let alerts = match raw.alerts {
            None => AlertsConfig::outbox_only(default_outbox),
            Some(a) => {
                let webhook = match &a.webhook_url {
                    None => None,
                    Some(u) => Some(Webhook::parse(u).ok_or(ConfigInvalid::AlertsWebhook)?),
                };
                let addr_ok = |r: &String| {
                    !r.is_empty()
                        && r.len() <= 254
                        && r.contains('@')
                        && !r
                            .chars()
                            .any(|c| c.is_control() || c == '<' || c == '>' || c.is_whitespace())
                };
                if let Some(relay) = &a.smtp_relay {
                    let port_ok = relay
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                    if !port_ok || a.recipients.is_empty() {
                        return Err(ConfigInvalid::AlertsSmtp);
                    }
                }
                if a.recipients.len() > RECIPIENTS_MAX
                    || !a.recipients.iter().all(addr_ok)
                    || a.smtp_from.as_ref().is_some_and(|f| !addr_ok(f))
                {
                    return Err(ConfigInvalid::AlertsSmtp);
                }
                let mut c = AlertsConfig::outbox_only(a.outbox.map_or(default_outbox, resolve));
                c.webhook = webhook;
                c.smtp_relay = a.smtp_relay;
                if let Some(f) = a.smtp_from {
                    c.smtp_from = f;
                }
                c.recipients = a.recipients;
                c.retry_s = a.retry_s.unwrap_or(c.retry_s).max(1);
                c.attempts_max = a.attempts_max.unwrap_or(c.attempts_max).max(1);
                c
            }
        };
        Ok(Config {
            network,
            asset,
            asset_id: AssetId(raw.asset_id),
            keystore: resolve(raw.keystore),
            log,
            socket: resolve(raw.socket),
            allowed_uids,
            policy: raw.policy,
            review: raw.review,
            webauthn: raw.webauthn,
            cold,
            alerts,
            eth,
        })
    }

    pub fn relying_party(&self) -> RelyingParty {
        RelyingParty {
            id: self.webauthn.rp_id.clone(),
            name: "kinko".into(),
            origins: self.webauthn.origins.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
network = "litecoin-regtest"
asset = "LTC"
asset_id = 1
keystore = "hot.keystore"
log = "/var/lib/signer/signer.log"
socket = "run/signer.sock"

[policy]
per_tx_max_sats = 100
window_max_sats = 1000
fee_max_sats = 10

[webauthn]
rp_id = "localhost"
origins = ["http://localhost:8080"]
"#;

    #[test]
    fn parses_with_defaults_and_resolves_paths() {
        let c = Config::parse(BASE, Path::new("/etc/kinko")).unwrap();
        assert_eq!(c.network, Network::LitecoinRegtest);
        assert_eq!(c.asset.as_str(), "LTC");
        assert_eq!(c.asset_id, AssetId(1));
        assert_eq!(c.keystore, Path::new("/etc/kinko/hot.keystore"));
        assert_eq!(c.log, Path::new("/var/lib/signer/signer.log"));
        assert_eq!(c.socket, Path::new("/etc/kinko/run/signer.sock"));
        assert_eq!(c.allowed_uids, vec![nix::unistd::getuid().as_raw()]);
        assert_eq!(
            (
                c.policy.window_s,
                c.policy.address_cooling_s,
                c.policy.credential_maturity_s,
                c.policy.proof_max_age_s
            ),
            (86_400, 86_400, 86_400, 300)
        );
        assert_eq!(
            (
                c.policy.registration_maturity_s,
                c.policy.registrations_per_hour_max,
                c.policy.totp_budget_sats,
                c.policy.delay_max_s,
                c.policy.wait_max_s
            ),
            (259_200, 60, 5_000_000, 86_400, 604_800)
        );
        assert_eq!(c.alerts.outbox, Path::new("/var/lib/signer/alerts"));
        assert!(!c.alerts.notifies());
        assert!(c.cold.is_none());
        assert_eq!(c.review, ReviewConfig::default());
        assert_eq!(c.relying_party().id, "localhost");
    }

    const CONTRACT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    fn token(asset_id: u32, contract: &str, per_tx_max: u64, window_max: u64) -> String {
        format!(
            "[[eth.tokens]]\nasset_id = {asset_id}\ncontract = \"{contract}\"\nper_tx_max = {per_tx_max}\nwindow_max = {window_max}\n"
        )
    }

    #[test]
    fn an_ethereum_signer_needs_only_its_chain_id_and_gets_safe_caps() {
        let c = Config::parse(
            &format!("{BASE}\n[eth]\nchain_id = 31337\n{}", token(2, CONTRACT, 5, 9)),
            Path::new("."),
        )
        .unwrap();
        let e = c.eth.unwrap();
        assert_eq!(e.policy.chain_id, 31337);
        assert_eq!(
            (
                e.policy.max_fee_per_gas_max,
                e.policy.priority_fee_max,
                e.policy.gas_limit_max,
                e.policy.fee_max_wei
            ),
            (
                u128::from(ETH_MAX_FEE_PER_GAS_MAX_DEFAULT),
                u128::from(ETH_PRIORITY_FEE_MAX_DEFAULT),
                ETH_GAS_LIMIT_MAX_DEFAULT,
                u128::from(ETH_FEE_MAX_WEI_DEFAULT)
            )
        );
        // Every key given (the example of the module's documentation).
        let text = format!(
            "{BASE}\n[eth]\nchain_id = 1\nmax_fee_per_gas_max = 300000000000\npriority_fee_max = 6000000000\ngas_limit_max = 90000\nfee_max_wei = 9000000000000000000\nstart_nonce = 12\n"
        );
        let all = Config::parse(&text, Path::new(".")).unwrap().eth.unwrap();
        assert_eq!(
            (
                all.policy.max_fee_per_gas_max,
                all.policy.priority_fee_max,
                all.policy.gas_limit_max,
                all.policy.fee_max_wei,
                all.start_nonce
            ),
            (
                300_000_000_000,
                6_000_000_000,
                90_000,
                9_000_000_000_000_000_000,
                12
            )
        );
        assert_eq!(e.start_nonce, 0);
        assert_eq!(
            e.policy.tokens,
            vec![kinko_chain::eth::EthAddress::parse(CONTRACT).unwrap()]
        );
        assert_eq!(
            e.token(AssetId(2)).map(|t| (t.per_tx_max, t.window_max)),
            Some((5, 9))
        );
        assert!(e.token(AssetId(1)).is_none());
        assert_eq!(e.cold_contract, None, "no cold contract unless configured");
        let cold = Config::parse(
            &format!(
                "{BASE}\n[eth]\nchain_id = 1\ncold_contract = \"{}\"\n",
                "0x00000000000000000000000000000000000000c0"
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            cold.eth.unwrap().cold_contract,
            Some(kinko_chain::eth::EthAddress([
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0
            ]))
        );
        assert!(Config::parse(BASE, Path::new(".")).unwrap().eth.is_none());
    }

    #[test]
    fn refuses_what_is_wrong() {
        let cases = [
            BASE.replace("asset_id = 1", "asset_id = 1\nsurprise = true"),
            BASE.replace("litecoin-regtest", "dogecoin"),
            BASE.replace("\"LTC\"", "\"ltc\""),
            BASE.replace("per_tx_max_sats = 100", "per_tx_max_sats = 10000"),
            BASE.replace("fee_max_sats = 10", "fee_max_sats = 10\nextra = 1"),
            BASE.replace("asset_id = 1", "asset_id = 1\nallowed_uids = []"),
            BASE.replace("origins = [\"http://localhost:8080\"]", "origins = []"),
            format!("{BASE}\n[cold]\nthreshold = 2\nkeys = [\"[00000000/48h]tpubnonsense\"]\n"),
            format!("{BASE}\n[cold]\nthreshold = 0\nkeys = []\n"),
            format!("{BASE}\n[review]\napprovals = 0\n"),
            format!("{BASE}\n[review]\nsurprise = 1\n"),
            format!("{BASE}\n[alerts]\nwebhook_url = \"https://x/\"\n"),
            format!("{BASE}\n[alerts]\nsmtp_relay = \"127.0.0.1:25\"\n"),
            format!("{BASE}\n[alerts]\nrecipients = [\"not an address\"]\n"),
            BASE.replace(
                "fee_max_sats = 10",
                "fee_max_sats = 10\ndelay_max_s = 10\nwait_max_s = 5",
            ),
            format!("{BASE}\n[eth]\nmax_fee_per_gas_max = 1\n"),
            format!("{BASE}\n[eth]\nchain_id = 0\n"),
            format!("{BASE}\n[eth]\nchain_id = 1\nsurprise = 1\n"),
            format!("{BASE}\n[eth]\nchain_id = 1\npriority_fee_max = 300000000000\n"),
            format!("{BASE}\n[eth]\nchain_id = 1\ngas_limit_max = 20999\n"),
            format!("{BASE}\n[eth]\nchain_id = 1\nfee_max_wei = 0\n"),
            format!("{BASE}\n[eth]\nchain_id = 1\nmax_fee_per_gas_max = 0\npriority_fee_max = 0\n"),
            format!("{BASE}\n[eth]\nchain_id = 1\n{}", token(2, CONTRACT, 10, 5)),
            format!("{BASE}\n[eth]\nchain_id = 1\n{}", token(2, CONTRACT, 0, 5)),
            format!("{BASE}\n[eth]\nchain_id = 1\n{}", token(1, CONTRACT, 1, 5)),
            format!("{BASE}\n[eth]\nchain_id = 1\ncold_contract = \"0x12\"\n"),
            format!(
                "{BASE}\n[eth]\nchain_id = 1\ncold_contract = \"0x{}\"\n",
                "0".repeat(40)
            ),
            format!(
                "{BASE}\n[eth]\nchain_id = 1\ncold_contract = \"{CONTRACT}\"\n{}",
                token(2, CONTRACT, 1, 5)
            ),
            format!(
                "{BASE}\n[eth]\nchain_id = 1\n{}",
                token(2, "0x5fbdb2315678afecb367f032d93f642f64180aa", 1, 5)
            ),
            format!(
                "{BASE}\n[eth]\nchain_id = 1\n{}{}",
                token(2, CONTRACT, 1, 5),
                token(3, CONTRACT, 1, 5)
            ),
            format!(
                "{BASE}\n[eth]\nchain_id = 1\n{}{}",
                token(2, CONTRACT, 1, 5),
                token(2, "0xdAC17F958D2ee523a2206206994597C13D831ec7", 1, 5)
            ),
        ];
        for text in cases {
            assert!(Config::parse(&text, Path::new(".")).is_err(), "{text}");
        }
    }
}
