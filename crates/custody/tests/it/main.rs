//! The custody service against real components: a `litecoind` regtest node, the engine with its
//! journal in a temporary directory, and the signer on a Unix socket with its own keystore,
//! registry and log. Each test drives the service one poll at a time, so every step is bounded.

mod custody;
mod eth;
mod faults;
mod fees;
mod host_root_sadmin;
mod host_root_witness;
mod lifecycle;
mod reconcile;
mod rig;
mod scenarios;
