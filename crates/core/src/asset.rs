//! Assets: code, precision, and the switches an operator flips during an incident.

use crate::ledger::SystemAccount;
use crate::money::{AccountId, AssetCode};
use serde::{Deserialize, Serialize};

/// Largest number of fractional digits an asset may have (wei has 18).
pub const DECIMALS_MAX: u8 = 30;
/// Largest number of assets one engine serves.
pub const ASSETS_MAX: usize = 4096;

/// Per-asset operation switches. All on when the asset is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetSwitches {
    pub deposits: bool,
    pub withdrawals: bool,
    pub trading: bool,
}

impl AssetSwitches {
    pub const ALL_ON: AssetSwitches = AssetSwitches {
        deposits: true,
        withdrawals: true,
        trading: true,
    };
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub code: AssetCode,
    pub decimals: u8,
    pub switches: AssetSwitches,
    /// The exchange's own accounts for this asset, indexed like [`SystemAccount::ALL`].
    pub system: [AccountId; SystemAccount::COUNT],
}

impl Asset {
    pub fn system_account(&self, which: SystemAccount) -> AccountId {
        let i = SystemAccount::ALL
            .iter()
            .position(|s| *s == which)
            .expect("every system account is listed in ALL");
        self.system[i]
    }
}
