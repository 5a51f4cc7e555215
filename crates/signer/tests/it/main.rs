//! kinko-signer integration tests: the attack table against an in-process server on a real Unix
//! socket, the transport, persistence, and the binary; PSBTs signed by [`kinko_signer::sign`]
//! against a real `litecoind -regtest` (hot spends, 2-of-3 cold refills).

mod admins;
mod attacks;
mod binary;
mod eth;
mod eth_cold;
mod eth_socket;
mod harness;
mod host_root;
mod onchain;
mod persistence;
mod transport;
mod witness;
