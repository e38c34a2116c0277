//! wshub-core: the sans-IO state machine of the wshub WebSocket hub.
//!
//! One contract: **feed it what happened (bytes read, bytes written, time
//! passing, application commands), then drain what it wants done (events,
//! frames to write, the next deadline).** It never reads a clock, touches a
//! socket or spawns; every call that can start a timer takes `now`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wshub_core::{Event, Hub, HubConfig, PeerInfo};
//!
//! let mut now = Instant::now();
//! let mut hub = Hub::new(HubConfig::default(), now, Duration::from_secs(1_700_000_000)).unwrap();
//!
//! // A socket was accepted: open a connection and feed what it sent.
//! let conn = hub.open(now, PeerInfo::default()).unwrap();
//! let request = b"GET /ws HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n";
//! hub.handle_read(now, conn, request).unwrap();
//!
//! // The application publishes; nobody is subscribed yet.
//! assert_eq!(hub.process_output(now, "build-1", "compiling"), 0);
//!
//! // The driving loop: drain events, write output, sleep until the deadline.
//! let mut frames = Vec::new();
//! for _ in 0..3 {
//!     while let Some(event) = hub.poll_event() {
//!         if let Event::Connected { conn, identity, .. } = &event {
//!             println!("{conn} connected as {:?}", identity.user_id);
//!         }
//!     }
//!     while let Some(id) = hub.poll_transmit(&mut frames) {
//!         // A real driver hands `frames` to `write_vectored`; here every byte "goes out".
//!         let n: usize = frames.drain(..).map(|f| f.len()).sum();
//!         hub.handle_written(now, id, n).unwrap();
//!     }
//!     match hub.poll_timeout() {
//!         Some(deadline) if deadline > now => now = deadline, // sleep until then, or until a socket is readable
//!         Some(_) => {}
//!         None => break,
//!     }
//!     hub.handle_timeout(now);
//! }
//! assert_eq!(hub.stats().connections, 1);
//! ```
//!
//! # Method groups
//!
//! - **Inputs** (`handle_*`, plus [`Hub::open`]): bytes read in any split,
//!   bytes written, EOF, I/O errors, time passing. Early or repeated
//!   [`Hub::handle_timeout`] calls are no-ops.
//! - **Outputs** (`poll_*`): [`Hub::poll_event`], [`Hub::poll_transmit`]
//!   (shared frames ready for `write_vectored`, round-robin over connections
//!   with output, O(ready)), [`Hub::poll_timeout`] (never later than now while
//!   output or events wait). Drain all three after every input.
//! - **Commands**: publish, broadcast, send to a connection or a user, the go-ws
//!   helpers, subscribe and unsubscribe on a client's behalf, close, answer a
//!   deferred auth ([`Hub::accept`], [`Hub::reject`]), [`Hub::shutdown`].
//! - **Queries**: [`Hub::stats`], subscriber counts, users in a channel,
//!   identities, subscriptions, queued output.
//!
//! Peer faults never return `Err`: they become HTTP refusals, close codes and
//! events. `Err(UsageError)` means the caller named a closed connection or asked
//! for something its state does not allow.
//!
//! # Pieces usable on their own
//!
//! [`handshake`] (incremental upgrade parsing), [`frame`] (RFC 6455 codec),
//! [`auth`] (authenticators), [`backoff`] (reconnect schedule), [`message`]
//! (the JSON protocol), [`write_queue`] (frames between `poll_transmit` and
//! a vectored write).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Lets code written against the public API (fuzz/src/lib.rs, which the
// frame decoder's tests include by file) name this crate from inside it.
#[cfg(test)]
extern crate self as wshub_core;

pub mod auth;
pub mod backoff;
pub mod client;
pub mod command;
pub mod config;
mod conn;
pub mod conn_map;
pub mod event;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
mod hub;
pub mod message;
mod outbound;
pub mod output;
pub mod overflow;
pub mod request;
pub mod router;
mod timers;
pub mod write_queue;

pub use auth::{AuthDecision, AuthFailure, Authenticator, Rejection};
pub use command::{HubCommands, Stopped};
pub use config::{ChannelPolicy, HubConfig, Mode};
pub use conn_map::ConnMap;
pub use event::{CloseReason, ConnId, Event, Stats, UsageError};
pub use hub::Hub;
pub use message::{Message, Timestamp};
pub use output::Output;
pub use request::{Identity, PeerInfo, Secret, UpgradeRequest};
