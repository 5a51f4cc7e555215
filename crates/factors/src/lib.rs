//! Second factors in pure Rust, with no state and no clock of their own: callers pass the
//! challenge they expect and the time. The gateway uses them at enrolment and login; the signer
//! uses them again, independently, before it signs a withdrawal.
//!
//! - [`webauthn`] — the WebAuthn relying party (passkeys).
//! - [`totp`] — RFC 6238 codes, base32, otpauth URIs, recovery codes.

pub mod totp;
pub mod webauthn;
