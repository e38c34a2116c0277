//! The adapter behaviour suite against the smol adapter.

mod adapters;
mod suite;

use adapters::Smol;

adapter_suite!(Smol);
