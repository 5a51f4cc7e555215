//! kinko-api integration tests: real servers on loopback sockets, one test binary.
mod harness;
