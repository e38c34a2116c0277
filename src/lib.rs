//! wshub: a sans-IO WebSocket pub/sub hub.
//!
//! ```
//! use std::time::Duration;
//! use wshub::blocking::{HubCommands, Server};
//! use wshub::core::{HubConfig, Message};
//!
//! let server = Server::builder(HubConfig::default()).bind("127.0.0.1:0")?;
//! let hub = server.handle(); // cloneable, usable from any thread
//! // Clients connect to ws://ADDR/ws and subscribe; nobody has yet.
//! let line = Message::process_output("build-1", "compiling...");
//! assert_eq!(hub.publish("process:build-1", line), Ok(0));
//! assert_eq!(hub.stats().unwrap().connections, 0);
//! assert!(hub.shutdown(Duration::from_secs(1)), "nothing to flush");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! This facade re-exports the core ([`core`]) and the blocking adapter
//! ([`blocking`]); the smol and tokio adapters are the `wshub-smol` and
//! `wshub-tokio` crates. The `wshub` binary (server, `sub`, `pub`, `exec`)
//! is built from this package too; its modules are its own, not API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use wshub_blocking as blocking;
pub use wshub_core as core;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
