//! wshub-smol: runs a [`wshub_core::Hub`] on smol (async-io).
//!
//! ```no_run
//! use std::time::Duration;
//! use wshub_smol::Server;
//! use wshub_smol::wshub_core::{AuthDecision, Event, HubConfig, Identity, Message};
//!
//! smol::block_on(async {
//!     let server = Server::builder(HubConfig::default())
//!         // Runs as a task for each request the core's authenticator deferred.
//!         .deferred_auth(|request| async move {
//!             match request.query_param("user") {
//!                 Some(user) => AuthDecision::Accept(Identity::user(user)),
//!                 // Still undecided: the handshake timeout answers 503.
//!                 None => AuthDecision::Defer,
//!             }
//!         })
//!         .bind("127.0.0.1:8080")
//!         .await?;
//!     let hub = server.handle();
//!     smol::spawn(async move {
//!         loop {
//!             let line = Message::process_output("build-1", "compiling...");
//!             let _ = hub.publish("process:build-1", line).await;
//!             smol::Timer::after(Duration::from_secs(1)).await;
//!         }
//!     })
//!     .detach();
//!     let events = server.events();
//!     while let Ok(event) = events.recv().await {
//!         if let Event::Connected { conn, identity, .. } = event {
//!             println!("{conn} connected as {:?}", identity.user_id);
//!         }
//!     }
//!     Ok::<(), std::io::Error>(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Tasks
//!
//! Everything runs as `Send` tasks on smol's global executor (`smol::spawn`;
//! its thread count comes from `SMOL_THREADS`, default 1), or on an executor
//! the application passes to [`Builder::executor`] and runs itself:
//!
//! - **one hub task** owns the core. It sleeps until a command arrives on its
//!   bounded queue or the core's next deadline passes (`Timer::at`, never a
//!   fixed tick), then takes a round of commands: every one already queued,
//!   up to `Hub::commands_per_round` (a quarter of the queue cap, <= 64),
//!   yielding once after answering a publish so a publisher with more to
//!   send joins the round. It fires due timers, sends the core's events to
//!   the event channel and **writes the output itself**: one nonblocking
//!   `writev` per connection straight from the core's shared frames, never
//!   copied. Why: with a writer task per connection smol's FIFO executor ran
//!   the publisher before the writers, so each write carried one frame (0.3x
//!   the tokio-tungstenite baseline); a round per write carries up to 64
//!   (9-11x in `benches/`'s e2e run);
//! - **a waiter task** only for a socket whose buffer is full: it waits for
//!   room and tells the hub to write again. Meanwhile the core queues for
//!   that client alone, and its caps and write-stall timer cut it with 1013
//!   if it never catches up;
//! - **a reader task per connection** waits for readability holding no
//!   buffer, reads into a per-thread scratch buffer and queues the bytes to
//!   the hub; the queue is bounded, so a flooding peer meets TCP
//!   backpressure instead of growing memory;
//! - an accept task when serving a listener, and one task per deferred
//!   authentication.
//!
//! When the core reports a connection closed with its output written, the hub
//! shuts the write side and the reader lingers briefly for the peer's EOF; a
//! connection whose output the core gave up on is cut at once.
//!
//! # Blocking use
//!
//! The server needs no runtime on the application's side: from a plain
//! thread, `smol::block_on(handle.publish(..))` waits for the answer while the
//! hub's own threads do the work. See [`Handle`] for the one case where that
//! deadlocks (blocking inside a task of the hub's executor).
//!
//! # Lifetime
//!
//! The server runs until [`Handle::shutdown`]; dropping the [`Server`] does
//! not stop it. After shutdown the event channel ends.
//!
//! # Client
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
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use smol::channel::{self, Receiver};
use smol::future::{self, Boxed};
use smol::net::{AsyncToSocketAddrs, TcpListener};
use smol::{Executor, Task, Timer};
use wshub_core::broker::BrokerLink;
use wshub_core::overflow::DEFAULT_EVENT_CAPACITY;
use wshub_core::{AuthDecision, Event, Hub, HubConfig, UpgradeRequest};

pub use client::ClientHandle;
pub use handle::Handle;
pub use wshub_core;
pub use wshub_core::command::Stopped;

/// An authenticator that must do I/O (a database ban check, a JWKS fetch):
/// called with each request the core's authenticator deferred, its future run
/// as a task while other connections carry on.
pub type DeferredAuth = Arc<dyn Fn(UpgradeRequest) -> Boxed<AuthDecision> + Send + Sync>;

/// Commands in flight before senders wait: bounds memory under a flood.
const COMMAND_QUEUE: usize = 1024;

/// Where the server's tasks run.
#[derive(Clone)]
pub(crate) enum Spawner {
    Global,
    Executor(Arc<Executor<'static>>),
}

impl Spawner {
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Task<T> {
        match self {
            Spawner::Global => smol::spawn(future),
            Spawner::Executor(ex) => ex.spawn(future),
        }
    }
}

/// Configures and starts a [`Server`].
pub struct Builder {
    config: HubConfig,
    deferred_auth: Option<DeferredAuth>,
    read_buffer: usize,
    spawner: Spawner,
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

    /// Decides deferred authentications with `f`: for each request the core's
    /// authenticator answered [`AuthDecision::Defer`], `f(request)` is called
    /// on the hub task and the future it returns runs as its own task; its
    /// answer goes back to the core. An answer later than the handshake
    /// timeout is moot (the client got 503) and the task is cancelled.
    ///
    /// Do the slow part inside the future, not in `f` itself; wrap blocking
    /// code in `smol::unblock`. Without this, deferred requests surface as
    /// `Event::AuthPending` for the application to answer through
    /// [`Handle::accept`] /
    /// [`Handle::reject`].
    pub fn deferred_auth<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AuthDecision> + Send + 'static,
    {
        self.deferred_auth = Some(Arc::new(move |r| Box::pin(f(r))));
        self
    }

    /// Most bytes taken from a socket per read (default 4 KiB), into a
    /// scratch buffer shared by the connections of an executor thread.
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes.max(64);
        self
    }

    /// Runs the server's tasks on `executor` instead of smol's global one.
    /// The application must keep it running (for instance on a few threads
    /// with `smol::block_on(executor.run(..))`); handle calls that block on
    /// one of those threads can deadlock, see [`Handle`].
    pub fn executor(mut self, executor: Arc<Executor<'static>>) -> Self {
        self.spawner = Spawner::Executor(executor);
        self
    }

    /// Binds a TCP listener and serves it.
    pub async fn bind(self, addr: impl AsyncToSocketAddrs) -> io::Result<Server> {
        // Resolve, then bind with a deep accept queue (std's is 128): a burst
        // of connects past it would otherwise be dropped by the kernel.
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
        for a in smol::net::resolve(addr).await? {
            let socket =
                socket2::Socket::new(socket2::Domain::for_address(a), socket2::Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            match socket.bind(&a.into()).and_then(|()| socket.listen(4096)) {
                Ok(()) => {
                    return self
                        .listener(TcpListener::try_from(std::net::TcpListener::from(socket))?)
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Serves an already bound listener.
    pub fn listener(self, listener: TcpListener) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let spawner = self.spawner.clone();
        let mut server = self.start()?;
        server.local_addr = Some(addr);
        let handle = server.handle.clone();
        let stop = server.stop_accept.clone();
        spawner.spawn(accept_loop(listener, handle, stop)).detach();
        Ok(server)
    }

    /// Starts with no listener: hand it streams with [`Handle::add_stream`]
    /// (to share a port with an HTTP server, say).
    pub fn start(self) -> io::Result<Server> {
        if self.config.broker && self.broker.is_none() {
            let e = "HubConfig::broker is on but no broker link was given (Builder::broker)";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let hub = Hub::new(self.config, now, unix)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (tx, rx) = channel::bounded(COMMAND_QUEUE);
        let (stop_tx, stop_rx) = channel::bounded(1);
        let (event_tx, events) = channel::bounded(self.event_capacity);
        let state = hub_task::HubTask {
            hub,
            conns: wshub_core::ConnMap::new(),
            events: event_tx,
            overflow: Default::default(),
            deferred: self.deferred_auth,
            broker: self.broker,
            spawner: self.spawner.clone(),
            read_buffer: self.read_buffer,
            tx: tx.clone(),
            shutdown_waiters: Vec::new(),
            frames: Vec::new(),
        };
        let task = self.spawner.spawn(state.run(rx));
        Ok(Server {
            handle: Handle {
                tx,
                stop_accept: stop_tx,
            },
            stop_accept: stop_rx,
            events,
            local_addr: None,
            task: Some(task),
        })
    }
}

/// A running hub.
pub struct Server {
    handle: Handle,
    stop_accept: Receiver<()>,
    events: Receiver<Event>,
    local_addr: Option<SocketAddr>,
    task: Option<Task<()>>,
}

impl Server {
    /// A builder with `config`.
    pub fn builder(config: HubConfig) -> Builder {
        Builder {
            config,
            deferred_auth: None,
            read_buffer: 4096,
            spawner: Spawner::Global,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            broker: None,
        }
    }

    /// A handle to command the hub from any task or thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The hub's events: connected, disconnected, auth failures, messages,
    /// slow consumers. Read them with `recv().await` (or `recv_blocking()`
    /// from a plain thread), or as a `Stream`: the receiver is not `Unpin`, so
    /// pin it first (`smol::pin!(events)`, then `events.next().await`). Every
    /// call returns a clone of the same receiver: each event goes to one of
    /// them. The channel is bounded ([`Builder::event_capacity`]): unread,
    /// newer events are dropped and counted (`Event::EventsDropped`). The
    /// channel ends after shutdown.
    pub fn events(&self) -> Receiver<Event> {
        self.events.clone()
    }

    /// The bound address, when serving a listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Waits for the hub task to end (after [`Handle::shutdown`]).
    pub async fn join(mut self) {
        if let Some(task) = self.task.take() {
            task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The hub keeps running for its handles until shutdown.
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

async fn accept_loop(listener: TcpListener, handle: Handle, stop: Receiver<()>) {
    loop {
        // The stop signal goes first: `or` is biased to the left.
        let got = future::or(
            async {
                let _ = stop.recv().await;
                None
            },
            async { Some(listener.accept().await) },
        )
        .await;
        match got {
            None => return,
            Some(Ok((stream, peer))) => {
                if handle.add_stream_from(stream, Some(peer)).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) if is_transient(&e) => {
                // Out of descriptors or an aborted connection: back off briefly
                // instead of spinning.
                Timer::after(Duration::from_millis(10)).await;
            }
            Some(Err(_)) => return,
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::NotConnected
    )
}
