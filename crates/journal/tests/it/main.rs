//! Integration tests of the journal and snapshot store, on real files in temporary directories.

mod append;
mod checkpoint;
mod common;
mod corruption;
mod full;
mod poison;
mod props;
mod snapshot;
mod torn;
