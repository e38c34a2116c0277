//! The hostile-peer suite (tests/hostile/mod.rs) against the blocking adapter.

mod adapters;
mod hostile;
mod suite;

use adapters::Blocking;

hostile_suite!(Blocking);
