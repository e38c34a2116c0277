//! The test harness of wshub-core: fuzz checks, reference models and the
//! tungstenite differential, kept out of the production crate.
//!
//! Each `check_*` function takes arbitrary bytes, drives a piece of the core
//! with them and **panics when an invariant is violated**; that is its whole
//! purpose. The targets under `fuzz/fuzz_targets/` are one-line calls into
//! these functions, `testkit/tests/fuzz_corpus.rs` replays the committed
//! corpus and every saved crash through them on each `cargo test`, and the
//! unit tests (`src/tests.rs`) run them over hand-made and random inputs.
//!
//! - [`check_handshake`]: upgrade requests in arbitrary splits, through the
//!   request reader ([`check_handshake_bytes`]) and through a `Hub`: a 101
//!   and then valid frames, or exactly one well-formed HTTP response and then
//!   one `Closed`.
//! - [`check_frames`]: arbitrary frame bytes after a valid handshake, in
//!   arbitrary splits, against a model built on a standalone `FrameDecoder`
//!   (exact output in echo mode); [`check_frames_differential`] reads the
//!   same bytes ([`FramesCase`]) with tungstenite and compares.
//! - [`check_hub_ops`]: a sequence of operations over up to eight
//!   connections, checked against a reference model (`src/hub_ops/`)
//!   after every step.
//! - [`check_backoff`]: backoff policies and schedules.
//! - [`check_client_bytes`]: the client state machine.
//! - [`check_recovery_bytes`]: history and recovery (issue 11): clients cut
//!   and resuming with `recover` never see a duplicate or a silent gap
//!   (`src/recovery/`; [`run_recovery`] is the quickcheck property's entry).
//! - [`check_broker_bytes`]: the broker seam (issue 12): two hubs on one
//!   in-memory broker ([`broker::MemoryBroker`], which core's tests use
//!   too) under dropped links, restarts and late confirmations never
//!   duplicate or reorder an offset, answer every request once, and end
//!   with every subscriber at its channel's head (`src/broker/`).
//!
//! Every input is read through one [`ByteCursor`]. Time is an argument in the
//! core, so the harnesses take one anchor instant and only ever use offsets
//! from it; an input always does the same thing.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
pub mod broker;
mod client;
pub mod differential;
mod frames;
pub mod handshake;
mod hub_ops;
mod input;
mod recovery;
pub mod virtual_time;
mod wire;

#[cfg(test)]
mod tests;

pub use backoff::check_backoff;
pub use broker::{check_broker_bytes, run_broker, BrokerOp, BrokerTally};
pub use client::check_client_bytes;
pub use differential::check_frames_differential;
pub use frames::{check_frames, FramesCase};
pub use handshake::{check_handshake, check_handshake_bytes};
pub use hub_ops::check_hub_ops;
pub use input::ByteCursor;
pub use recovery::{check_recovery_bytes, run_recovery, RecoveryOp, RecoveryTally};
pub use virtual_time::VirtualTime;
