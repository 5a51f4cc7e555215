//! Configuration: built-in defaults, overridden by a TOML file (unknown keys refused), then by
//! environment variables and flags.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the journal and snapshots live.
    pub data_dir: PathBuf,
    pub engine: EngineSection,
    pub api: ApiSection,
    pub identity: IdentitySection,
    pub mail: MailSection,
    pub log: LogSection,
    /// Assets the engine serves; defined (journaled) at first start, checked at every start.
    pub assets: Vec<AssetSection>,
    /// Spot markets; defined at first start, checked at every start.
    pub markets: Vec<MarketSection>,
    /// Real chains: one section per asset kept on a Bitcoin-Core-protocol node, with the
    /// isolated signer that holds its hot key.
    pub custody: Vec<CustodySection>,
    pub audit: AuditSection,
    /// The signer as a witness of the journal and the audit log.
    pub witness: WitnessSection,
    /// The initial withdrawal risk policy: applied at first start (while the engine has none);
    /// afterwards it changes only by two-admin proposals. Each of its three lists that the file
    /// sets replaces the built-in default list ([`RiskSection::default`]); a list it does not
    /// set keeps the default, so loosening is always an explicit line (`rules = []`).
    pub risk: RiskSection,
    /// The simulated chain: off unless `--demo` or `[sim] enabled = true`; never beside a real
    /// chain (`[[custody]]`).
    pub sim: SimSection,
    /// Regulatory reports `kinko serve` writes on a schedule.
    pub reports: ReportsSection,
    /// A replicated cluster (docs/design/replication.md): absent, the node is the single-node
    /// engine and nothing NATS-related starts.
    pub cluster: Option<ClusterSection>,
}

/// Reports written by `kinko serve` (`kinko report segregation` writes the same on demand).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsSection {
    /// Where the files go (empty: `<data_dir>/reports`).
    pub dir: PathBuf,
    /// Seconds between segregation reports, the first at start; 0 turns them off (an explicit
    /// line: the regulator expects one a day).
    pub segregation_every_s: u64,
}

impl Default for ReportsSection {
    fn default() -> ReportsSection {
        ReportsSection {
            dir: PathBuf::new(),
            segregation_every_s: 86_400,
        }
    }
}

/// `[cluster]`: the journal replicated on NATS JetStream, a lease for the one writer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// NATS server URLs, e.g. `["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]`.
    pub servers: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// This node's API address as clients reach it (`NOT_LEADER` answers name the leader's).
    pub advertise: String,
    /// The lease's time to live: failover takes about this long after a primary dies.
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// How long one publish waits for the stream's acknowledgement before it is retried.
    #[serde(default = "default_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Replicas of the stream and the lease bucket.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Start as a standby that takes the lease only after some other node has held it
    /// (`kinko serve --standby` sets it).
    #[serde(default)]
    pub standby: bool,
}

/// Longer than a JetStream leader election (a few seconds), so that losing the NATS node that
/// led the stream or the lease bucket does not lapse the lease of a healthy primary.
fn default_lease_ttl_ms() -> u64 {
    10_000
}
fn default_publish_timeout_ms() -> u64 {
    1_000
}
fn default_replicas() -> usize {
    3
}

impl ClusterSection {
    pub fn cluster_config(&self) -> kinko_cluster::ClusterConfig {
        let mut c = kinko_cluster::ClusterConfig::new(self.servers.clone(), &self.node, &self.advertise);
        c.lease_ttl = std::time::Duration::from_millis(self.lease_ttl_ms.max(100));
        c.publish_timeout = std::time::Duration::from_millis(self.publish_timeout_ms.max(10));
        c.replicas = self.replicas.max(1);
        c.standby = self.standby;
        c
    }
}

/// The simulated chain (`crates/sim`): every chain asset "on chain" inside this process, and
/// `POST /api/v1/sim/deposits` minting deposits. For development and demos only.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SimSection {
    /// Run the simulated chain without `--demo`. Refused with any `[[custody]]` section.
    pub enabled: bool,
}

/// Withdrawal risk: rules in order (the first match decides), limits by tier, per-asset review
/// thresholds and hourly hot-wallet caps. Amounts are decimals in whole units of the asset.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RiskSection {
    pub rules: Vec<RuleSection>,
    pub limits: Vec<LimitSection>,
    pub assets: Vec<AssetRiskSection>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub name: String,
    /// Only this asset (default: every asset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// `new_device` (hours), `balance_share` (percent), `shared_destination` (accounts,
    /// window_s), `platform_surge` (multiple, window_s, baseline_s, min_count),
    /// `after_security_change` (hours), `unlimited` (no limit for the account's tier and the
    /// asset, or no `[[risk.assets]]` row), `always`.
    pub when: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u32>,
    /// `allow`, `delay` (with delay_s), `review`, `reject`, `halt_asset`.
    pub then: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_s: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    pub tier: u8,
    pub asset: String,
    pub day_max: String,
    pub month_max: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AssetRiskSection {
    pub asset: String,
    /// Held withdrawals at or above this need two reviewers.
    pub dual_approval_from: String,
    /// The platform's hot-wallet outflow per rolling hour.
    pub hot_outflow_per_hour: String,
}

/// The built-in policy (docs/design/withdrawals.md, "The default policy", gives the reason for
/// each row). README.md shows it in full; a test compares the two.
impl Default for RiskSection {
    fn default() -> Self {
        let rule = |name: &str, when: &str, then: &str| RuleSection {
            name: name.into(),
            asset: None,
            when: when.into(),
            hours: None,
            percent: None,
            accounts: None,
            window_s: None,
            multiple: None,
            baseline_s: None,
            min_count: None,
            then: then.into(),
            delay_s: None,
        };
        const DAY_S: u64 = 86_400;
        let rules = vec![
            RuleSection {
                accounts: Some(10),
                window_s: Some(DAY_S),
                ..rule("fan-in-halt", "shared_destination", "halt_asset")
            },
            RuleSection {
                accounts: Some(3),
                window_s: Some(DAY_S),
                ..rule("fan-in", "shared_destination", "review")
            },
            RuleSection {
                multiple: Some(5),
                window_s: Some(3_600),
                baseline_s: Some(7 * DAY_S),
                min_count: Some(20),
                ..rule("platform-surge", "platform_surge", "review")
            },
            rule("unlimited", "unlimited", "review"),
            RuleSection {
                hours: Some(72),
                ..rule("after-security-change", "after_security_change", "review")
            },
            RuleSection {
                percent: Some(50),
                delay_s: Some(3_600),
                ..rule("large-share", "balance_share", "delay")
            },
            RuleSection {
                hours: Some(24),
                delay_s: Some(3_600),
                ..rule("new-device", "new_device", "delay")
            },
        ];
        // (asset, tier 0 per day, tier 1 per day; 30 days: ten times the day), then the dual
        // approval threshold and the hourly hot outflow cap: about USD 60,000 a day at tier 0,
        // five times that at tier 1, two reviewers from about USD 30,000, about USD 300,000 an
        // hour out of the hot wallet (at the demo's reference prices).
        let table = [
            ("BTC", "2", "10", "1", "10"),
            ("ETH", "30", "150", "15", "150"),
            ("LTC", "750", "3750", "375", "3750"),
            ("USD", "60000", "300000", "30000", "300000"),
            ("JPY", "9000000", "45000000", "4500000", "45000000"),
        ];
        let month = |day: &str| format!("{}0", day);
        let mut limits = Vec::new();
        for (tier, pick) in [(0u8, 1usize), (1, 2)] {
            for row in &table {
                let day = if pick == 1 { row.1 } else { row.2 };
                limits.push(LimitSection {
                    tier,
                    asset: row.0.into(),
                    day_max: day.into(),
                    month_max: month(day),
                });
            }
        }
        let assets = table
            .iter()
            .map(|r| AssetRiskSection {
                asset: r.0.into(),
                dual_approval_from: r.3.into(),
                hot_outflow_per_hour: r.4.into(),
            })
            .collect();
        RiskSection {
            rules,
            limits,
            assets,
        }
    }
}

impl RiskSection {
    /// The engine's policy; `asset` maps a code to (id, decimals).
    pub fn policy(
        &self,
        asset: &dyn Fn(&str) -> Option<(kinko_core::AssetId, u8)>,
    ) -> anyhow::Result<kinko_core::risk::RiskPolicy> {
        use kinko_core::risk::{AssetRisk, Condition, Decision, RiskPolicy, RiskRule, TierLimit};
        let find = |code: &str| asset(code).with_context(|| format!("risk: no asset {code} in [[assets]]"));
        let builtin = RiskSection::default();
        // The built-in rows name the default assets; those the config does not list are left
        // out (the `unlimited` rule holds withdrawals of any asset without limits). Rows the
        // file writes itself must name configured assets.
        let skip = |code: &str, default: bool| default && asset(code).is_none();
        let amount = |code: &str, text: &str| -> anyhow::Result<kinko_core::Amount> {
            let (_, d) = find(code)?;
            kinko_core::Amount::from_decimal(text, d)
                .map_err(|e| anyhow::anyhow!("risk: {text:?} is not an amount of {code}: {e}"))
        };
        let mut rules = Vec::new();
        let default_rules = self.rules == builtin.rules;
        for r in &self.rules {
            if r.asset.as_deref().is_some_and(|c| skip(c, default_rules)) {
                continue;
            }
            let need = |v: Option<u64>, what: &str| {
                v.with_context(|| format!("risk rule {}: `{}` needs `{what}`", r.name, r.when))
            };
            let when = match r.when.as_str() {
                "new_device" => Condition::NewDevice {
                    hours: need(r.hours.map(u64::from), "hours")? as u32,
                },
                "balance_share" => Condition::BalanceShare {
                    percent: need(r.percent.map(u64::from), "percent")? as u32,
                },
                "shared_destination" => Condition::SharedDestination {
                    accounts: need(r.accounts.map(u64::from), "accounts")? as u32,
                    window_s: need(r.window_s, "window_s")?,
                },
                "platform_surge" => Condition::PlatformSurge {
                    multiple: need(r.multiple.map(u64::from), "multiple")? as u32,
                    window_s: need(r.window_s, "window_s")?,
                    baseline_s: need(r.baseline_s, "baseline_s")?,
                    min_count: r.min_count.unwrap_or(1),
                },
                "after_security_change" => Condition::AfterSecurityChange {
                    hours: need(r.hours.map(u64::from), "hours")? as u32,
                },
                "unlimited" => Condition::Unlimited,
                "always" => Condition::Always,
                other => bail!("risk rule {}: unknown condition {other:?}", r.name),
            };
            let then = match r.then.as_str() {
                "allow" => Decision::Allow,
                "delay" => Decision::Delay {
                    seconds: need(r.delay_s, "delay_s")?,
                },
                "review" => Decision::Review,
                "reject" => Decision::Reject,
                "halt_asset" => Decision::HaltAsset,
                other => bail!("risk rule {}: unknown decision {other:?}", r.name),
            };
            let asset = match &r.asset {
                Some(code) => Some(find(code)?.0),
                None => None,
            };
            rules.push(RiskRule {
                name: r.name.clone(),
                asset,
                when,
                then,
            });
        }
        let mut limits = Vec::new();
        let default_limits = self.limits == builtin.limits;
        for l in &self.limits {
            if skip(&l.asset, default_limits) {
                continue;
            }
            limits.push(TierLimit {
                tier: l.tier,
                asset: find(&l.asset)?.0,
                day_max: amount(&l.asset, &l.day_max)?,
                month_max: amount(&l.asset, &l.month_max)?,
            });
        }
        let mut assets = Vec::new();
        let default_assets = self.assets == builtin.assets;
        for a in &self.assets {
            if skip(&a.asset, default_assets) {
                continue;
            }
            assets.push(AssetRisk {
                asset: find(&a.asset)?.0,
                dual_approval_from: amount(&a.asset, &a.dual_approval_from)?,
                hot_outflow_per_hour: amount(&a.asset, &a.hot_outflow_per_hour)?,
            });
        }
        let p = RiskPolicy {
            rules,
            limits,
            assets,
        };
        if !p.valid() {
            bail!("risk: the policy is out of bounds (at most 64 rules, names of printable characters up to 64, windows and multiples above zero, baseline at least the window)");
        }
        Ok(p)
    }
}

/// The tamper-evident audit log of admin actions and security events.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Where the log lives (empty: `<data_dir>/audit`).
    pub dir: PathBuf,
    /// The checkpoint signing key (ed25519, created on first start; empty: `kinko-audit.key`
    /// beside the data directory, in its parent folder, where the master key's default is
    /// too). Kept outside the data directory: serve refuses a key inside it unless
    /// `dangerous_key_in_data_dir`. Keep a copy of its public key (`kinko audit verify` prints
    /// it) somewhere else.
    pub key_file: PathBuf,
    /// Seconds between signed checkpoints.
    pub checkpoint_s: u64,
    /// Allow the checkpoint key inside the data directory (whoever copies or rewrites the data
    /// directory can then re-sign the audit log).
    pub dangerous_key_in_data_dir: bool,
}

impl Default for AuditSection {
    fn default() -> AuditSection {
        AuditSection {
            dir: PathBuf::new(),
            key_file: PathBuf::new(),
            checkpoint_s: 60,
            dangerous_key_in_data_dir: false,
        }
    }
}

/// The signer as a witness: it cosigns the journal's head and the audit log's checkpoints
/// every `interval_s` (and the journal head with every signature it makes); kinko keeps the
/// cosignatures in `<data_dir>/witness/`, and `kinko journal verify` / `kinko audit verify`
/// check history against them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WitnessSection {
    /// The witness key (`kinko-signer witness-key`, 64 hex digits). Empty: cosignatures are
    /// still asked for and kept, but not checked (the verify commands say so).
    pub public_key: String,
    /// Seconds between cosignature requests.
    pub interval_s: u64,
    /// The witnessing signer's socket (empty: the first `[[custody]]` section's). No signer
    /// at all: nothing is witnessed.
    pub signer_socket: PathBuf,
}

impl Default for WitnessSection {
    fn default() -> WitnessSection {
        WitnessSection {
            public_key: String::new(),
            interval_s: 60,
            signer_socket: PathBuf::new(),
        }
    }
}

impl Config {
    /// Where scheduled reports go.
    pub fn reports_dir(&self) -> PathBuf {
        if self.reports.dir.as_os_str().is_empty() {
            self.data_dir.join("reports")
        } else {
            self.reports.dir.clone()
        }
    }

    pub fn audit_dir(&self) -> PathBuf {
        if self.audit.dir.as_os_str().is_empty() {
            self.data_dir.join("audit")
        } else {
            self.audit.dir.clone()
        }
    }
    pub fn audit_key_file(&self) -> PathBuf {
        if self.audit.key_file.as_os_str().is_empty() {
            let parent = self
                .data_dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            parent.join("kinko-audit.key")
        } else {
            self.audit.key_file.clone()
        }
    }
    /// Where the checkpoint key used to live by default (moved out at start).
    pub fn audit_key_file_legacy(&self) -> PathBuf {
        self.audit_dir().join("checkpoint.key")
    }
    pub fn witness_dir(&self) -> PathBuf {
        self.data_dir.join("witness")
    }
    /// The witnessing signer's socket, if any.
    pub fn witness_socket(&self) -> Option<PathBuf> {
        if !self.witness.signer_socket.as_os_str().is_empty() {
            return Some(self.witness.signer_socket.clone());
        }
        self.custody.first().map(|c| c.signer_socket.clone())
    }
    /// The configured witness key, if any.
    pub fn witness_key(&self) -> anyhow::Result<Option<ed25519_dalek::VerifyingKey>> {
        if self.witness.public_key.trim().is_empty() {
            return Ok(None);
        }
        kinko_audit::parse_public_key(&self.witness.public_key)
            .map(Some)
            .context("witness.public_key")
    }
}

/// Custody of one asset on a Bitcoin-Core JSON-RPC node (docs/design/custody.md), or of ETH
/// or one of its tokens on an Ethereum JSON-RPC node (`network = "ethereum"`,
/// docs/design/ethereum.md).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CustodySection {
    /// The asset's code (defined in `[[assets]]`).
    pub asset: String,
    /// `litecoin`, `litecoin-testnet`, `litecoin-regtest` or `ethereum`.
    pub network: String,
    /// The node's JSON-RPC endpoint, e.g. `http://127.0.0.1:9332`.
    pub rpc_url: String,
    /// Litecoin only.
    #[serde(default)]
    pub rpc_user: String,
    /// A file holding the RPC password (or the environment variable `KINKO_RPC_PASSWORD_<ASSET>`).
    #[serde(default)]
    pub rpc_password_file: Option<PathBuf>,
    /// Names of the node's watch-only wallets: `<prefix>-hot`, `<prefix>-cold`.
    #[serde(default)]
    pub wallet_prefix: Option<String>,
    /// The hot account's public key, as `kinko-signer xpub` prints it (Litecoin).
    #[serde(default)]
    pub hot_key: String,
    /// Each cold keyholder's public key (`kinko-signer xpub` of a cold keystore; Litecoin).
    #[serde(default)]
    pub cold_keys: Vec<String>,
    #[serde(default = "default_cold_threshold")]
    pub cold_threshold: usize,
    /// The signer's Unix socket.
    pub signer_socket: PathBuf,
    #[serde(default = "default_confirmations")]
    pub confirmations: u32,
    /// Depth at which a transaction is final (coins spendable, withdrawals completed); at
    /// least `confirmations`. Default: the larger of `confirmations` and 6.
    #[serde(default)]
    pub finality_depth: Option<u32>,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    #[serde(default = "default_fee_rate")]
    pub fee_rate_sat_vb: u64,
    /// The hot wallet's share of customer funds, in basis points (500 = 5%).
    #[serde(default = "default_hot_share_bps")]
    pub hot_share_bps: u32,
    /// The hot wallet's absolute cap, a decimal in whole units of the asset (required for
    /// Litecoin; Ethereum: none unless set).
    #[serde(default)]
    pub hot_cap: String,
    #[serde(default = "default_lookahead")]
    pub lookahead: u32,
    /// Seconds between full reconciliations (customer funds against custody on the node);
    /// also once at start. Default a day.
    #[serde(default)]
    pub full_reconcile_s: Option<u64>,
    /// Blocks below the tip a scan restarts from when the node does not know its stored
    /// cursor (a new or restored node); 0: the whole wallet history. Default 1000.
    #[serde(default = "default_rescan_depth")]
    pub rescan_depth: u32,
    /// Consecutive polls without reconciliation before the asset's withdrawals are halted and
    /// an incident is opened. Default 5 (10 s at the default poll).
    #[serde(default = "default_reconcile_failures_max")]
    pub reconcile_failures_max: u32,
    /// A sweep waits until company funds (fee revenue, the company treasury) can pay its
    /// miner fee; `false` lets customers' coins pay it (a `reserve_shortfall` incident).
    #[serde(default = "default_true")]
    pub sweep_waits_for_company_funds: bool,
    /// Ethereum: the chain id the node must report (1 mainnet, 31337 Anvil).
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// Ethereum: the signer's account xpub (`m/44'/60'/0'`), as `kinko-signer eth-xpub`
    /// prints it; deposit and hot addresses are derived from it.
    #[serde(default)]
    pub xpub: Option<String>,
    /// Ethereum: the token's contract (EIP-55); none for ETH itself. A token section shares
    /// the chain, node and signer of the ETH section with the same `signer_socket`.
    #[serde(default)]
    pub token_contract: Option<String>,
    /// Ethereum: gas offered per withdrawal (21000 for ETH, 80000 for a token by default).
    #[serde(default)]
    pub gas_limit: Option<u64>,
    /// Ethereum (ETH section): the priority fee offered, and the most offered per gas (wei);
    /// above it withdrawals wait. Defaults 1 gwei and 200 gwei.
    #[serde(default)]
    pub priority_fee_wei: Option<u64>,
    #[serde(default)]
    pub max_fee_per_gas_wei: Option<u64>,
    /// Ethereum (ETH section): the block deposits and the hot key are scanned from after each
    /// start. Default 0.
    #[serde(default)]
    pub start_block: Option<u64>,
    /// Ethereum (ETH section): the cold multisig contract (docs/design/ethereum.md, "Cold
    /// setup"): the excess of ETH and of its tokens over the hot share is sent there, refills
    /// come from it. None: no hot → cold.
    #[serde(default)]
    pub cold_contract: Option<String>,
    /// Ethereum: a deposit address's balance of the asset below this (a decimal) waits there
    /// instead of being swept to hot. Defaults: 0.01 ETH, 10 units of a token.
    #[serde(default)]
    pub sweep_min: Option<String>,
    /// Ethereum (ETH section): an ETH sweep waits while its gas is more than this share of
    /// what it moves (basis points). Default 1000 (10 %).
    #[serde(default)]
    pub sweep_gas_max_bps: Option<u32>,
}

fn default_true() -> bool {
    true
}

fn default_rescan_depth() -> u32 {
    kinko_custody::config::RESCAN_DEPTH_DEFAULT
}
fn default_reconcile_failures_max() -> u32 {
    kinko_custody::config::RECONCILE_FAILURES_MAX_DEFAULT
}

fn default_cold_threshold() -> usize {
    2
}
fn default_confirmations() -> u32 {
    6
}
fn default_poll_ms() -> u64 {
    2_000
}
fn default_fee_rate() -> u64 {
    10
}
fn default_hot_share_bps() -> u32 {
    500
}
fn default_lookahead() -> u32 {
    1_000
}

/// The Ethereum custody loops of `sections` (`network = "ethereum"`): one per ETH section,
/// with the token sections that name the same signer; `decimals` gives each asset's.
pub fn eth_custody(
    sections: &[CustodySection],
    decimals: impl Fn(&str) -> Option<u8>,
    data_dir: &Path,
) -> anyhow::Result<Vec<kinko_custody::eth_service::EthCustodyConfig>> {
    use kinko_custody::eth::EthAsset;
    use kinko_custody::eth_service::{EthCustodyConfig, ETH_TRANSFER_GAS, TOKEN_TRANSFER_GAS_DEFAULT};
    let eth: Vec<&CustodySection> = sections.iter().filter(|c| c.is_ethereum()).collect();
    let mut out: Vec<EthCustodyConfig> = Vec::new();
    for c in eth.iter().filter(|c| c.token_contract.is_none()) {
        c.check_ethereum()?;
        let a = &c.asset;
        let (Some(chain_id), Some(xpub)) = (c.chain_id, &c.xpub) else {
            bail!("custody {a}: an ETH section needs chain_id and xpub (kinko-signer eth-xpub)");
        };
        let account = xpub
            .parse::<kinko_chain::eth::Xpub>()
            .map_err(|e| anyhow::anyhow!("custody {a}: xpub: {e}"))?;
        if out.iter().any(|o| o.signer_socket == c.signer_socket) {
            bail!(
                "custody {a}: another ETH section uses signer {}",
                c.signer_socket.display()
            );
        }
        let confirmations = u64::from(c.confirmations);
        let finality_depth = u64::from(c.finality_depth.unwrap_or(c.confirmations));
        if confirmations == 0 || finality_depth < confirmations || c.poll_ms == 0 {
            bail!("custody {a}: confirmations and poll_ms must be at least 1, finality_depth at least confirmations");
        }
        let priority_fee = u128::from(c.priority_fee_wei.unwrap_or(1_000_000_000));
        let max_fee_cap = u128::from(c.max_fee_per_gas_wei.unwrap_or(200_000_000_000));
        if max_fee_cap == 0 || priority_fee > max_fee_cap {
            bail!("custody {a}: max_fee_per_gas_wei must be positive and at least priority_fee_wei");
        }
        let cold_contract = match &c.cold_contract {
            None => None,
            Some(x) => Some(
                kinko_chain::eth::EthAddress::parse(x)
                    .map_err(|e| anyhow::anyhow!("custody {a}: cold_contract: {e}"))?,
            ),
        };
        out.push(EthCustodyConfig {
            cold_contract,
            rpc_url: c.rpc_url.clone(),
            chain_id,
            account,
            signer_socket: c.signer_socket.clone(),
            confirmations,
            finality_depth,
            poll: std::time::Duration::from_millis(c.poll_ms),
            start_block: c.start_block.unwrap_or(0),
            priority_fee,
            max_fee_cap,
            sweep_gas_max_bps: {
                let bps = c.sweep_gas_max_bps.unwrap_or(1_000);
                if bps == 0 || bps > 10_000 {
                    bail!("custody {a}: sweep_gas_max_bps must be between 1 and 10000");
                }
                bps
            },
            assets: vec![c.eth_asset(EthAsset::Ether, ETH_TRANSFER_GAS, &decimals)?],
            state_dir: Some(data_dir.join("custody")),
        });
    }
    for c in eth.iter().filter(|c| c.token_contract.is_some()) {
        c.check_ethereum()?;
        let a = &c.asset;
        let contract = c.token_contract.as_deref().unwrap_or_default();
        let contract = kinko_chain::eth::EthAddress::parse(contract)
            .map_err(|e| anyhow::anyhow!("custody {a}: token_contract: {e}"))?;
        let Some(chain) = out.iter_mut().find(|o| o.signer_socket == c.signer_socket) else {
            bail!(
                "custody {a}: a token needs the ETH section of its signer ({})",
                c.signer_socket.display()
            );
        };
        if c.rpc_url != chain.rpc_url
            || c.chain_id.is_some_and(|id| id != chain.chain_id)
            || c.xpub
                .as_ref()
                .is_some_and(|x| x.parse::<kinko_chain::eth::Xpub>().ok() != Some(chain.account))
        {
            bail!("custody {a}: rpc_url, chain_id and xpub must be those of its ETH section");
        }
        if c.priority_fee_wei.is_some()
            || c.max_fee_per_gas_wei.is_some()
            || c.start_block.is_some()
            || c.sweep_gas_max_bps.is_some()
            || c.cold_contract.is_some()
        {
            bail!("custody {a}: fees, start_block, sweep_gas_max_bps and cold_contract are set in the ETH section");
        }
        if chain.assets.iter().any(|x| x.kind == EthAsset::Token(contract)) {
            bail!("custody {a}: token {contract} has two sections");
        }
        let asset = c.eth_asset(EthAsset::Token(contract), TOKEN_TRANSFER_GAS_DEFAULT, &decimals)?;
        chain.assets.push(asset);
    }
    Ok(out)
}

impl CustodySection {
    /// An Ethereum chain's asset (`network = "ethereum"`).
    pub fn is_ethereum(&self) -> bool {
        self.network == "ethereum"
    }

    /// Refuses Litecoin's keys and wallets in an Ethereum section.
    fn check_ethereum(&self) -> anyhow::Result<()> {
        if !self.rpc_user.is_empty()
            || !self.hot_key.is_empty()
            || !self.cold_keys.is_empty()
            || self.wallet_prefix.is_some()
        {
            bail!(
                "custody {}: rpc_user, hot_key, cold_keys and wallet_prefix are Litecoin's; an Ethereum section has xpub",
                self.asset
            );
        }
        Ok(())
    }

    fn eth_asset(
        &self,
        kind: kinko_custody::eth::EthAsset,
        gas_default: u64,
        decimals: &impl Fn(&str) -> Option<u8>,
    ) -> anyhow::Result<kinko_custody::eth_service::EthAssetConfig> {
        let a = &self.asset;
        let decimals = decimals(a).with_context(|| format!("custody {a}: no such asset in [[assets]]"))?;
        let hot_cap = if self.hot_cap.is_empty() {
            u128::MAX
        } else {
            kinko_core::Amount::from_decimal(&self.hot_cap, decimals)
                .with_context(|| {
                    format!("custody {a}: hot_cap must be a decimal with at most {decimals} places")
                })?
                .0
        };
        let sweep_min_default = match kind {
            kinko_custody::eth::EthAsset::Ether => "0.01",
            kinko_custody::eth::EthAsset::Token(_) => "10",
        };
        let sweep_min = kinko_core::Amount::from_decimal(
            self.sweep_min.as_deref().unwrap_or(sweep_min_default),
            decimals,
        )
        .with_context(|| format!("custody {a}: sweep_min must be a decimal with at most {decimals} places"))?
        .0;
        let gas_limit = self.gas_limit.unwrap_or(gas_default);
        if gas_limit < 21_000 || self.hot_share_bps > 10_000 {
            bail!("custody {a}: gas_limit must be at least 21000, hot_share_bps at most 10000");
        }
        Ok(kinko_custody::eth_service::EthAssetConfig {
            code: a.clone(),
            kind,
            gas_limit,
            hot_share_bps: self.hot_share_bps,
            hot_cap,
            sweep_min,
        })
    }

    /// The cold multisig: `cold_threshold` of `cold_keys`.
    pub fn cold(&self) -> anyhow::Result<kinko_chain::keys::ColdKeys> {
        use kinko_chain::keys::WatchKey;
        let a = &self.asset;
        let keys = self
            .cold_keys
            .iter()
            .map(|k| {
                k.parse::<WatchKey>()
                    .map_err(|e| anyhow::anyhow!("custody {a}: cold key {k}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.cold_threshold < 1 || self.cold_threshold > keys.len() || keys.len() > 15 {
            bail!("custody {a}: cold_threshold must be between 1 and the number of cold_keys (at most 15)");
        }
        Ok(kinko_chain::keys::ColdKeys {
            threshold: self.cold_threshold,
            keys,
        })
    }

    /// The custody service's configuration; `decimals` is the asset's. The `listsinceblock`
    /// cursors are kept in `<data_dir>/custody`.
    pub fn custody_config(
        &self,
        decimals: u8,
        data_dir: &Path,
    ) -> anyhow::Result<kinko_custody::CustodyConfig> {
        use kinko_chain::keys::WatchKey;
        let a = &self.asset;
        if self.chain_id.is_some()
            || self.xpub.is_some()
            || self.token_contract.is_some()
            || self.gas_limit.is_some()
            || self.priority_fee_wei.is_some()
            || self.max_fee_per_gas_wei.is_some()
            || self.start_block.is_some()
            || self.sweep_min.is_some()
            || self.sweep_gas_max_bps.is_some()
        {
            bail!("custody {a}: chain_id, xpub, token_contract, gas_limit, fees, start_block and sweeps are Ethereum's (network = \"ethereum\")");
        }
        if self.rpc_user.is_empty() {
            bail!("custody {a}: rpc_user is required");
        }
        let network = kinko_chain::Network::from_name(&self.network).with_context(|| {
            format!("custody {a}: network must be litecoin, litecoin-testnet or litecoin-regtest")
        })?;
        let hot_key: WatchKey = self
            .hot_key
            .parse()
            .map_err(|e| anyhow::anyhow!("custody {a}: hot_key: {e}"))?;
        let cold = self.cold()?;
        let env = format!("KINKO_RPC_PASSWORD_{}", a.to_ascii_uppercase());
        let rpc_password = match (&self.rpc_password_file, std::env::var(&env)) {
            (_, Ok(p)) => p,
            (Some(f), Err(_)) => std::fs::read_to_string(f)
                .with_context(|| format!("custody {a}: cannot read rpc_password_file {}", f.display()))?
                .trim()
                .to_owned(),
            (None, Err(_)) => bail!("custody {a}: set rpc_password_file or {env}"),
        };
        let hot_cap = u64::try_from(
            kinko_core::Amount::from_decimal(&self.hot_cap, decimals)
                .with_context(|| {
                    format!("custody {a}: hot_cap must be a decimal with at most {decimals} places")
                })?
                .0,
        )
        .with_context(|| format!("custody {a}: hot_cap too large"))?;
        if self.confirmations == 0
            || self.poll_ms == 0
            || self.fee_rate_sat_vb == 0
            || self.hot_share_bps > 10_000
        {
            bail!("custody {a}: confirmations, poll_ms and fee_rate_sat_vb must be at least 1; hot_share_bps at most 10000");
        }
        if self.reconcile_failures_max == 0 {
            bail!("custody {a}: reconcile_failures_max must be at least 1");
        }
        let finality_depth = self.finality_depth.unwrap_or(
            self.confirmations
                .max(kinko_custody::config::FINALITY_DEPTH_DEFAULT),
        );
        if finality_depth < self.confirmations {
            bail!("custody {a}: finality_depth must be at least confirmations");
        }
        Ok(kinko_custody::CustodyConfig {
            asset: a.clone(),
            network,
            rpc_url: self.rpc_url.clone(),
            rpc_user: self.rpc_user.clone(),
            rpc_password,
            wallet_prefix: self
                .wallet_prefix
                .clone()
                .unwrap_or_else(|| format!("kinko-{}", a.to_ascii_lowercase())),
            hot_key,
            cold,
            signer_socket: self.signer_socket.clone(),
            confirmations: self.confirmations,
            finality_depth,
            poll: std::time::Duration::from_millis(self.poll_ms),
            fee_rate_sat_vb: self.fee_rate_sat_vb,
            hot_share_bps: self.hot_share_bps,
            hot_cap,
            lookahead: self.lookahead.max(10),
            reconcile: true,
            full_reconcile_every: self.full_reconcile_s.map_or(
                kinko_custody::config::FULL_RECONCILE_EVERY_DEFAULT,
                std::time::Duration::from_secs,
            ),
            cursor_dir: Some(data_dir.join("custody")),
            rescan_depth: self.rescan_depth,
            sweep_waits_for_company_funds: self.sweep_waits_for_company_funds,
            reconcile_failures_max: self.reconcile_failures_max,
        })
    }
}

/// A market. Prices and sizes are decimal strings in whole units of the asset (e.g. "0.01").
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MarketSection {
    /// `BASE-QUOTE`, both configured assets.
    pub symbol: String,
    /// Price increment (quote per base unit).
    pub tick: String,
    /// Quantity increment (base).
    pub lot: String,
    pub qty_min: String,
    pub qty_max: String,
    /// Notional limits (quote).
    pub notional_min: String,
    pub notional_max: String,
    /// Orders must be priced within ± this many basis points of the reference price.
    pub band_bps: u32,
    /// Reference price before the first trade (quote per base unit).
    pub reference_price: String,
    /// Market orders are refused when the reference is older than this (0 = never).
    #[serde(default = "default_reference_age_s")]
    pub reference_age_max_s: u64,
    /// Fees by account tier, `[maker_bps, taker_bps]`; the first is tier 0.
    #[serde(default = "default_fees")]
    pub fee_tiers_bps: Vec<[u32; 2]>,
    #[serde(default = "default_open_orders")]
    pub open_orders_per_account_max: u32,
    /// A limit buy that would not trade on arrival may rest down to this share of the reference
    /// price, in basis points (2,000 = 20 %); one that would trade stays within `band_bps`.
    #[serde(default = "default_passive_buy_floor")]
    pub passive_buy_floor_bps: u32,
    /// A limit sell that would not trade on arrival may rest up to this multiple of the
    /// reference price, in basis points (50,000 = 5×).
    #[serde(default = "default_passive_sell_ceiling")]
    pub passive_sell_ceiling_bps: u32,
}

fn default_reference_age_s() -> u64 {
    3_600
}
fn default_fees() -> Vec<[u32; 2]> {
    vec![[10, 20], [5, 15], [0, 10]]
}
fn default_open_orders() -> u32 {
    500
}
fn default_passive_buy_floor() -> u32 {
    kinko_core::market::PassiveBand::DEFAULT.buy_floor_bps
}
fn default_passive_sell_ceiling() -> u32 {
    kinko_core::market::PassiveBand::DEFAULT.sell_ceiling_bps
}

impl MarketSection {
    /// The passive side's limits (`Command::SetPassiveBand`).
    pub fn passive_band(&self) -> kinko_core::market::PassiveBand {
        kinko_core::market::PassiveBand {
            buy_floor_bps: self.passive_buy_floor_bps,
            sell_ceiling_bps: self.passive_sell_ceiling_bps,
        }
    }

    /// The engine's market spec, with amounts converted to minor units of each asset.
    pub fn spec(&self, engine: &kinko_core::Engine) -> anyhow::Result<kinko_core::market::MarketSpec> {
        let (b, q) = self
            .symbol
            .split_once('-')
            .ok_or_else(|| anyhow::anyhow!("market {}: symbol must be BASE-QUOTE", self.symbol))?;
        let asset = |code: &str| {
            engine
                .asset_by_code(code)
                .ok_or_else(|| anyhow::anyhow!("market {}: asset {code} is not configured", self.symbol))
        };
        let (base, quote) = (asset(b)?, asset(q)?);
        let bd = engine.asset(base).map(|a| a.decimals).unwrap_or(0);
        let qd = engine.asset(quote).map(|a| a.decimals).unwrap_or(0);
        let amt = |what: &str, text: &str, d: u8| {
            kinko_core::Amount::from_decimal(text, d)
                .map_err(|e| anyhow::anyhow!("market {}: {what} {text:?}: {e}", self.symbol))
        };
        Ok(kinko_core::market::MarketSpec {
            symbol: self.symbol.clone(),
            base,
            quote,
            tick: amt("tick", &self.tick, qd)?,
            lot: amt("lot", &self.lot, bd)?,
            qty_min: amt("qty_min", &self.qty_min, bd)?,
            qty_max: amt("qty_max", &self.qty_max, bd)?,
            notional_min: amt("notional_min", &self.notional_min, qd)?,
            notional_max: amt("notional_max", &self.notional_max, qd)?,
            band_bps: self.band_bps,
            reference_price: amt("reference_price", &self.reference_price, qd)?,
            reference_age_max_ns: self.reference_age_max_s.saturating_mul(1_000_000_000),
            fee_tiers: self
                .fee_tiers_bps
                .iter()
                .map(|[m, t]| kinko_core::market::FeeTier {
                    maker_bps: *m,
                    taker_bps: *t,
                })
                .collect(),
            open_orders_per_account_max: self.open_orders_per_account_max,
        })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub inbox_commands_max: usize,
    pub batch_commands_max: usize,
    pub snapshot_every_commands: u64,
    pub snapshots_keep: usize,
    pub audit_every_commands: u64,
    pub tick_ms: u64,
    pub segment_bytes_max: u64,
}

/// The HTTP gateway.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Address to listen on (loopback by default; put a TLS proxy in front for the internet).
    pub listen: String,
    pub body_bytes_max: usize,
    /// Per API key or session, every request (order entry draws only on this): burst and
    /// sustained requests per second (0: no limit).
    pub rate_per_key_burst: u32,
    pub rate_per_key_per_s: u32,
    /// Per API key or session, the other private requests, on top.
    pub rate_private_per_key_burst: u32,
    pub rate_private_per_key_per_s: u32,
    /// Per client IP, every request.
    pub rate_per_ip_burst: u32,
    pub rate_per_ip_per_s: u32,
    /// Per client IP, unauthenticated reads (market data), on top.
    pub rate_public_per_ip_burst: u32,
    pub rate_public_per_ip_per_s: u32,
    pub shutdown_timeout_s: u64,
    /// Coinbase-style signed requests must carry a timestamp within this many seconds.
    pub signature_window_s: u64,
    /// How long a new withdrawal address waits before it can be used (at least 1: zero is a
    /// two-admin proposal, `whitelist_address`).
    pub withdrawal_cooling_s: u64,
    /// Tokio worker threads for HTTP (0 = one per core).
    pub worker_threads: usize,
    /// File holding the master key that seals API secrets at rest (64 hex characters). Keep it
    /// outside the data directory. Created on first start when missing. The environment
    /// variable KINKO_MASTER_KEY, when set, takes precedence.
    pub master_key_file: PathBuf,
    /// Proxies (IPs or CIDR blocks) allowed to name the client in `Forwarded` /
    /// `X-Forwarded-For`. Empty: those headers are ignored.
    pub trusted_proxies: Vec<String>,
}

impl Default for ApiSection {
    fn default() -> Self {
        let d = kinko_api::ApiConfig::default();
        ApiSection {
            listen: d.listen.to_string(),
            body_bytes_max: d.body_bytes_max,
            rate_per_key_burst: d.rate_per_key.burst,
            rate_per_key_per_s: d.rate_per_key.per_second,
            rate_private_per_key_burst: d.rate_private_per_key.burst,
            rate_private_per_key_per_s: d.rate_private_per_key.per_second,
            rate_per_ip_burst: d.rate_per_ip.burst,
            rate_per_ip_per_s: d.rate_per_ip.per_second,
            rate_public_per_ip_burst: d.rate_public_per_ip.burst,
            rate_public_per_ip_per_s: d.rate_public_per_ip.per_second,
            shutdown_timeout_s: d.shutdown_timeout.as_secs(),
            signature_window_s: d.signature_window_s,
            withdrawal_cooling_s: d.withdrawal_cooling.as_secs(),
            worker_threads: 0,
            master_key_file: PathBuf::from("./kinko-master.key"),
            trusted_proxies: Vec::new(),
        }
    }
}

impl ApiSection {
    pub fn api_config(&self) -> anyhow::Result<kinko_api::ApiConfig> {
        use kinko_api::ratelimit::Rate;
        use std::time::Duration;
        if self.withdrawal_cooling_s == 0 {
            anyhow::bail!(
                "api.withdrawal_cooling_s must be at least 1: an address usable at once is a two-person \
                 decision (a whitelist_address proposal two treasury admins approve in the console)"
            );
        }
        Ok(kinko_api::ApiConfig {
            listen: self.listen.parse().with_context(|| {
                format!(
                    "api.listen {:?} is not an address like 127.0.0.1:8080",
                    self.listen
                )
            })?,
            body_bytes_max: self.body_bytes_max,
            rate_per_key: Rate {
                burst: self.rate_per_key_burst,
                per_second: self.rate_per_key_per_s,
            },
            rate_private_per_key: Rate {
                burst: self.rate_private_per_key_burst,
                per_second: self.rate_private_per_key_per_s,
            },
            rate_per_ip: Rate {
                burst: self.rate_per_ip_burst,
                per_second: self.rate_per_ip_per_s,
            },
            rate_public_per_ip: Rate {
                burst: self.rate_public_per_ip_burst,
                per_second: self.rate_public_per_ip_per_s,
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_s),
            signature_window_s: self.signature_window_s,
            withdrawal_cooling: Duration::from_secs(self.withdrawal_cooling_s),
            read_wait: kinko_api::ApiConfig::default().read_wait,
            ws: kinko_api::ApiConfig::default().ws,
            identity: Default::default(),
            operator_token_hash: None,
            throttle_file: None,
            trusted_proxies: {
                for p in &self.trusted_proxies {
                    if kinko_core::keys::parse_ip_entry(p).is_none() {
                        anyhow::bail!("api.trusted_proxies: {p:?} is not an IP address or CIDR block");
                    }
                }
                self.trusted_proxies.clone()
            },
        })
    }
}

/// Accounts, sessions and second factors.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// Base of the links in messages (the freeze link, password reset), e.g.
    /// `https://exchange.example`. Empty: `http://localhost:<port>`.
    pub public_url: String,
    /// WebAuthn relying-party id: the host name users see (`localhost` in development).
    pub rp_id: String,
    /// Origins allowed in WebAuthn ceremonies; empty: `http://localhost:<port>`.
    pub rp_origins: Vec<String>,
    pub session_ttl_s: u64,
    /// Withdrawals stay locked this long after a password, email, factor or anti-phishing change.
    pub security_lock_s: u64,
    /// How old a second-factor proof may be when its action is applied.
    pub proof_fresh_s: u64,
    /// Failed logins or second-factor attempts per user (and per email, per IP) before a pause.
    pub failures_max: u32,
    pub failure_window_s: u64,
    /// The longest (and default) expiry of a new API key, in days.
    pub api_key_days_max: u32,
    /// argon2id memory (KiB) and passes.
    pub password_memory_kib: u32,
    pub password_passes: u32,
    /// File holding the operator token for `/api/v1/admin/...`; KINKO_OPERATOR_TOKEN overrides.
    /// Neither set: the operator endpoints are off.
    pub operator_token_file: PathBuf,
}

impl Default for IdentitySection {
    fn default() -> Self {
        let d = kinko_api::account::IdentityConfig::default();
        let p = kinko_core::identity::Policy::default();
        IdentitySection {
            public_url: d.public_url,
            rp_id: d.rp_id,
            rp_origins: d.rp_origins,
            session_ttl_s: d.session_ttl.as_secs(),
            security_lock_s: p.security_lock_ns / 1_000_000_000,
            proof_fresh_s: p.proof_fresh_ns / 1_000_000_000,
            failures_max: d.failures_max,
            failure_window_s: d.failure_window.as_secs(),
            api_key_days_max: d.api_key_days_max,
            password_memory_kib: d.password_cost.memory_kib,
            password_passes: d.password_cost.passes,
            operator_token_file: PathBuf::new(),
        }
    }
}

impl IdentitySection {
    pub fn config(&self) -> anyhow::Result<kinko_api::account::IdentityConfig> {
        use std::time::Duration;
        if self.password_memory_kib < 8 || self.password_passes == 0 {
            bail!("identity.password_memory_kib must be at least 8 and identity.password_passes at least 1");
        }
        if self.proof_fresh_s == 0 || self.proof_fresh_s > 3600 {
            bail!("identity.proof_fresh_s must be 1 to 3600");
        }
        if self.security_lock_s > 30 * 86_400 {
            bail!("identity.security_lock_s must be at most 30 days");
        }
        if self.api_key_days_max == 0 || self.api_key_days_max > 365 {
            bail!("identity.api_key_days_max must be 1 to 365");
        }
        let d = kinko_api::account::IdentityConfig::default();
        Ok(kinko_api::account::IdentityConfig {
            public_url: self.public_url.clone(),
            rp_id: self.rp_id.clone(),
            rp_origins: self.rp_origins.clone(),
            session_ttl: Duration::from_secs(self.session_ttl_s.max(60)),
            login_ttl: d.login_ttl,
            api_key_ttl: Duration::from_secs(u64::from(self.api_key_days_max) * 86_400),
            api_key_days_max: self.api_key_days_max,
            failures_max: self.failures_max.max(1),
            failure_window: Duration::from_secs(self.failure_window_s.max(1)),
            password_cost: kinko_api::password::Cost {
                memory_kib: self.password_memory_kib,
                passes: self.password_passes,
            },
        })
    }

    pub fn policy(&self) -> kinko_core::identity::Policy {
        kinko_core::identity::Policy {
            security_lock_ns: self.security_lock_s.saturating_mul(1_000_000_000),
            proof_fresh_ns: self.proof_fresh_s.saturating_mul(1_000_000_000),
        }
    }
}

/// Where security messages go.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MailSection {
    /// `outbox` (one .eml file per message in `outbox_dir`; the development default) or `smtp`.
    pub mode: String,
    /// Relative paths are inside the data directory.
    pub outbox_dir: PathBuf,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub from: String,
    pub smtp_timeout_s: u64,
}

impl Default for MailSection {
    fn default() -> Self {
        MailSection {
            mode: "outbox".into(),
            outbox_dir: PathBuf::from("outbox"),
            smtp_host: "127.0.0.1".into(),
            smtp_port: 25,
            from: "kinko <security@kinko.localhost>".into(),
            smtp_timeout_s: 10,
        }
    }
}

impl MailSection {
    pub fn mailer(&self, data_dir: &Path) -> anyhow::Result<std::sync::Arc<dyn kinko_api::mail::Mailer>> {
        Ok(match self.mode.as_str() {
            "outbox" => {
                let dir = if self.outbox_dir.is_absolute() {
                    self.outbox_dir.clone()
                } else {
                    data_dir.join(&self.outbox_dir)
                };
                std::sync::Arc::new(kinko_api::mail::Outbox::new(dir))
            }
            "smtp" => std::sync::Arc::new(kinko_api::mail::Smtp {
                host: self.smtp_host.clone(),
                port: self.smtp_port,
                from: self.from.clone(),
                timeout: std::time::Duration::from_secs(self.smtp_timeout_s.max(1)),
            }),
            other => bail!("mail.mode {other:?} must be \"outbox\" or \"smtp\""),
        })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `kinko=debug`.
    pub level: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AssetSection {
    pub code: String,
    pub decimals: u8,
    /// What each withdrawal of the asset is charged, a decimal in whole units (at most
    /// `decimals` places); it pays the withdrawal's miner fee. Unset: the default of a known
    /// asset ([`default_withdrawal_fee`]); an asset kinko has no default for needs it whenever
    /// it has a `[[custody]]` section. `"0"` charges nothing (miner fees are then paid by
    /// company funds, or by customers' coins when those run out: a `reserve_shortfall`).
    #[serde(default)]
    pub withdrawal_fee: Option<String>,
    /// What TOTP alone may approve of the asset per customer in a rolling 24 h, a decimal in
    /// whole units: the engine's mirror of the signer's `totp_budget_sats` for an asset with a
    /// `[[custody]]` section, so a customer learns it at request time (`PASSKEY_REQUIRED`). Unset: the default of a known asset
    /// ([`default_totp_budget`]); `"0"`: not capped by the engine (the signer still caps).
    #[serde(default)]
    pub totp_budget: Option<String>,
}

/// The built-in daily TOTP-only budget of the assets kinko holds on chain (LTC: the signer's
/// default `totp_budget_sats`, 0.05 LTC).
pub fn default_totp_budget(code: &str) -> Option<&'static str> {
    match code {
        "BTC" => Some("0.001"),
        "ETH" => Some("0.02"),
        "LTC" => Some("0.05"),
        _ => None,
    }
}

/// The built-in withdrawal fee of the assets kinko knows: above a typical miner fee of one
/// withdrawal (BTC: a 141 vB transaction at about 140 sat/vB; ETH: 21,000 gas at about 95
/// gwei; LTC: what large exchanges charge, far above its usual fee), and a bank-transfer fee
/// for the fiat assets.
pub fn default_withdrawal_fee(code: &str) -> Option<&'static str> {
    match code {
        "BTC" => Some("0.0002"),
        "ETH" => Some("0.002"),
        "LTC" => Some("0.001"),
        "USD" => Some("1"),
        "JPY" => Some("100"),
        _ => None,
    }
}

impl AssetSection {
    /// The daily TOTP-only budget in minor units (zero: none).
    pub fn totp_budget(&self) -> anyhow::Result<kinko_core::Amount> {
        let text = self
            .totp_budget
            .as_deref()
            .or_else(|| default_totp_budget(&self.code))
            .unwrap_or("0");
        kinko_core::Amount::from_decimal(text, self.decimals).map_err(|e| {
            anyhow::anyhow!(
                "asset {}: totp_budget {text:?} must be a decimal with at most {} places: {e}",
                self.code,
                self.decimals
            )
        })
    }

    /// The withdrawal fee in minor units: the configured one, or the asset's default (zero
    /// for an asset kinko has no default for).
    pub fn withdrawal_fee(&self) -> anyhow::Result<kinko_core::Amount> {
        let text = self
            .withdrawal_fee
            .as_deref()
            .or_else(|| default_withdrawal_fee(&self.code))
            .unwrap_or("0");
        kinko_core::Amount::from_decimal(text, self.decimals).map_err(|e| {
            anyhow::anyhow!(
                "asset {}: withdrawal_fee {text:?} must be a decimal with at most {} places: {e}",
                self.code,
                self.decimals
            )
        })
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        let d = kinko_engine::EngineConfig::new("");
        EngineSection {
            inbox_commands_max: d.inbox_commands_max,
            batch_commands_max: d.batch_commands_max,
            snapshot_every_commands: d.snapshot_every_commands,
            snapshots_keep: d.snapshots_keep,
            audit_every_commands: d.audit_every_commands,
            tick_ms: d.tick_ms,
            segment_bytes_max: d.segment_bytes_max,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let asset = |code: &str, decimals| AssetSection {
            code: code.into(),
            decimals,
            withdrawal_fee: default_withdrawal_fee(code).map(str::to_owned),
            totp_budget: default_totp_budget(code).map(str::to_owned),
        };
        Config {
            data_dir: PathBuf::from("./data"),
            engine: EngineSection::default(),
            api: ApiSection::default(),
            identity: IdentitySection::default(),
            mail: MailSection::default(),
            log: LogSection::default(),
            assets: vec![
                asset("BTC", 8),
                asset("ETH", 18),
                asset("LTC", 8),
                // Six decimals keep every tick × lot of the USD markets a whole number of
                // minor units (exact notionals, no rounding).
                asset("USD", 6),
                asset("JPY", 0),
            ],
            markets: vec![
                market("BTC-USD", "0.01", "0.0001", "1000", "10", "10000000", "30000"),
                market("ETH-USD", "0.01", "0.001", "10000", "10", "10000000", "2000"),
                market("LTC-USD", "0.01", "0.01", "100000", "10", "10000000", "80"),
                market(
                    "BTC-JPY",
                    "1000",
                    "0.001",
                    "1000",
                    "1000",
                    "1000000000",
                    "4500000",
                ),
            ],
            custody: Vec::new(),
            audit: AuditSection::default(),
            witness: WitnessSection::default(),
            reports: ReportsSection::default(),
            risk: RiskSection::default(),
            sim: SimSection::default(),
            cluster: None,
        }
    }
}

fn market(
    symbol: &str,
    tick: &str,
    lot: &str,
    qty_max: &str,
    n_min: &str,
    n_max: &str,
    reference: &str,
) -> MarketSection {
    MarketSection {
        symbol: symbol.into(),
        tick: tick.into(),
        lot: lot.into(),
        qty_min: lot.into(),
        qty_max: qty_max.into(),
        notional_min: n_min.into(),
        notional_max: n_max.into(),
        band_bps: 1_000,
        reference_price: reference.into(),
        reference_age_max_s: default_reference_age_s(),
        fee_tiers_bps: default_fees(),
        open_orders_per_account_max: default_open_orders(),
        passive_buy_floor_bps: default_passive_buy_floor(),
        passive_sell_ceiling_bps: default_passive_sell_ceiling(),
    }
}

impl Config {
    /// Loads the built-in defaults, then `file` if given.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let config = match file {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))?
            }
        };
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !matches!(self.log.format.as_str(), "text" | "json") {
            bail!(
                "log.format must be \"text\" or \"json\", not {:?}",
                self.log.format
            );
        }
        let e = &self.engine;
        if e.inbox_commands_max == 0 || e.batch_commands_max == 0 || e.tick_ms == 0 || e.snapshots_keep == 0 {
            bail!("engine.inbox_commands_max, batch_commands_max, tick_ms and snapshots_keep must be at least 1");
        }
        if e.segment_bytes_max < 1 << 20 {
            bail!("engine.segment_bytes_max must be at least 1 MiB");
        }
        self.api.api_config()?;
        self.risk.policy(&|code| {
            self.assets
                .iter()
                .position(|a| a.code == code)
                .map(|i| (kinko_core::AssetId(i as u32), self.assets[i].decimals))
        })?;
        if self.audit.checkpoint_s == 0 {
            bail!("audit.checkpoint_s must be at least 1");
        }
        if self.witness.interval_s == 0 {
            bail!("witness.interval_s must be at least 1");
        }
        self.witness_key()?;
        if self.sim.enabled && !self.custody.is_empty() {
            bail!(
                "[sim] enabled = true runs the simulated chain, which mints deposits: refused beside a real chain ([[custody]] {}); remove one of them",
                self.custody.iter().map(|c| c.asset.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        for c in &self.custody {
            let Some(a) = self.assets.iter().find(|a| a.code == c.asset) else {
                bail!("custody {}: no such asset in [[assets]]", c.asset);
            };
            if self.custody.iter().filter(|x| x.asset == c.asset).count() > 1 {
                bail!("custody {}: only one [[custody]] section per asset", c.asset);
            }
            if !c.is_ethereum() {
                c.custody_config(a.decimals, &self.data_dir)?;
            }
        }
        eth_custody(
            &self.custody,
            |code| self.assets.iter().find(|a| a.code == code).map(|a| a.decimals),
            &self.data_dir,
        )?;
        if self.api.body_bytes_max < 1024 {
            bail!("api.body_bytes_max must be at least 1024");
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.assets {
            kinko_core::AssetCode::new(&a.code).map_err(|e| anyhow::anyhow!("asset {:?}: {e}", a.code))?;
            if a.decimals > kinko_core::asset::DECIMALS_MAX {
                bail!(
                    "asset {}: decimals must be at most {}",
                    a.code,
                    kinko_core::asset::DECIMALS_MAX
                );
            }
            if !seen.insert(&a.code) {
                bail!("asset {} is listed twice", a.code);
            }
            a.withdrawal_fee()?;
            a.totp_budget()?;
            if a.withdrawal_fee.is_none()
                && default_withdrawal_fee(&a.code).is_none()
                && self.custody.iter().any(|c| c.asset == a.code)
            {
                bail!(
                    "asset {} has custody but no withdrawal_fee: set one in its [[assets]] section \
                     (it pays each withdrawal's miner fee; \"0\" charges nothing)",
                    a.code
                );
            }
        }
        let mut symbols = std::collections::BTreeSet::new();
        for m in &self.markets {
            let Some((b, q)) = m.symbol.split_once('-') else {
                bail!("market {:?}: symbol must be BASE-QUOTE", m.symbol);
            };
            for code in [b, q] {
                if !self.assets.iter().any(|a| a.code == code) {
                    bail!(
                        "market {}: asset {code} is not among the configured assets",
                        m.symbol
                    );
                }
            }
            if !symbols.insert(&m.symbol) {
                bail!("market {} is listed twice", m.symbol);
            }
        }
        Ok(())
    }

    pub fn engine_config(&self) -> kinko_engine::EngineConfig {
        let mut c = kinko_engine::EngineConfig::new(&self.data_dir);
        let e = &self.engine;
        c.inbox_commands_max = e.inbox_commands_max;
        c.batch_commands_max = e.batch_commands_max;
        c.snapshot_every_commands = e.snapshot_every_commands;
        c.snapshots_keep = e.snapshots_keep;
        c.audit_every_commands = e.audit_every_commands;
        c.tick_ms = e.tick_ms;
        c.segment_bytes_max = e.segment_bytes_max;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_risk_section_becomes_the_engines_policy_and_mistakes_are_named() {
        let c = Config::parse(
            r#"
[[risk.rules]]
name = "fan-in"
when = "shared_destination"
accounts = 3
window_s = 3600
then = "halt_asset"
[[risk.rules]]
name = "new-device"
asset = "BTC"
when = "new_device"
hours = 24
then = "delay"
delay_s = 3600
[[risk.limits]]
tier = 0
asset = "BTC"
day_max = "2"
month_max = "20"
[[risk.assets]]
asset = "BTC"
dual_approval_from = "1.5"
hot_outflow_per_hour = "10"
"#,
        )
        .unwrap();
        c.validate().unwrap();
        let p = c
            .risk
            .policy(&|code| (code == "BTC").then_some((kinko_core::AssetId(0), 8)))
            .unwrap();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(
            p.rules[1].then,
            kinko_core::risk::Decision::Delay { seconds: 3600 }
        );
        assert_eq!(p.limits[0].day_max, kinko_core::Amount(200_000_000));
        assert_eq!(p.assets[0].dual_approval_from, kinko_core::Amount(150_000_000));
        for (bad, says) in [
            (
                "[[risk.rules]]\nname = \"x\"\nwhen = \"new_device\"\nthen = \"review\"",
                "needs `hours`",
            ),
            (
                "[[risk.rules]]\nname = \"x\"\nwhen = \"sometimes\"\nthen = \"review\"",
                "unknown condition",
            ),
            (
                "[[risk.rules]]\nname = \"x\"\nwhen = \"always\"\nthen = \"maybe\"",
                "unknown decision",
            ),
            (
                "[[risk.limits]]\ntier = 0\nasset = \"DOGE\"\nday_max = \"1\"\nmonth_max = \"1\"",
                "no asset DOGE",
            ),
        ] {
            let err = Config::parse(bad).unwrap().validate().unwrap_err();
            assert!(format!("{err:#}").contains(says), "{bad}: {err:#}");
        }
    }

    /// An Ethereum account xpub (a fresh test keystore's).
    fn eth_xpub() -> String {
        use kinko_signer::keystore::{KdfParams, Keystore, Role};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        Keystore::create_with(
            &path,
            kinko_chain::Network::LitecoinRegtest,
            Role::Hot,
            "pass phrase for a test",
            KdfParams::TEST_FAST,
        )
        .unwrap();
        let master = Keystore::open_with(&path, "pass phrase for a test", true)
            .unwrap()
            .master();
        kinko_signer::eth::EthKeys::new(&master)
            .unwrap()
            .xpub()
            .to_string()
    }

    #[test]
    fn ethereum_custody_sections_make_one_loop_per_signer_and_mistakes_are_named() {
        let xpub = eth_xpub();
        let eth = format!(
            "[[custody]]\nasset = \"ETH\"\nnetwork = \"ethereum\"\nrpc_url = \"http://127.0.0.1:8545\"\n\
             chain_id = 31337\nxpub = \"{xpub}\"\nsigner_socket = \"/run/eth.sock\"\nconfirmations = 3\n\
             hot_share_bps = 1000\nhot_cap = \"2\"\nmax_fee_per_gas_wei = 100000000000\n"
        );
        let usdc = "[[custody]]\nasset = \"USDC\"\nnetwork = \"ethereum\"\nrpc_url = \"http://127.0.0.1:8545\"\n\
             token_contract = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\nsigner_socket = \"/run/eth.sock\"\n";
        // The default assets (the default markets use them), and the token.
        let assets = [("BTC", 8), ("ETH", 18), ("LTC", 8), ("USD", 6), ("JPY", 0)]
            .iter()
            .map(|(c, d)| format!("[[assets]]\ncode = \"{c}\"\ndecimals = {d}\n"))
            .collect::<String>()
            + "[[assets]]\ncode = \"USDC\"\ndecimals = 6\nwithdrawal_fee = \"1\"\n";
        let c = Config::parse(&format!("{assets}{eth}{usdc}")).unwrap();
        c.validate().unwrap();
        let decimals = |code: &str| c.assets.iter().find(|a| a.code == code).map(|a| a.decimals);
        let loops = eth_custody(&c.custody, decimals, Path::new("/var/lib/kinko")).unwrap();
        assert_eq!(loops.len(), 1);
        let l = &loops[0];
        assert_eq!((l.chain_id, l.confirmations, l.finality_depth), (31337, 3, 3));
        assert_eq!(l.state_dir.as_deref(), Some(Path::new("/var/lib/kinko/custody")));
        assert_eq!((l.priority_fee, l.max_fee_cap), (1_000_000_000, 100_000_000_000));
        let codes: Vec<&str> = l.assets.iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes, ["ETH", "USDC"]);
        assert_eq!((l.assets[0].gas_limit, l.assets[1].gas_limit), (21_000, 80_000));
        assert_eq!(l.assets[0].hot_cap, 2_000_000_000_000_000_000);
        assert_eq!((l.assets[1].hot_share_bps, l.assets[1].hot_cap), (500, u128::MAX));
        // Sweeps: safe defaults (0.01 ETH, 10 token units, gas at most 10 % of an ETH sweep).
        assert_eq!(
            (l.assets[0].sweep_min, l.assets[1].sweep_min, l.sweep_gas_max_bps),
            (10_000_000_000_000_000, 10_000_000, 1_000)
        );
        let c = Config::parse(&format!(
            "{assets}{eth}sweep_min = \"0.5\"\nsweep_gas_max_bps = 200\n{usdc}sweep_min = \"2.5\"\n"
        ))
        .unwrap();
        let l = &eth_custody(&c.custody, decimals, Path::new("/d")).unwrap()[0];
        assert_eq!(
            (l.assets[0].sweep_min, l.assets[1].sweep_min, l.sweep_gas_max_bps),
            (500_000_000_000_000_000, 2_500_000, 200)
        );
        for (bad, says) in [
            (format!("{eth}sweep_gas_max_bps = 0\n"), "sweep_gas_max_bps"),
            (format!("{eth}sweep_gas_max_bps = 10001\n"), "sweep_gas_max_bps"),
            (format!("{eth}sweep_min = \"0.1.2\"\n"), "sweep_min"),
            (format!("{assets}{eth}{usdc}sweep_min = \"0.0000001\"\n"), "sweep_min"),
            (format!("{assets}{eth}{usdc}sweep_gas_max_bps = 5\n"), "set in the ETH section"),
            (
                "[[custody]]\nasset = \"LTC\"\nnetwork = \"litecoin-regtest\"\nrpc_url = \"x\"\nrpc_user = \"u\"\nsweep_min = \"1\"\nsigner_socket = \"s\"\n".to_string(),
                "are Ethereum's",
            ),

            (format!("{assets}{usdc}"), "needs the ETH section of its signer"),
            (eth.replace("chain_id = 31337\n", ""), "needs chain_id and xpub"),
            (eth.replace(&xpub, "tpubnonsense"), "xpub"),
            (format!("{eth}hot_key = \"x\"\n"), "are Litecoin's"),
            (format!("{assets}{eth}{usdc}{usdc}"), "only one [[custody]] section per asset"),
            (
                format!("{assets}{eth}{}", usdc.replace("0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x5fbdb2315678afecb367f032d93F642f64180aa3")),
                "token_contract",
            ),
            (format!("{assets}{eth}{}", usdc.replace("8545", "8546")), "must be those of its ETH section"),
            (format!("{eth}priority_fee_wei = 200000000001\n"), "at least priority_fee_wei"),
            (format!("{eth}gas_limit = 20000\n"), "gas_limit"),
            (format!("{eth}finality_depth = 2\n"), "finality_depth"),
            (
                "[[custody]]\nasset = \"LTC\"\nnetwork = \"litecoin-regtest\"\nrpc_url = \"x\"\nrpc_user = \"u\"\nchain_id = 1\nsigner_socket = \"s\"\n".to_string(),
                "are Ethereum's",
            ),
        ] {
            let err = Config::parse(&bad).unwrap().validate().unwrap_err();
            assert!(format!("{err:#}").contains(says), "{bad}: {err:#}");
        }
    }

    #[test]
    fn witness_and_audit_key_settings_are_checked() {
        for (bad, says) in [
            ("[witness]\ninterval_s = 0", "witness.interval_s"),
            ("[witness]\npublic_key = \"zz\"", "witness.public_key"),
        ] {
            let err = Config::parse(bad).unwrap().validate().unwrap_err();
            assert!(format!("{err:#}").contains(says), "{bad}: {err:#}");
        }
        let mut c = Config::default();
        // The checkpoint key's default is beside the data directory, never in it.
        assert_eq!(c.audit_key_file(), PathBuf::from("./kinko-audit.key"));
        c.data_dir = PathBuf::from("/srv/kinko/data");
        assert_eq!(c.audit_key_file(), PathBuf::from("/srv/kinko/kinko-audit.key"));
        c.data_dir = PathBuf::from("data");
        assert_eq!(c.audit_key_file(), PathBuf::from("./kinko-audit.key"));
        // No signer, no witness; the first custody's signer otherwise, unless named.
        assert_eq!(c.witness_socket(), None);
        assert!(c.witness_key().unwrap().is_none());
        let c = Config::parse("[witness]\nsigner_socket = \"/run/w.sock\"").unwrap();
        assert_eq!(c.witness_socket(), Some(PathBuf::from("/run/w.sock")));
    }

    /// README.md's configuration block ("every key and its default") against the real
    /// defaults, so that the two cannot drift apart: every key the block sets, parsed by the real
    /// parser, is the default, and every key of the default configuration is in the block.
    ///
    /// Lists of tables that are empty or long by default are shown as one example entry whose
    /// header carries the marker `(example)`: `[[assets]]` and `[[markets]]` show the first
    /// default entry (checked equal to it), `[[custody]]` real chains (none by default; each
    /// checked to parse). Any other marked section fails the test.
    #[test]
    fn the_readme_configuration_block_is_the_default() {
        let readme = include_str!("../../../README.md");
        let after = readme
            .split_once("every key and its default:")
            .expect("README.md has the block \"every key and its default\"")
            .1;
        let block = after
            .split_once("```toml\n")
            .and_then(|(_, b)| b.split_once("\n```"))
            .expect("a ```toml block follows")
            .0;
        // Split into sections at each header; keep the examples apart.
        let mut kept = String::new();
        let mut examples: Vec<(String, String)> = Vec::new();
        let mut current: Option<usize> = None;
        for line in block.lines() {
            if line.starts_with('[') {
                let name = line.split(']').next().unwrap().trim_start_matches('[').to_owned();
                if line.contains("# (example)") {
                    examples.push((name, String::new()));
                    current = Some(examples.len() - 1);
                } else {
                    current = None;
                }
            }
            match current {
                Some(i) => examples[i].1.push_str(&format!("{line}\n")),
                None => kept.push_str(&format!("{line}\n")),
            }
        }
        let mut names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
        // One custody example per kind of chain (Litecoin; ETH and a token).
        names.dedup();
        assert_eq!(names, ["assets", "markets", "custody"], "the example sections");
        let default = Config::default();
        for (name, text) in &examples {
            let c = Config::parse(text).unwrap_or_else(|e| panic!("README example [[{name}]]: {e:#}"));
            match name.as_str() {
                "assets" => assert_eq!(c.assets, default.assets[..1], "README [[assets]] example"),
                "markets" => assert_eq!(c.markets, default.markets[..1], "README [[markets]] example"),
                _ => {
                    assert_eq!(c.custody.len(), 1);
                    assert!(default.custody.is_empty(), "custody is none by default");
                }
            }
        }
        // Every key of the default is shown, with its default value (named when one differs) ...
        let mut want = toml::Value::try_from(&default).unwrap();
        let table = want.as_table_mut().unwrap();
        for k in ["assets", "markets", "custody"] {
            table.remove(k);
        }
        let have: toml::Value = toml::from_str(&kept).unwrap();
        let flat = |v: &toml::Value| {
            let mut out = std::collections::BTreeMap::new();
            for (k, x) in v.as_table().unwrap() {
                match x.as_table() {
                    Some(t) => out.extend(t.iter().map(|(s, y)| (format!("{k}.{s}"), y.clone()))),
                    None => {
                        out.insert(k.clone(), x.clone());
                    }
                }
            }
            out
        };
        let (have, want) = (flat(&have), flat(&want));
        let keys =
            |m: &std::collections::BTreeMap<String, toml::Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&have),
            keys(&want),
            "README.md's block and the configuration's keys"
        );
        for (k, v) in &want {
            assert_eq!(
                &have[k], v,
                "README.md shows {k} with a value that is not its default"
            );
        }
        // ... and, read by the real parser, the block is the default configuration.
        let shown = Config::parse(&kept).unwrap_or_else(|e| panic!("README configuration block: {e:#}"));
        assert_eq!(shown, default, "README.md shows a value that is not the default");
    }

    /// Without a `[risk]` section the built-in policy applies; a list the file sets replaces the
    /// default one and only that list.
    #[test]
    fn the_default_risk_policy_is_loosened_only_by_explicit_lines() {
        let assets = |code: &str| {
            Config::default()
                .assets
                .iter()
                .position(|a| a.code == code)
                .map(|i| {
                    (
                        kinko_core::AssetId(i as u32),
                        Config::default().assets[i].decimals,
                    )
                })
        };
        let p = Config::default().risk.policy(&assets).unwrap();
        let names: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fan-in-halt",
                "fan-in",
                "platform-surge",
                "unlimited",
                "after-security-change",
                "large-share",
                "new-device"
            ]
        );
        assert_eq!((p.limits.len(), p.assets.len()), (10, 5));
        // Every default asset has limits for tiers 0 and 1 and its per-asset row.
        for i in 0..5 {
            let a = kinko_core::AssetId(i);
            assert!(p.limit(0, a).is_some() && p.limit(1, a).is_some() && p.asset(a).is_some());
        }
        let c = Config::parse("[risk]\nrules = []").unwrap();
        let loose = c.risk.policy(&assets).unwrap();
        assert!(loose.rules.is_empty());
        assert_eq!((loose.limits, loose.assets), (p.limits.clone(), p.assets.clone()));
        // Limits written alone replace the default limits and keep the rules and per-asset rows.
        let c =
            Config::parse("[[risk.limits]]\ntier = 0\nasset = \"BTC\"\nday_max = \"1\"\nmonth_max = \"5\"")
                .unwrap();
        let own = c.risk.policy(&assets).unwrap();
        assert_eq!(
            (own.rules, own.assets, own.limits.len()),
            (p.rules.clone(), p.assets.clone(), 1)
        );
        // A partial file elsewhere keeps the policy.
        assert_eq!(
            Config::parse("[engine]\ntick_ms = 5").unwrap().risk,
            RiskSection::default()
        );
        // The built-in rows of assets the config does not list are left out; written rows must
        // name configured assets.
        let c = Config::parse("markets = []\n[[assets]]\ncode = \"LTC\"\ndecimals = 8").unwrap();
        c.validate().unwrap();
        let only = |code: &str| (code == "LTC").then_some((kinko_core::AssetId(0), 8));
        let p = c.risk.policy(&only).unwrap();
        assert_eq!((p.rules.len(), p.limits.len(), p.assets.len()), (7, 2, 1));
    }

    #[test]
    fn unknown_keys_are_refused() {
        for text in [
            "data_dirr = \"x\"",
            "[engine]\nbatch_size = 3",
            "[log]\nformat = \"text\"\ncolour = true",
            "[[assets]]\ncode = \"BTC\"\ndecimals = 8\nname = \"Bitcoin\"",
        ] {
            assert!(Config::parse(text).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn partial_files_keep_defaults() {
        let c = Config::parse("data_dir = \"/tmp/k\"\n[engine]\ntick_ms = 5").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/k"));
        assert_eq!(c.engine.tick_ms, 5);
        assert_eq!(
            c.engine.batch_commands_max,
            EngineSection::default().batch_commands_max
        );
        assert_eq!(c.assets, Config::default().assets);
        c.validate().unwrap();
    }

    #[test]
    fn withdrawal_fees_default_per_asset_and_are_exact_decimals() {
        let fees: Vec<(String, u128)> = Config::default()
            .assets
            .iter()
            .map(|a| (a.code.clone(), a.withdrawal_fee().unwrap().0))
            .collect();
        assert_eq!(
            fees,
            [
                ("BTC", 20_000),
                ("ETH", 2_000_000_000_000_000),
                ("LTC", 100_000),
                ("USD", 1_000_000),
                ("JPY", 100),
            ]
            .map(|(c, f)| (c.to_owned(), f))
        );
        assert!(fees.iter().all(|(_, f)| *f > 0), "{fees:?}");
        let c = Config::parse(
            "markets = []\n[[assets]]\ncode = \"LTC\"\ndecimals = 8\nwithdrawal_fee = \"0.00002\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.assets[0].withdrawal_fee().unwrap().0, 2_000);
        let c = Config::parse("markets = []\n[[assets]]\ncode = \"DOGE\"\ndecimals = 8").unwrap();
        c.validate().unwrap();
        assert_eq!(c.assets[0].withdrawal_fee().unwrap().0, 0);
        for bad in ["0.000000001", "-1", "1e-4", "one", ""] {
            let c = Config::parse(&format!(
                "markets = []\n[[assets]]\ncode = \"LTC\"\ndecimals = 8\nwithdrawal_fee = \"{bad}\""
            ))
            .unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("withdrawal_fee"), "{bad}: {e}");
        }
    }

    #[test]
    fn invalid_values_are_explained() {
        let bad = [
            "[log]\nformat = \"xml\"",
            "[engine]\nbatch_commands_max = 0",
            "[[assets]]\ncode = \"btc\"\ndecimals = 8",
            "[[assets]]\ncode = \"BTC\"\ndecimals = 31",
            "[[assets]]\ncode = \"BTC\"\ndecimals = 8\n[[assets]]\ncode = \"BTC\"\ndecimals = 8",
        ];
        for text in bad {
            let c = Config::parse(text).unwrap();
            assert!(c.validate().is_err(), "accepted: {text}");
        }
    }
}
