//! Second-factor primitives: TOTP (RFC 6238 over RFC 4226 HOTP, HMAC-SHA1, 6 digits, 30 s)
//! and single-use recovery codes.
//!
//! Pure functions: no I/O and no clock reads — the caller passes the time in. Whoever stores
//! the result of [`verify`] must persist the returned step as the new `last_used_step`
//! atomically with accepting the login, so that every code is accepted at most once.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Seconds per TOTP step.
pub const STEP_S: u64 = 30;
/// Digits in a TOTP code.
pub const DIGITS: u32 = 6;
/// Bytes in a TOTP secret (160 bits, the HMAC-SHA1 block-size recommendation of RFC 4226).
pub const SECRET_BYTES: usize = 20;

/// Why a TOTP code was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the code must be exactly 6 digits")]
    Malformed,
    #[error("this code, or a newer one, has already been used")]
    Replayed,
    #[error("the code is wrong or has expired")]
    Invalid,
}

impl TotpError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            TotpError::Malformed => "TOTP_MALFORMED",
            TotpError::Replayed => "TOTP_REPLAYED",
            TotpError::Invalid => "TOTP_INVALID",
        }
    }
}

/// A fresh random TOTP secret.
pub fn new_secret() -> [u8; SECRET_BYTES] {
    random_bytes()
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, upper case, without padding.
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(B32[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(B32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes RFC 4648 base32 without padding; case-insensitive. `None` for a character outside
/// the alphabet (including `=`), an impossible length, or non-zero trailing bits.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits: 0 (len%8 == 0), 2, 4, 1 or 3 for 1..=4 trailing bytes. A leftover of 5
    // or more means a whole character that encodes nothing: an impossible length.
    if bits >= 5 || acc != 0 {
        return None;
    }
    Some(out)
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `otpauth://` URI an authenticator app scans from a QR code.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_S}",
        percent_encode(account),
        base32_encode(secret),
    )
}

/// RFC 4226 HOTP with HMAC-SHA1 and dynamic truncation, `digits` ≤ 9.
pub(crate) fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    assert!(digits <= 9, "at most 9 digits fit the 31-bit truncation");
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let bin = u32::from_be_bytes([h[offset], h[offset + 1], h[offset + 2], h[offset + 3]]) & 0x7fff_ffff;
    bin % 10u32.pow(digits)
}

/// The 6-digit TOTP code for a time step (`unix_s / 30`).
pub fn code_at(secret: &[u8], step: u64) -> u32 {
    hotp(secret, step, DIGITS)
}

/// Checks a code typed by the user at `unix_s`, allowing one step of clock drift either way.
/// Returns the matched step, which the caller must store as the new `last_used_step`; steps
/// at or before `last_used_step` are refused as replays.
pub fn verify(secret: &[u8], code: &str, unix_s: u64, last_used_step: Option<u64>) -> Result<u64, TotpError> {
    let b = code.as_bytes();
    if b.len() != DIGITS as usize || !b.iter().all(u8::is_ascii_digit) {
        return Err(TotpError::Malformed);
    }
    let given = b
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
        .to_be_bytes();
    let t = unix_s / STEP_S;
    // Every candidate is computed and compared, without early exit; the newest match wins.
    let mut fresh: Option<u64> = None;
    let mut replayed = false;
    for step in [t.checked_sub(1), Some(t), Some(t + 1)].into_iter().flatten() {
        let matched: bool = code_at(secret, step).to_be_bytes().ct_eq(&given).into();
        if matched {
            if last_used_step.is_some_and(|last| step <= last) {
                replayed = true;
            } else {
                fresh = Some(step);
            }
        }
    }
    match (fresh, replayed) {
        (Some(step), _) => Ok(step),
        (None, true) => Err(TotpError::Replayed),
        (None, false) => Err(TotpError::Invalid),
    }
}

/// Recovery-code alphabet: Crockford's base32 in lower case (no i, l, o, u), 5 bits a character.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `n` fresh recovery codes, each `xxxx-xxxx-xxxx`: 12 characters of 5 bits, 60 bits each.
/// Show them once; store only [`recovery_code_hash`] of each.
pub fn new_recovery_codes(n: usize) -> Vec<String> {
    let mut codes: Vec<String> = Vec::with_capacity(n);
    while codes.len() < n {
        let mut r = u64::from_le_bytes(random_bytes::<8>());
        let mut code = String::with_capacity(14);
        for i in 0..12 {
            if i > 0 && i % 4 == 0 {
                code.push('-');
            }
            code.push(char::from(RECOVERY_ALPHABET[(r & 31) as usize]));
            r >>= 5;
        }
        // A collision within one batch (2^-60 per pair) would leave a code counted twice.
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

/// `n` fresh recovery codes (shown once) with the hashes the engine keeps.
pub fn new_recovery_set(n: usize) -> (Vec<String>, Vec<[u8; 32]>) {
    let codes = new_recovery_codes(n);
    let hashes = codes.iter().map(|c| recovery_code_hash(c)).collect();
    (codes, hashes)
}

/// Domain-separated hash of a recovery code, after normalisation (lower case, dashes and
/// spaces removed), for storage and comparison.
pub fn recovery_code_hash(code: &str) -> [u8; 32] {
    let normal: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    *blake3::keyed_hash(b"kinko 2fa recovery code hash v1 ", normal.as_bytes()).as_bytes()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source works");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_sha1_vectors() {
        let vectors: [(u64, u32); 6] = [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ];
        for (time, want) in vectors {
            let step = time / STEP_S;
            assert_eq!(hotp(RFC_SECRET, step, 8), want, "time {time}");
            assert_eq!(code_at(RFC_SECRET, step), want % 1_000_000, "time {time}");
            let code = format!("{:06}", want % 1_000_000);
            assert_eq!(verify(RFC_SECRET, &code, time, None), Ok(step));
        }
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        let want = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871, 520_489,
        ];
        for (counter, w) in want.into_iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, counter as u64, 6), w);
        }
    }

    fn code(step: u64) -> String {
        format!("{:06}", code_at(RFC_SECRET, step))
    }

    #[test]
    fn window_edges() {
        let now = 1_700_000_015; // mid-step
        let t = now / STEP_S;
        assert_eq!(verify(RFC_SECRET, &code(t - 1), now, None), Ok(t - 1));
        assert_eq!(verify(RFC_SECRET, &code(t), now, None), Ok(t));
        assert_eq!(verify(RFC_SECRET, &code(t + 1), now, None), Ok(t + 1));
        for step in [t - 2, t + 2] {
            // Guard against an accidental collision with an in-window code.
            assert!(![t - 1, t, t + 1].iter().any(|s| code(*s) == code(step)));
            assert_eq!(
                verify(RFC_SECRET, &code(step), now, None),
                Err(TotpError::Invalid)
            );
        }
        // Step boundaries: the first and last second of a step.
        assert_eq!(verify(RFC_SECRET, &code(t), t * STEP_S, None), Ok(t));
        assert_eq!(verify(RFC_SECRET, &code(t), t * STEP_S + 29, None), Ok(t));
        // At time zero there is no step -1.
        assert_eq!(verify(RFC_SECRET, &code(0), 0, None), Ok(0));
        assert_eq!(verify(RFC_SECRET, &code(1), 0, None), Ok(1));
    }

    #[test]
    fn replay_refused() {
        let now = 1_700_000_015;
        let t = now / STEP_S;
        let used = verify(RFC_SECRET, &code(t), now, None).unwrap();
        assert_eq!(used, t);
        // The same code again, within its own step.
        assert_eq!(
            verify(RFC_SECRET, &code(t), now + 1, Some(used)),
            Err(TotpError::Replayed)
        );
        // An older code after a newer one.
        assert_eq!(
            verify(RFC_SECRET, &code(t - 1), now, Some(used)),
            Err(TotpError::Replayed)
        );
        // A newer code is still fine.
        assert_eq!(verify(RFC_SECRET, &code(t + 1), now, Some(used)), Ok(t + 1));
        // A wrong code is invalid, not replayed.
        let wrong = (0..1_000_000u32)
            .map(|n| format!("{n:06}"))
            .find(|c| [t - 1, t, t + 1].iter().all(|s| code(*s) != *c))
            .unwrap();
        assert_eq!(
            verify(RFC_SECRET, &wrong, now, Some(used)),
            Err(TotpError::Invalid)
        );
    }

    #[test]
    fn malformed_inputs() {
        let now = 1_700_000_015;
        let c = code(now / STEP_S);
        for bad in [
            &c[..5],
            &format!("{c}0"),
            "12a456",
            "abcdef",
            "123 456",
            " 123456",
            "123456 ",
            "",
            "12345٣",
            "١٢٣٤٥٦",
            "+12345",
            "-12345",
        ] {
            assert_eq!(
                verify(RFC_SECRET, bad, now, None),
                Err(TotpError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(TotpError::Malformed.code(), "TOTP_MALFORMED");
        assert_eq!(TotpError::Replayed.code(), "TOTP_REPLAYED");
        assert_eq!(TotpError::Invalid.code(), "TOTP_INVALID");
    }

    #[test]
    fn base32_vectors_and_round_trip() {
        let vectors = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (plain, enc) in vectors {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).as_deref(), Some(plain.as_bytes()));
            assert_eq!(
                base32_decode(&enc.to_lowercase()).as_deref(),
                Some(plain.as_bytes())
            );
        }
        for len in 0..64usize {
            let data: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(151).wrapping_add(7))
                .collect();
            assert_eq!(base32_decode(&base32_encode(&data)), Some(data));
        }
        let s = new_secret();
        assert_eq!(base32_encode(&s).len(), 32);
        assert_eq!(base32_decode(&base32_encode(&s)).as_deref(), Some(&s[..]));
        // Padding, foreign characters, impossible lengths, non-zero trailing bits.
        for bad in ["MY======", "MZ1Q", "M", "MZX", "MZXW6Y", "MZ", "M Y"] {
            assert_eq!(base32_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn otpauth_uri_format() {
        let uri = otpauth_uri("Kinko Exchange", "alice@example.com", b"foobar");
        assert_eq!(
            uri,
            "otpauth://totp/Kinko%20Exchange:alice%40example.com?secret=MZXW6YTBOI\
             &issuer=Kinko%20Exchange&algorithm=SHA1&digits=6&period=30"
        );
        let odd = otpauth_uri("a:b&c", "ü?=#/", b"f");
        assert_eq!(
            odd,
            "otpauth://totp/a%3Ab%26c:%C3%BC%3F%3D%23%2F?secret=MY\
             &issuer=a%3Ab%26c&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn new_secrets_differ() {
        assert_ne!(new_secret(), new_secret());
    }

    #[test]
    fn recovery_codes_shape_and_uniqueness() {
        let codes = new_recovery_codes(10);
        assert_eq!(codes.len(), 10);
        let mut seen = std::collections::HashSet::new();
        for c in &codes {
            assert_eq!(c.len(), 14, "{c}");
            let parts: Vec<&str> = c.split('-').collect();
            assert_eq!(parts.len(), 3, "{c}");
            for p in parts {
                assert_eq!(p.len(), 4);
                assert!(p.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)), "{c}");
            }
            assert!(seen.insert(c.clone()), "duplicate {c}");
        }
        let many = new_recovery_codes(1_000);
        let set: std::collections::HashSet<_> = many.iter().collect();
        assert_eq!(set.len(), 1_000);
        assert!(new_recovery_codes(0).is_empty());
        // 32 symbols, 12 characters: 60 bits.
        assert_eq!(RECOVERY_ALPHABET.len(), 32);
    }

    #[test]
    fn recovery_hash_normalises() {
        let h = recovery_code_hash("abcd-efgh-jkmn");
        assert_eq!(recovery_code_hash("ABCD-EFGH-JKMN"), h);
        assert_eq!(recovery_code_hash("abcdefghjkmn"), h);
        assert_eq!(recovery_code_hash(" abcd efgh jkmn "), h);
        assert_eq!(recovery_code_hash("Abcd - Efgh - Jkmn"), h);
        assert_ne!(recovery_code_hash("abcd-efgh-jkmp"), h);
        for c in new_recovery_codes(5) {
            assert_eq!(recovery_code_hash(&c), recovery_code_hash(&c.to_uppercase()));
        }
    }
}
