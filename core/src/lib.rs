//! wshub-core: the sans-IO state machine of the wshub WebSocket hub.
//!
//! One contract: **feed it what happened (bytes read, bytes written, time
//! passing, application commands), then drain everything it wants done
//! (events, frames to write, the next deadline) before waiting again.** It
//! never reads a clock, touches a socket or spawns; every call that can start
//! a timer takes `now`.
//!
//! [`Hub::poll_timeout`] says when to call [`Hub::handle_timeout`]. `None`
//! means "no deadline: block on the sockets", never "done": a hub with no
//! connection has nothing to time, and the next one arrives from a socket.
//! A deadline at or before now (the hub returns the last `now` it saw while
//! events or output wait) means "call `handle_timeout` at once, then drain
//! again".
//!
//! # A driver for one connection
//!
//! A blocking loop over one [`std::net::TcpStream`]: the read timeout is the
//! time left until the hub's deadline. Each turn is one input, then a full
//! drain.
//!
//! ```no_run
//! use std::io::{ErrorKind, Read, Write};
//! use std::net::TcpListener;
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//! use wshub_core::write_queue::{Flushed, WriteQueue};
//! use wshub_core::{Event, Hub, HubConfig, Message, PeerInfo};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let unix_now = SystemTime::now().duration_since(UNIX_EPOCH)?;
//! let mut hub = Hub::new(HubConfig::default(), Instant::now(), unix_now)?;
//! let listener = TcpListener::bind("127.0.0.1:8080")?;
//! let (mut stream, addr) = listener.accept()?;
//! let conn = hub.open(Instant::now(), PeerInfo { addr: Some(addr) })?;
//!
//! let mut buf = vec![0; 16 * 1024];
//! let mut frames = Vec::new();
//! let mut unwritten = WriteQueue::default();
//! loop {
//!     // Drain: events first (commands issued here join this drain), then
//!     // output. On a blocking socket a write takes everything or fails.
//!     let now = Instant::now();
//!     while let Some(event) = hub.poll_event() {
//!         match event {
//!             Event::Connected { conn, .. } => {
//!                 hub.subscribe(now, conn, "news")?;
//!                 hub.send(now, conn, &Message::new("welcome", Default::default()))?;
//!             }
//!             Event::Closed { reason, .. } => {
//!                 println!("closed: {reason:?}");
//!                 return Ok(());
//!             }
//!             _ => {}
//!         }
//!     }
//!     while let Some(id) = hub.poll_transmit(&mut frames) {
//!         unwritten.extend(&mut frames);
//!         let flushed = unwritten.write_with(|slices| stream.write_vectored(slices));
//!         hub.handle_written(now, id, flushed.written())?;
//!         if let Flushed::Failed(_) = flushed {
//!             hub.handle_io_error(now, id)?;
//!         }
//!     }
//!
//!     // Wait for the socket, but no longer than the next deadline.
//!     let timeout = match hub.poll_timeout() {
//!         None => None, // no deadline: block until the peer sends something
//!         Some(at) if at <= now => {
//!             hub.handle_timeout(now); // due, or events or output waiting
//!             continue;
//!         }
//!         Some(at) => Some(at - now),
//!     };
//!     stream.set_read_timeout(timeout)?;
//!     match stream.read(&mut buf) {
//!         Ok(0) => hub.handle_eof(Instant::now(), conn)?,
//!         Ok(n) => hub.handle_read(Instant::now(), conn, &buf[..n])?,
//!         Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
//!             hub.handle_timeout(Instant::now());
//!         }
//!         Err(e) if e.kind() == ErrorKind::Interrupted => {}
//!         Err(_) => hub.handle_io_error(Instant::now(), conn)?,
//!     }
//! }
//! # }
//! ```
//!
//! The connection's `Closed` ends the loop, so no call names a connection
//! the hub has let go. Many connections need readiness instead of blocking
//! reads: `examples/polling-loop` in the repository drives one hub from a
//! single `polling::Poller`, and the `wshub-blocking`, `wshub-smol` and
//! `wshub-tokio` adapters are complete drivers.
//!
//! # The same steps without a socket
//!
//! Nothing in the hub needs a socket or a clock, so a test can play both, and
//! jump time straight to the next deadline instead of sleeping:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wshub_core::{Event, Hub, HubConfig, Message, PeerInfo};
//!
//! /// Drains events and output; what the socket would take goes to `socket`.
//! fn drain(hub: &mut Hub, now: Instant, socket: &mut Vec<u8>) -> Vec<Event> {
//!     let events: Vec<Event> = std::iter::from_fn(|| hub.poll_event()).collect();
//!     let mut frames = Vec::new();
//!     while let Some(id) = hub.poll_transmit(&mut frames) {
//!         let before = socket.len();
//!         frames.drain(..).for_each(|frame| socket.extend_from_slice(&frame));
//!         hub.handle_written(now, id, socket.len() - before).unwrap();
//!     }
//!     events
//! }
//!
//! let mut now = Instant::now(); // the test's clock; the hub never reads one
//! let mut hub = Hub::new(HubConfig::default(), now, Duration::from_secs(1_700_000_000)).unwrap();
//! let mut socket = Vec::new();
//!
//! // A socket was accepted: open a connection and feed what it sent.
//! let conn = hub.open(now, PeerInfo::default()).unwrap();
//! let request = b"GET /ws HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n";
//! hub.handle_read(now, conn, request).unwrap();
//! let events = drain(&mut hub, now, &mut socket);
//! assert!(matches!(events[..], [Event::Connected { .. }]));
//! assert!(socket.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//!
//! // Commands queue output the same way: one frame to each subscriber.
//! hub.subscribe(now, conn, "process:build-1").unwrap();
//! let line = Message::process_output("build-1", "compiling");
//! assert_eq!(hub.publish(now, "process:build-1", line), 1);
//! socket.clear();
//! drain(&mut hub, now, &mut socket);
//! assert_eq!(socket[0], 0x81); // one unmasked text frame
//!
//! // With nothing waiting, `poll_timeout` is the next deadline: a driver
//! // sleeps until then or until a socket has data. Jump from deadline to
//! // deadline until the heartbeat ping goes out.
//! socket.clear();
//! while socket.is_empty() {
//!     now = hub.poll_timeout().expect("an open connection always has a deadline");
//!     hub.handle_timeout(now);
//!     drain(&mut hub, now, &mut socket);
//! }
//! assert_eq!(socket, [0x89, 0x00]); // a ping with no payload
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
//! - **Commands**: publish, broadcast, send to a connection or a user,
//!   subscribe and unsubscribe on a client's behalf, close, answer a deferred
//!   auth ([`Hub::accept`], [`Hub::reject`]), [`Hub::shutdown`]. go-ws's
//!   process and event messages are [`Message`] constructors
//!   ([`Message::process_output`], [`Message::event`]...) to publish or
//!   broadcast.
//! - **Queries**: [`Hub::stats`], subscriber counts, users in a channel,
//!   identities, subscriptions, queued output, a channel's stream position
//!   and stored history ([`Hub::position`], [`Hub::history`]).
//!
//! Every channel publish is numbered and kept in a bounded history by
//! default ([`history`]), so a client that reconnects resumes with
//! `recover` and misses nothing, or is told `recovered: false`.
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

pub mod auth;
pub mod backoff;
pub mod broker;
pub mod client;
pub mod command;
pub mod config;
mod conn;
pub mod conn_map;
pub mod event;
pub mod frame;
pub mod handshake;
pub mod history;
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
pub use event::{CloseReason, ConnId, Event, HistoryReadId, Stats, UsageError};
pub use history::{
    HistoryConfig, HistoryError, HistoryPage, HistoryRule, Publication, StreamPosition,
};
pub use hub::Hub;
pub use message::{Message, Timestamp};
pub use output::Output;
pub use request::{Identity, PeerInfo, Secret, UpgradeRequest};
