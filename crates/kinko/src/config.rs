//! Configuration: built-in defaults, overridden by a TOML file (unknown keys refused), then by
//! environment variables and flags.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the journal and snapshots live.
    pub data_dir: PathBuf,
    pub engine: EngineSection,
    pub log: LogSection,
    /// Assets the engine serves; defined (journaled) at first start, checked at every start.
    pub assets: Vec<AssetSection>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
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

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `kinko=debug`.
    pub level: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AssetSection {
    pub code: String,
    pub decimals: u8,
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
        };
        Config {
            data_dir: PathBuf::from("./data"),
            engine: EngineSection::default(),
            log: LogSection::default(),
            assets: vec![
                asset("BTC", 8),
                asset("ETH", 18),
                asset("LTC", 8),
                asset("USD", 2),
                asset("JPY", 0),
            ],
        }
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
