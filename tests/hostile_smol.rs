//! The hostile-peer suite (tests/hostile/mod.rs) against the smol adapter.

mod adapters;
mod hostile;
mod suite;

use adapters::Smol;

hostile_suite!(Smol);
