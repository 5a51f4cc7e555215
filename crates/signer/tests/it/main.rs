//! kinko-signer integration tests: the attack table against an in-process server on a real Unix
//! socket, the transport, persistence, and the binary.

mod attacks;
mod binary;
mod harness;
mod persistence;
mod transport;
