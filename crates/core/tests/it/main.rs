//! kinko-core integration tests: one binary for the crate.
mod book;
mod ledger;
mod trading;
