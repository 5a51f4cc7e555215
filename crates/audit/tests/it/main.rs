//! Integration tests of kinko-audit: published RFC 6962 test vectors, an independent
//! recursive reference written from the RFC's definitions, property tests of the proofs, and
//! the file-backed log and its verifier on real files in temporary directories.

mod common;
mod log;
mod props;
mod reference;
mod tamper;
mod vectors;
