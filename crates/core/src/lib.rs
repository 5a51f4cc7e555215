//! kinko's deterministic core. See ARCHITECTURE.md.
pub mod book;
