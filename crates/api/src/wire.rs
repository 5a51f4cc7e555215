//! Conversions at the edge: decimal strings ↔ minor units, ticks and lots ↔ decimals, RFC 3339
//! times, UUIDs. Nothing here uses floating point.

use crate::error::{ApiError, ApiResult};
use kinko_core::book::{Price, Qty};
use kinko_core::market::MarketMeta;
use kinko_core::money::Amount;

/// Parses a decimal string into minor units. Trailing fractional zeros beyond the asset's
/// precision are accepted (`"1.50000000000"` is 1.5); any other excess precision is refused.
pub fn parse_amount(field: &str, text: &str, decimals: u8) -> ApiResult<Amount> {
    let t = text.trim();
    let t = match t.split_once('.') {
        // (Non-ASCII text is left to `from_decimal`, which refuses it; slicing it could split
        // a character.)
        Some((i, f)) if f.len() > decimals as usize && f.is_ascii() => {
            let keep = &f[..decimals as usize];
            if !f[decimals as usize..].bytes().all(|b| b == b'0') {
                return Err(ApiError::invalid(format!(
                    "{field}: more than {decimals} decimal places"
                )));
            }
            if keep.is_empty() {
                i.to_owned()
            } else {
                format!("{i}.{keep}")
            }
        }
        _ => t.to_owned(),
    };
    Amount::from_decimal(&t, decimals).map_err(|e| {
        ApiError::invalid(format!(
            "{field}: {e} (a non-negative decimal string is expected)"
        ))
    })
}

/// Minor units as a decimal string with the asset's precision.
pub fn fmt_amount(a: u128, decimals: u8) -> String {
    Amount(a).to_decimal(decimals)
}

/// A signed balance in minor units as a decimal string ("-0.5").
pub fn fmt_signed(a: i128, decimals: u8) -> String {
    let s = fmt_amount(a.unsigned_abs(), decimals);
    if a < 0 {
        format!("-{s}")
    } else {
        s
    }
}

/// Everything needed to render a market's prices and sizes.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub tick: u128,
    pub lot: u128,
    pub base_decimals: u8,
    pub quote_decimals: u8,
}

impl Scale {
    pub fn of(meta: &MarketMeta, base_decimals: u8, quote_decimals: u8) -> Scale {
        Scale {
            tick: meta.spec.tick.0,
            lot: meta.spec.lot.0,
            base_decimals,
            quote_decimals,
        }
    }
    pub fn price(&self, p: Price) -> String {
        fmt_amount(u128::from(p.0) * self.tick, self.quote_decimals)
    }
    pub fn size(&self, q: Qty) -> String {
        fmt_amount(u128::from(q.0) * self.lot, self.base_decimals)
    }
    pub fn lots_u128(&self, lots: u128) -> String {
        fmt_amount(lots.saturating_mul(self.lot), self.base_decimals)
    }
    pub fn quote(&self, minor: u128) -> String {
        fmt_amount(minor, self.quote_decimals)
    }
    pub fn base(&self, minor: u128) -> String {
        fmt_amount(minor, self.base_decimals)
    }
}

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Nanoseconds since the epoch as RFC 3339 UTC with microseconds: `2026-11-21T09:30:00.123456Z`.
pub fn rfc3339(ns: u64) -> String {
    format!("{}.{:06}Z", civil_time(ns), (ns % 1_000_000_000) / 1_000)
}

/// Nanoseconds since the epoch as an RFC 5322 `Date` header value in UTC:
/// `Sun, 06 Dec 2026 23:55:30 +0000`.
pub fn rfc5322(ns: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ns / 1_000_000_000;
    let days = secs / 86_400;
    let (y, mo, d) = civil(days as i64);
    let s = secs % 86_400;
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(mo - 1) as usize],
        s / 3_600,
        (s / 60) % 60,
        s % 60
    )
}

/// Nanoseconds since the epoch as RFC 3339 UTC with nanoseconds (journal dumps).
pub fn rfc3339_nanos(ns: u64) -> String {
    format!("{}.{:09}Z", civil_time(ns), ns % 1_000_000_000)
}

/// `YYYY-MM-DDTHH:MM:SS` of a time in nanoseconds since the epoch.
fn civil_time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3_600,
        (s / 60) % 60,
        s % 60
    )
}

/// Parses RFC 3339 (`2026-11-21T09:30:00Z`, optional fraction, `Z` or `+00:00`) or Unix
/// seconds, to seconds since the epoch.
pub fn parse_time_s(field: &str, text: &str) -> ApiResult<u64> {
    let bad = || ApiError::invalid(format!("{field}: expected RFC 3339 time or Unix seconds"));
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    if let Some((int, _)) = text.split_once('.') {
        if let Ok(n) = int.parse::<u64>() {
            return Ok(n);
        }
    }
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> ApiResult<i64> {
        text.get(r).and_then(|s| s.parse::<i64>().ok()).ok_or_else(bad)
    };
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let rest = &text[19..];
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if !(rest.is_empty() || rest == "Z" || rest == "+00:00") {
        return Err(bad());
    }
    // days_from_civil
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3_600 + mi * 60 + s).map_err(|_| bad())
}

/// A UUID string (with or without dashes) as a 128-bit number.
pub fn parse_uuid(field: &str, text: &str) -> ApiResult<u128> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() > 36 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid(format!("{field}: expected a UUID")));
    }
    u128::from_str_radix(&hex, 16).map_err(|_| ApiError::invalid(format!("{field}: expected a UUID")))
}

pub fn fmt_uuid(v: u128) -> String {
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5322_dates() {
        assert_eq!(rfc5322(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322(1_700_000_000_123_456_789),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(
            rfc5322(951_782_400_000_000_000),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(rfc3339(1_795_251_661_123_456_789), "2026-11-21T09:01:01.123456Z");
        assert_eq!(
            parse_time_s("t", "2026-11-21T09:01:01.123456Z").unwrap(),
            1_795_251_661
        );
        assert_eq!(parse_time_s("t", "1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time_s("t", "2000-02-29T12:00:00+00:00").unwrap(),
            951_825_600
        );
        assert!(parse_time_s("t", "yesterday").is_err());
        assert!(parse_time_s("t", "2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_amount("a", "1.5", 8).unwrap(), Amount(150_000_000));
        assert_eq!(
            parse_amount("a", "1.50000000000", 8).unwrap(),
            Amount(150_000_000)
        );
        assert_eq!(parse_amount("a", "100.000", 0).unwrap(), Amount(100));
        assert!(parse_amount("a", "1.000000001", 8).is_err());
        assert!(parse_amount("a", "-1", 8).is_err());
        assert!(parse_amount("a", "1e5", 8).is_err());
        assert!(parse_amount("a", "", 8).is_err());
        assert!(parse_amount("a", "1.0000000\u{e9}", 8).is_err());
        assert!(parse_amount("a", "1.00000000\u{e9}", 8).is_err());
    }

    #[test]
    fn uuids_round_trip() {
        let u = "3b0fa9e2-52d1-4c1e-9a8e-2f4d0b6a7c11";
        assert_eq!(fmt_uuid(parse_uuid("c", u).unwrap()), u);
        assert!(parse_uuid("c", "not-a-uuid").is_err());
        assert!(parse_uuid("c", "+b0fa9e2-52d1-4c1e-9a8e-2f4d0b6a7c11").is_err());
    }
}
