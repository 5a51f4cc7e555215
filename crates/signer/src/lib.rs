//! kinko-signer: see docs/design/custody.md.
