//! kinko-core integration tests: one binary for the crate.
mod ledger;
mod book;
