//! The hostile-peer suite (tests/hostile/mod.rs) against the tokio adapter.

mod adapters;
mod hostile;
mod suite;

use adapters::Tokio;

hostile_suite!(Tokio);
