//! Integration tests of kinko-chain against a real `litecoind -regtest` (one node per test).

mod descriptors;
mod errors;
mod eth;
mod reorg;
mod support;
mod watch;
