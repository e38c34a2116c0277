//! wshub-blocking: runs a [`wshub_core::Hub`] on plain std threads, no async
//! runtime.
//!
//! One hub thread owns the core and sleeps on a command channel until the
//! core's next deadline. It takes a round of commands (every one already
//! queued, up to `Hub::commands_per_round`: a quarter of the queue cap),
//! then writes each connection's share in one `sendmsg` with `MSG_DONTWAIT`
//! straight from the core's shared frames: it never waits on a socket. Each
//! connection has a reader thread (blocking reads into a small reused buffer,
//! one descriptor shared with the hub). A connection whose socket buffer is
//! full gets a writer thread until it has caught up, so a client that stops
//! reading blocks only that thread, never the hub or the other clients; the
//! core's caps and write-stall timer cut it with 1013 if it never catches up.
//! (A writer thread per connection, as before, made every publish wake one
//! thread per subscriber: 0.11x the tokio-tungstenite baseline at 1,000
//! subscribers, against 7.6x now in `benches/`'s e2e run.) Unix only.
//!
//! The [`client`] module runs the core's reconnecting client over TCP
//! with a driver thread, and a reader and a writer thread per connection.
//!
//! ```no_run
//! use wshub_blocking::{HubCommands, Server};
//! use wshub_core::{Event, HubConfig, Message};
//!
//! let server = Server::builder(HubConfig::default()).bind("127.0.0.1:8080")?;
//! let hub = server.handle();
//! std::thread::spawn(move || loop {
//!     let _ = hub.publish("process:build-1", Message::process_output("build-1", "compiling..."));
//!     std::thread::sleep(std::time::Duration::from_secs(1));
//! });
//! for event in server.events() {
//!     if let Event::Connected { conn, identity, .. } = event {
//!         println!("{conn} connected as {:?}", identity.user_id);
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
mod conn;
mod handle;
mod hub_thread;
pub mod listen;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use wshub_core::broker::BrokerLink;
use wshub_core::overflow::DEFAULT_EVENT_CAPACITY;
use wshub_core::{AuthDecision, HubConfig, UpgradeRequest};

pub use client::ClientHandle;
pub use handle::Handle;
pub use wshub_core;
pub use wshub_core::command::{HubCommands, Stopped};

/// An authenticator that may block (a database lookup, an HTTP call): run on a
/// worker thread for each request the core's authenticator deferred.
pub type DeferredAuth = Arc<dyn Fn(&UpgradeRequest) -> AuthDecision + Send + Sync>;

/// Configures and starts a [`Server`].
pub struct Builder {
    config: HubConfig,
    deferred_auth: Option<DeferredAuth>,
    read_buffer: usize,
    thread_stack: usize,
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

    /// Runs deferred authentication decisions on worker threads with `f`.
    /// Without it, deferred requests surface as `Event::AuthPending` for the
    /// application to answer through [`HubCommands::accept`] /
    /// [`HubCommands::reject`].
    pub fn deferred_auth(
        mut self,
        f: impl Fn(&UpgradeRequest) -> AuthDecision + Send + Sync + 'static,
    ) -> Self {
        self.deferred_auth = Some(Arc::new(f));
        self
    }

    /// Runs as one node of many sharing a broker (`wshub-redis`): turns on
    /// [`HubConfig::broker`] and hands the hub's broker outputs to `link`;
    /// the broker driver reports back through
    /// `Command::Broker` on [`Server::handle`].
    pub fn broker(mut self, link: impl BrokerLink) -> Self {
        self.config.broker = true;
        self.broker = Some(Box::new(link));
        self
    }

    /// Size of each connection's read buffer (default 4 KiB).
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes.max(64);
        self
    }

    /// Binds a TCP listener and serves it.
    pub fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server> {
        self.listener(listen::bind_listener(addr)?)
    }

    /// Serves an already bound listener.
    pub fn listener(self, listener: TcpListener) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let mut server = self.start()?;
        server.local_addr = Some(addr);
        let _ = server.handle.listen_addr.set(addr);
        let handle = server.handle.clone();
        let acceptor = std::thread::Builder::new()
            .name("wshub-accept".into())
            .spawn(move || accept_loop(listener, handle))?;
        server.threads.push(acceptor);
        Ok(server)
    }

    /// Starts with no listener: hand it streams with [`Handle::add_stream`]
    /// (to share a port with an HTTP server, say).
    pub fn start(self) -> io::Result<Server> {
        self.config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if self.config.broker && self.broker.is_none() {
            let e = "HubConfig::broker is on but no broker link was given (Builder::broker)";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        let (event_tx, events) = mpsc::sync_channel(self.event_capacity);
        let (handle, thread) = hub_thread::spawn(
            self.config,
            event_tx,
            self.deferred_auth,
            self.broker,
            conn::Settings {
                read_buffer: self.read_buffer,
                stack: self.thread_stack,
            },
        )?;
        Ok(Server {
            handle,
            events,
            local_addr: None,
            threads: vec![thread],
        })
    }
}

/// A running hub.
pub struct Server {
    handle: Handle,
    events: Receiver<wshub_core::Event>,
    local_addr: Option<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// A builder with `config`.
    pub fn builder(config: HubConfig) -> Builder {
        Builder {
            config,
            deferred_auth: None,
            read_buffer: 4096,
            thread_stack: 128 * 1024,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            broker: None,
        }
    }

    /// A handle to command the hub from any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The hub's events: connected, disconnected, auth failures, messages,
    /// slow consumers. The channel is bounded
    /// ([`Builder::event_capacity`]): unread, newer events are dropped and
    /// counted (`Event::EventsDropped`).
    pub fn events(&self) -> &Receiver<wshub_core::Event> {
        &self.events
    }

    /// The bound address, when serving a listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Waits for the hub thread (after [`Handle::shutdown`]).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, handle: Handle) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if handle.is_stopping() || handle.add_stream_from(stream, Some(peer)).is_err() {
                    return;
                }
            }
            Err(e) if is_transient(&e) => {
                // Out of descriptors or an aborted connection: back off briefly
                // instead of spinning.
                std::thread::sleep(std::time::Duration::from_millis(10));
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

/// Wakes a thread blocked in `accept` on `addr` by connecting to it.
pub(crate) fn poke(addr: SocketAddr) {
    let _ = TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200));
}
