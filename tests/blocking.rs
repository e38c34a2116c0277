//! The adapter behaviour suite against the blocking adapter.

mod adapters;
mod suite;

use adapters::Blocking;

adapter_suite!(Blocking);
