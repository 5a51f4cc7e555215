//! Money and identifier newtypes. Amounts are integers in an asset's minor unit; every
//! operation on them is checked. Conversion to and from decimal strings happens only here and at
//! the API edge.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in an asset's minor unit (satoshi, wei, yen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Amount(pub u128);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    #[inline]
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
    #[inline]
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
    #[inline]
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Renders the amount as a decimal string with `decimals` fractional digits, trailing zeros
    /// kept (so that the precision of the asset is visible): `Amount(150).to_decimal(2) == "1.50"`.
    pub fn to_decimal(self, decimals: u8) -> String {
        let s = self.0.to_string();
        let d = decimals as usize;
        if d == 0 {
            return s;
        }
        if s.len() <= d {
            format!("0.{}{}", "0".repeat(d - s.len()), s)
        } else {
            let (int, frac) = s.split_at(s.len() - d);
            format!("{int}.{frac}")
        }
    }

    /// Parses a non-negative decimal string with at most `decimals` fractional digits.
    /// Refuses signs, exponents, spaces, empty parts and anything that would overflow.
    pub fn from_decimal(text: &str, decimals: u8) -> Result<Amount, ParseAmountError> {
        if text.is_empty() || text.len() > 80 {
            return Err(ParseAmountError::Malformed);
        }
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        if int.is_empty() || (text.contains('.') && frac.is_empty()) {
            return Err(ParseAmountError::Malformed);
        }
        if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseAmountError::Malformed);
        }
        if frac.len() > decimals as usize {
            return Err(ParseAmountError::TooPrecise { decimals });
        }
        let mut value: u128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(b - b'0')))
                .ok_or(ParseAmountError::Overflow)?;
        }
        for _ in frac.len()..decimals as usize {
            value = value.checked_mul(10).ok_or(ParseAmountError::Overflow)?;
        }
        Ok(Amount(value))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseAmountError {
    #[error("amount is not a plain non-negative decimal number")]
    Malformed,
    #[error("amount has more than {decimals} fractional digits")]
    TooPrecise { decimals: u8 },
    #[error("amount is too large")]
    Overflow,
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub $inner);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// Dense index of an asset, assigned by the engine in definition order.
    AssetId(u32)
);
id_type!(
    /// Dense index of a ledger account, assigned by the engine in creation order.
    AccountId(u32)
);
id_type!(
    /// A customer (or company) user.
    UserId(u64)
);
id_type!(
    /// Client-chosen, globally unique transfer id; the key of idempotency.
    TransferId(u128)
);

/// A short upper-case asset code such as `BTC`, `JPY`, `LTC`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssetCode(String);

impl AssetCode {
    pub const LEN_MAX: usize = 12;

    pub fn new(code: &str) -> Result<AssetCode, InvalidAssetCode> {
        let ok = !code.is_empty()
            && code.len() <= Self::LEN_MAX
            && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if ok {
            Ok(AssetCode(code.to_owned()))
        } else {
            Err(InvalidAssetCode)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AssetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("asset code must be 1 to 12 characters A-Z or 0-9")]
pub struct InvalidAssetCode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trip() {
        let cases: &[(&str, u8, Option<u128>)] = &[
            ("1.50", 2, Some(150)),
            ("0.00000001", 8, Some(1)),
            ("21000000", 8, Some(2_100_000_000_000_000)),
            ("1", 0, Some(1)),
            ("1.", 2, None),
            (".5", 2, None),
            ("-1", 2, None),
            ("1e5", 2, None),
            ("1.234", 2, None),
            ("", 2, None),
            (" 1", 2, None),
            ("340282366920938463463374607431768211456", 0, None),
        ];
        for (text, d, want) in cases {
            let got = Amount::from_decimal(text, *d).ok().map(|a| a.0);
            assert_eq!(got, *want, "{text} with {d} decimals");
        }
        assert_eq!(Amount(150).to_decimal(2), "1.50");
        assert_eq!(Amount(1).to_decimal(8), "0.00000001");
        assert_eq!(Amount(7).to_decimal(0), "7");
    }
}
