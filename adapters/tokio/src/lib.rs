//! wshub-tokio: runs a [`wshub_core::Hub`] on a tokio runtime.
//!
//! ```no_run
//! use std::time::Duration;
//! use wshub_core::{Event, HubConfig, Message};
//! use wshub_tokio::Server;
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let mut server = Server::builder(HubConfig::default())
//!         .bind("127.0.0.1:8080")
//!         .await?;
//!     let hub = server.handle();
//!     tokio::spawn(async move {
//!         let line = || Message::process_output("build-1", "compiling...");
//!         while hub.publish("process:build-1", line()).await.is_ok() {
//!             tokio::time::sleep(Duration::from_secs(1)).await;
//!         }
//!     });
//!     while let Some(event) = server.events().recv().await {
//!         if let Event::Connected { conn, identity, .. } = event {
//!             println!("{conn} connected as {:?}", identity.user_id);
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Design
//!
//! Everything runs as tasks spawned on the runtime the server is started in,
//! `current_thread` or multi-thread alike (the core's [`wshub_core::Hub`] is
//! `Send`, so no `LocalSet` is needed):
//!
//! - **One hub task** owns the core. It sleeps until a command arrives on its
//!   bounded channel or the core's next deadline (`sleep_until`, one timer
//!   moved from deadline to deadline, never a fixed tick). It then takes every
//!   command already queued, up to `Hub::commands_per_round` (a quarter of
//!   the queue cap, <= 64); after answering a publish it yields once, so a publisher
//!   with more to send adds it to the same round. Then it fires due timers
//!   and writes.
//! - **The hub task writes.** Each connection's share of the round goes out in
//!   one nonblocking `writev` straight from the core's shared frames (never
//!   copied). Only when a socket's buffer is full does a small task wait for
//!   it to drain and send the hub a `Writable`; meanwhile the core keeps
//!   queueing for that client alone, and its caps and write-stall timer cut
//!   it with 1013 if it never catches up. Why: a writer task per connection
//!   cost a wake-up and a task switch per connection per round and wrote
//!   whatever little had arrived; the round-then-write shape puts up to 64
//!   frames in each system call (14x the tokio-tungstenite baseline at 1,000
//!   subscribers in `benches/`'s e2e run).
//! - **A reader task per connection** waits for readability without holding
//!   a buffer, reads into a per-thread scratch buffer (4 KiB by default) and
//!   sends the bytes to the hub task. The command channel is bounded, so a
//!   peer that floods waits in TCP, not in memory. An idle connection holds
//!   no read or write buffer.
//! - **Deferred authentication** ([`Builder::deferred_auth`]) runs as a task
//!   per pending request; other connections carry on meanwhile.
//! - When the core reports a connection `Closed` with its output written,
//!   the hub shuts the write side down (FIN after the last byte) and the
//!   reader stops feeding the hub and waits briefly for the peer's FIN;
//!   otherwise the socket is cut.
//!
//! The adapter makes no protocol decisions: the handshake, authentication,
//! framing, heartbeats and queue limits are the core's.
//!
//! Application commands go through a [`Handle`] (async methods) or a
//! [`BlockingHandle`] (the same as blocking calls, for threads outside the
//! runtime). Events arrive on a bounded tokio channel ([`Server::events`]).
//!
//! The [`client`] module runs the core's reconnecting client over TCP the
//! same way: a driver task, and a reader and a writer task per connection.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
mod conn;
mod handle;
mod hub_task;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use wshub_core::broker::BrokerLink;
use wshub_core::overflow::DEFAULT_EVENT_CAPACITY;
use wshub_core::{AuthDecision, Event, HubConfig, UpgradeRequest};

pub use client::ClientHandle;
pub use handle::{BlockingHandle, Handle};
pub use wshub_core;
pub use wshub_core::command::{HubCommands, Stopped};

use hub_task::Cmd;

/// A boxed deferred-authentication future.
pub type AuthFuture = Pin<Box<dyn Future<Output = AuthDecision> + Send>>;

/// An authenticator that does I/O (a database lookup, a JWKS fetch): run as
/// a task for each request the core's authenticator deferred.
pub type DeferredAuth = Arc<dyn Fn(UpgradeRequest) -> AuthFuture + Send + Sync>;

/// Configures and starts a [`Server`].
pub struct Builder {
    config: HubConfig,
    deferred_auth: Option<DeferredAuth>,
    read_buffer: usize,
    event_capacity: usize,
    broker: Option<Box<dyn BrokerLink>>,
}

impl Builder {
    /// How many events [`Server::events`] holds unread (default
    /// [`DEFAULT_EVENT_CAPACITY`]). When it is full the hub does not wait:
    /// newer events are dropped and counted, and an `Event::EventsDropped`
    /// with the count comes once there is room (at the hub's next round). A
    /// dropped `AuthPending` or `HttpRequest` is answered by the handshake
    /// timeout (503, 408).
    ///
    /// On a current-thread runtime the application's reader runs only when
    /// the hub task yields, so a burst (thousands of clients dropping at
    /// once) arrives in one go: size the channel for the largest burst.
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events.max(1);
        self
    }

    /// Runs as one node of many sharing a broker (`wshub-redis`): turns on
    /// [`HubConfig::broker`] and hands the hub's broker outputs to `link`;
    /// the broker driver reports back through `Command::Broker` on
    /// [`Server::handle`].
    pub fn broker(mut self, link: impl BrokerLink) -> Self {
        self.config.broker = true;
        self.broker = Some(Box::new(link));
        self
    }

    /// Decides deferred authentications with the async function `f`, run as a
    /// task per request (`Event::AuthPending` is then not reported). Without
    /// it, deferred requests surface as `Event::AuthPending` for the
    /// application to answer through [`Handle::accept`] /
    /// [`Handle::reject`].
    /// An answer that comes after the core's handshake timeout is ignored
    /// (the client got 503), and the task is aborted. Blocking work belongs
    /// in `tokio::task::spawn_blocking`.
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// use wshub_core::{AuthDecision, HubConfig, Identity, Rejection};
    /// let server = wshub_tokio::Server::builder(HubConfig::default())
    ///     .deferred_auth(|req| async move {
    ///         match req.query_param("user") {
    ///             Some(u) => AuthDecision::Accept(Identity::user(u)),
    ///             None => AuthDecision::Reject(Rejection::forbidden()),
    ///         }
    ///     })
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn deferred_auth<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AuthDecision> + Send + 'static,
    {
        self.deferred_auth = Some(Arc::new(move |req| Box::pin(f(req)) as AuthFuture));
        self
    }

    /// Most bytes taken from a socket per read (default 4 KiB), into a
    /// scratch buffer shared by the connections of a runtime thread.
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes.max(64);
        self
    }

    /// Binds a TCP listener and serves it. The accept queue is 4096 deep
    /// (capped by `net.core.somaxconn`), with `SO_REUSEADDR`: tokio's own
    /// `TcpListener::bind` asks for 128, and a burst of more connections
    /// than that makes the kernel drop SYNs that clients retry only a
    /// second later.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server> {
        self.listener(bind_listener(addr).await?)
    }

    /// Serves an already bound listener. Must be called inside a runtime.
    pub fn listener(self, listener: TcpListener) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let mut server = self.start()?;
        server.local_addr = Some(addr);
        tokio::spawn(accept_loop(
            listener,
            server.handle.clone(),
            server.stopping.clone(),
        ));
        Ok(server)
    }

    /// Starts with no listener: hand it streams with [`Handle::add_stream`]
    /// (to share a port with an HTTP server, say). Must be called inside a
    /// runtime; the hub's tasks are spawned on it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use std::time::Duration;
    /// use wshub_core::HubConfig;
    ///
    /// let server = wshub_tokio::Server::builder(HubConfig::default()).start()?;
    /// let hub = server.handle();
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?;
    /// let client = tokio::net::TcpStream::connect(addr).await?;
    /// let (accepted, _) = listener.accept().await?;
    /// // An HTTP server saw an upgrade request coming: hand the stream over.
    /// hub.add_stream(accepted).await.unwrap();
    /// assert_eq!(hub.stats().await.unwrap().pending, 1);
    /// assert!(hub.shutdown(Duration::from_secs(1)).await);
    /// # drop(client);
    /// # Ok(()) }
    /// ```
    pub fn start(self) -> io::Result<Server> {
        if self.config.broker && self.broker.is_none() {
            let e = "HubConfig::broker is on but no broker link was given (Builder::broker)";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        let (event_tx, events) = mpsc::channel(self.event_capacity);
        let parts = hub_task::Parts {
            deferred: self.deferred_auth,
            broker: self.broker,
            read_buffer: self.read_buffer,
        };
        let started = hub_task::spawn(self.config, event_tx, parts)?;
        Ok(Server {
            handle: started.handle,
            events,
            local_addr: None,
            task: started.task,
            stopping: started.stopping,
        })
    }
}

/// A running hub. Dropping it leaves the hub running (until
/// [`Handle::shutdown`] or the runtime's end); its events are then dropped.
pub struct Server {
    handle: Handle,
    events: mpsc::Receiver<Event>,
    local_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
    stopping: watch::Receiver<bool>,
}

impl Server {
    /// A builder with `config`.
    pub fn builder(config: HubConfig) -> Builder {
        Builder {
            config,
            deferred_auth: None,
            read_buffer: 4096,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            broker: None,
        }
    }

    /// A handle to command the hub from any task (or, through
    /// [`Handle::blocking`], any thread).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The bound address, when serving a listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The hub's events: connected, closed, auth failures, application
    /// messages, slow consumers, pending authentications (without
    /// [`Builder::deferred_auth`]), plain HTTP requests (with
    /// `HubConfig::http_fallback`). The channel is bounded
    /// ([`Builder::event_capacity`]): unread, newer events are dropped and
    /// counted (`Event::EventsDropped`). The channel ends when the hub task
    /// does.
    pub fn events(&mut self) -> &mut mpsc::Receiver<Event> {
        &mut self.events
    }

    /// Takes the event receiver (to read it in another task); [`Server::events`]
    /// then returns a receiver that is already closed.
    pub fn take_events(&mut self) -> mpsc::Receiver<Event> {
        let (_, closed) = mpsc::channel(1);
        std::mem::replace(&mut self.events, closed)
    }

    /// Waits for the hub task to end (after [`Handle::shutdown`]).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Accept-queue length asked of the kernel.
const BACKLOG: u32 = 4096;

/// Binds the first address that works, with [`BACKLOG`] and `SO_REUSEADDR`.
async fn bind_listener(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Accepts until shutdown starts or the hub ends.
async fn accept_loop(listener: TcpListener, handle: Handle, mut stopping: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            biased;
            // True, or the hub task is gone (its sender dropped).
            _ = stopping.wait_for(|s| *s) => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                if handle
                    .tx
                    .send(Cmd::Open(stream, Some(peer), Vec::new()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if is_transient(&e) => {
                // Out of descriptors or an aborted connection: back off briefly
                // instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => return,
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::NotConnected
    )
}
