//! Coin amounts as integer satoshis, and the exact conversion from / to the decimal text Core
//! speaks (`0.00100000`). Nothing here goes through floating point: a JSON number is read as
//! its literal text (`serde_json::value::RawValue`) and parsed digit by digit.

/// Satoshis per coin.
pub const SATS_PER_COIN: u64 = 100_000_000;

/// Longest decimal text we parse (a sign, 20 digits, a point, 8 decimals and some slack).
pub const DECIMAL_LEN_MAX: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is not a plain decimal number")]
    Syntax,
    #[error("amount has more than 8 decimals")]
    Precision,
    #[error("amount is negative")]
    Negative,
    #[error("amount is too large")]
    Overflow,
}

/// Parses a non-negative decimal coin amount (`"0.00000001"`, `"21000000"`, `"0.5"`) into
/// satoshis. Refused: exponents, more than 8 decimals, a sign other than `-0`, overflow.
pub fn parse_sats(text: &str) -> Result<u64, AmountError> {
    let (negative, sats) = parse_parts(text)?;
    if negative && sats != 0 {
        return Err(AmountError::Negative);
    }
    Ok(sats)
}

/// Like [`parse_sats`] but allows a leading `-` (Core reports sends and fees as negative).
pub fn parse_sats_signed(text: &str) -> Result<i64, AmountError> {
    let (negative, sats) = parse_parts(text)?;
    let magnitude = i64::try_from(sats).map_err(|_| AmountError::Overflow)?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// The decimal coin text of `sats`, shortest form: `50000000` → `"0.5"`, `1` → `"0.00000001"`,
/// `100000000` → `"1"`. Core accepts amounts as such strings.
pub fn format_sats(sats: u64) -> String {
    let whole = sats / SATS_PER_COIN;
    let frac = sats % SATS_PER_COIN;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:08}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

fn parse_parts(text: &str) -> Result<(bool, u64), AmountError> {
    if text.is_empty() || text.len() > DECIMAL_LEN_MAX {
        return Err(AmountError::Syntax);
    }
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (whole, frac) = match rest.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (rest, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::Syntax);
    }
    let frac = frac.unwrap_or("");
    if rest.contains('.') && frac.is_empty() {
        return Err(AmountError::Syntax);
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::Syntax);
    }
    if frac.len() > 8 {
        return Err(AmountError::Precision);
    }
    let mut sats: u64 = 0;
    for b in whole.bytes() {
        sats = sats
            .checked_mul(10)
            .and_then(|s| s.checked_add(u64::from(b - b'0')))
            .ok_or(AmountError::Overflow)?;
    }
    sats = sats.checked_mul(SATS_PER_COIN).ok_or(AmountError::Overflow)?;
    let mut frac_sats: u64 = 0;
    for i in 0..8 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
        frac_sats = frac_sats * 10 + digit;
    }
    let sats = sats.checked_add(frac_sats).ok_or(AmountError::Overflow)?;
    Ok((negative, sats))
}

/// Serde helpers: amount fields of Core's JSON read from their literal text.
pub(crate) mod serde_sats {
    use super::AmountError;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};
    use serde_json::value::RawValue;

    /// `raw` (the number as Core wrote it) through `f`, the error naming the amount.
    fn parse<T, E: Error>(raw: &RawValue, f: fn(&str) -> Result<T, AmountError>) -> Result<T, E> {
        f(raw.get()).map_err(|e| E::custom(format!("amount {}: {e}", raw.get())))
    }

    pub fn unsigned<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        parse(&<Box<RawValue>>::deserialize(d)?, super::parse_sats)
    }

    pub fn signed<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        parse(&<Box<RawValue>>::deserialize(d)?, super::parse_sats_signed)
    }

    pub fn unsigned_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        <Option<Box<RawValue>>>::deserialize(d)?
            .map(|raw| parse(&raw, super::parse_sats))
            .transpose()
    }

    pub fn signed_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        <Option<Box<RawValue>>>::deserialize(d)?
            .map(|raw| parse(&raw, super::parse_sats_signed))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        let cases: &[(&str, Result<u64, AmountError>)] = &[
            ("0.00000001", Ok(1)),
            ("0.00100000", Ok(100_000)),
            ("0.5", Ok(50_000_000)),
            ("50.00000000", Ok(5_000_000_000)),
            ("21000000", Ok(2_100_000_000_000_000)),
            ("84000000.00000000", Ok(8_400_000_000_000_000)),
            ("0", Ok(0)),
            ("-0.00000000", Ok(0)),
            ("0.1", Ok(10_000_000)),
            ("1e-8", Err(AmountError::Syntax)),
            ("1E8", Err(AmountError::Syntax)),
            ("0.000000001", Err(AmountError::Precision)),
            ("0.123456789", Err(AmountError::Precision)),
            ("-0.1", Err(AmountError::Negative)),
            ("", Err(AmountError::Syntax)),
            (".5", Err(AmountError::Syntax)),
            ("5.", Err(AmountError::Syntax)),
            ("+5", Err(AmountError::Syntax)),
            ("1.2.3", Err(AmountError::Syntax)),
            ("\"0.1\"", Err(AmountError::Syntax)),
            (" 1", Err(AmountError::Syntax)),
            ("null", Err(AmountError::Syntax)),
            ("184467440737.09551616", Err(AmountError::Overflow)),
            ("99999999999999999999", Err(AmountError::Overflow)),
            ("１", Err(AmountError::Syntax)),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_sats(text), want, "{text:?}");
        }
        assert_eq!(parse_sats("184467440737.09551615"), Ok(u64::MAX));
    }

    #[test]
    fn signed_and_format() {
        assert_eq!(parse_sats_signed("-0.00001410"), Ok(-1410));
        assert_eq!(parse_sats_signed("1.5"), Ok(150_000_000));
        assert_eq!(
            parse_sats_signed("184467440737.09551615"),
            Err(AmountError::Overflow)
        );
        for (sats, text) in [
            (1, "0.00000001"),
            (50_000_000, "0.5"),
            (100_000_000, "1"),
            (0, "0"),
            (123_456_789, "1.23456789"),
        ] {
            assert_eq!(format_sats(sats), text);
            assert_eq!(parse_sats(text), Ok(sats));
        }
        assert_eq!(parse_sats(&format_sats(u64::MAX)), Ok(u64::MAX));
    }

    #[test]
    fn deserializes_json_numbers_without_floats() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "serde_sats::unsigned")]
            a: u64,
            #[serde(deserialize_with = "serde_sats::signed")]
            b: i64,
            #[serde(default, deserialize_with = "serde_sats::signed_opt")]
            c: Option<i64>,
        }
        // 0.29 is not exactly representable in binary floating point.
        let t: T = serde_json::from_str(r#"{"a": 0.29000000, "b": -20999999.99999999}"#).unwrap();
        assert_eq!((t.a, t.b, t.c), (29_000_000, -2_099_999_999_999_999, None));
        let t: T = serde_json::from_str(r#"{"a": 1, "b": 0, "c": -0.0000141}"#).unwrap();
        assert_eq!(t.c, Some(-1410));
        assert!(serde_json::from_str::<T>(r#"{"a": 1e-8, "b": 0}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a": "1", "b": 0}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a": 0.000000001, "b": 0}"#).is_err());
    }
}
