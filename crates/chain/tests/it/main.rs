//! Integration tests of kinko-chain against a real `litecoind -regtest` (one node per test).

mod cold;
mod descriptors;
mod errors;
mod reorg;
mod spend;
mod support;
mod watch;
