//! The adapter behaviour suite against the tokio adapter, on a current-thread
//! runtime running on a background thread.

mod adapters;
mod suite;

use adapters::Tokio;

adapter_suite!(Tokio);
