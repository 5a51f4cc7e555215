//! kinko-api integration tests: real servers on loopback sockets, one test binary.
mod browser;
mod cbfeed;
mod cdp;
mod coinbase;
mod console;
mod console_lookup;
mod console_signer;
mod customer;
mod harness;
mod identity;
mod native;
mod openapi;
mod ops;
mod web;
mod ws;
