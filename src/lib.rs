//! wshub: a sans-IO WebSocket pub/sub hub.
//!
//! This facade re-exports the core ([`core`]) and the blocking adapter
//! ([`blocking`]), and holds the `wshub` binary's command-line parsing
//! ([`cli`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod cli;
mod config_file;
pub mod connect;
pub mod exec;
pub mod jwt;
pub mod logging;
pub mod publish;
pub mod running;
pub mod sub;

pub use wshub_blocking as blocking;
pub use wshub_core as core;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
