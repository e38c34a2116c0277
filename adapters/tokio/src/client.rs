//! Runs the core's reconnecting [`wshub_core::client::Client`] over real TCP
//! sockets on a tokio runtime.
//!
//! [`spawn`] starts one **driver task** that owns the client and sleeps until
//! the client's next deadline (`sleep_until`), an application command, or
//! socket input arrives. Each connection attempt is a task (`TcpStream::connect`,
//! aborted if the client gives up on it: the connect timeout is the core's),
//! and each connection has a **reader task** and a **writer task**. The
//! driver makes no protocol decisions: the handshake, backoff, failover,
//! resubscription and timeouts are the core's.
//!
//! ```no_run
//! use wshub_tokio::client::{self, ClientConfig, ClientEvent, Endpoint};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let endpoint = Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap();
//! let (client, mut events) = client::spawn(ClientConfig::new(vec![endpoint]))?;
//! client.subscribe("process:build-1");
//! while let Some(event) = events.recv().await {
//!     match event {
//!         ClientEvent::Message(m) => println!("{}: {}", m.kind, m.data),
//!         ClientEvent::AuthFailed { status, .. } => {
//!             eprintln!("refused with HTTP {status}");
//!             client.close();
//!         }
//!         other => eprintln!("{other:?}"),
//!     }
//! }
//! // The channel ends after `ClientEvent::Closed`.
//! # Ok(()) }
//! ```
//!
//! Plain `ws://` only: an endpoint with `tls: true` (`wss://`) is refused by
//! [`spawn`] with an `InvalidInput` error (terminate TLS in front of the hub,
//! or drive the core client with a TLS stream of your own).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use wshub_core::client::{
    Client, ClientSetup, Command, Generation, Link, Output, SharedState, SocketInput,
};
pub use wshub_core::client::{
    ClientConfig, ClientEvent, ClientState, DisconnectReason, Endpoint, SendError, ServerMessage,
    TokenPlacement,
};

/// Socket input queued to the driver before readers wait: a server that
/// floods meets TCP backpressure instead of growing memory.
const INPUT_QUEUE: usize = 256;

/// A write that makes no progress for this long fails the connection (the
/// core then reconnects), so a stalled server cannot pin a writer task.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read buffer per connection.
const READ_BUFFER: usize = 8 * 1024;

/// Application commands and connect outcomes.
enum Cmd {
    Client(Command<Reply>),
    Connected(Generation, io::Result<TcpStream>),
}

/// How the driver answers a send.
type Reply = oneshot::Sender<Result<(), SendError>>;

/// Socket input, numbered by connection attempt so that nothing is reported
/// about a socket the client has already dropped.
type Input = (Generation, SocketInput);

/// Commands a running client from any task or thread. Cheap to clone.
///
/// Dropping the last clone closes the client as [`ClientHandle::close`] does.
#[derive(Clone)]
pub struct ClientHandle {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<Cmd>,
    state: SharedState,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Client(Command::Close));
    }
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field("state", &self.state())
            .finish()
    }
}

impl ClientHandle {
    wshub_core::client_command_methods!(async);

    fn tell(&self, command: Command<Reply>) {
        let _ = self.inner.tx.send(Cmd::Client(command));
    }

    async fn ask(&self, message: Value) -> Result<(), SendError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Cmd::Client(Command::Send(message, tx)))
            .map_err(|_| SendError::Closed)?;
        rx.await.unwrap_or(Err(SendError::Closed))
    }

    fn shared_state(&self) -> &SharedState {
        &self.inner.state
    }
}

/// Starts a client on `config.endpoints` with a seed from the operating
/// system, as a task on the current tokio runtime. Returns its handle and its
/// events: everything the core reports except the driver's own `Connect` and
/// `CloseSocket`, ending with [`ClientEvent::Closed`] (after which the
/// channel ends).
///
/// Fails outside a runtime, on an invalid config, on a `wss://` endpoint
/// (TLS is not supported by this driver), or when the operating system has
/// no random source for the seed ([`os_seed`]).
pub fn spawn(
    config: ClientConfig,
) -> io::Result<(ClientHandle, mpsc::UnboundedReceiver<ClientEvent>)> {
    ClientBuilder::new(config).spawn()
}

/// A client with subscriptions that are in place before the first connect
/// (so they are confirmed by [`ClientEvent::SubscriptionsRestored`]) or a
/// given seed.
#[derive(Debug)]
pub struct ClientBuilder {
    setup: ClientSetup,
}

impl ClientBuilder {
    wshub_core::client_builder_methods!();

    /// Starts the client: see [`spawn`]. Must be called inside a tokio runtime.
    pub fn spawn(self) -> io::Result<(ClientHandle, mpsc::UnboundedReceiver<ClientEvent>)> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let client = (self.setup).start_plain_io("wshub-tokio", Instant::now(), os_seed)?;
        let state = SharedState::new(client.state());
        let (tx, rx) = mpsc::unbounded_channel();
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (event_tx, events) = mpsc::unbounded_channel();
        let driver = Driver {
            client,
            events: event_tx,
            state: state.clone(),
            tx: tx.clone(),
            input: input_tx,
            link: Link::new(),
            closed: false,
        };
        runtime.spawn(driver.run(rx, input_rx));
        let handle = ClientHandle {
            inner: Arc::new(Inner { tx, state }),
        };
        Ok((handle, events))
    }
}

/// The current connection's tasks.
struct Socket {
    /// Output for the writer; dropping it makes the writer finish and shut
    /// the socket's write side down.
    writer: mpsc::UnboundedSender<Vec<u8>>,
    reader: AbortHandle,
}

struct Driver {
    client: Client,
    events: mpsc::UnboundedSender<ClientEvent>,
    state: SharedState,
    /// For connect tasks.
    tx: mpsc::UnboundedSender<Cmd>,
    /// For reader and writer tasks.
    input: mpsc::Sender<Input>,
    /// The connect task in flight, and the connection's tasks.
    link: Link<AbortHandle, Socket>,
    closed: bool,
}

/// What woke the driver.
enum Wake {
    Cmd(Cmd),
    Input(Input),
    Timer,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, mut input: mpsc::Receiver<Input>) {
        self.drain();
        while !self.closed {
            let deadline = self.client.poll_timeout();
            let wake = tokio::select! {
                biased;
                // The driver holds senders of both: neither ends first.
                Some(cmd) = rx.recv() => Wake::Cmd(cmd),
                Some(i) = input.recv() => Wake::Input(i),
                _ = sleep_until(deadline) => Wake::Timer,
            };
            match wake {
                Wake::Cmd(cmd) => self.apply(cmd),
                Wake::Input(i) => self.input(i),
                Wake::Timer => {}
            }
            // Take what else is queued before writing, so a burst of reads or
            // sends goes out in few writes.
            for _ in 0..64 {
                if let Ok(cmd) = rx.try_recv() {
                    self.apply(cmd);
                } else if let Ok(i) = input.try_recv() {
                    self.input(i);
                } else {
                    break;
                }
            }
            self.client.handle_timeout(Instant::now());
            self.drain();
        }
    }

    fn apply(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Client(command) => {
                if let Some((reply, result)) = self.client.apply(now, command) {
                    let _ = reply.send(result);
                }
            }
            Cmd::Connected(g, result) => {
                if self.link.connected(g).is_none() {
                    return; // cancelled meanwhile: dropping the stream closes it
                }
                match result {
                    Ok(stream) => {
                        let socket = self.open(g, stream);
                        self.link.open(g, socket);
                        self.client.handle_connected(now);
                    }
                    Err(_) => self.client.handle_connect_failed(now),
                }
            }
        }
    }

    fn input(&mut self, (g, input): Input) {
        if self.link.is_live(g) {
            self.client.handle_socket(Instant::now(), input);
        }
    }

    /// Carries out the client's output until it has nothing more.
    fn drain(&mut self) {
        while let Some(output) = self.client.poll_output() {
            match output {
                Output::Transmit(bytes) => {
                    if let Some(s) = self.link.socket() {
                        // A writer that has gone reports the error itself.
                        let _ = s.writer.send(bytes);
                    }
                }
                Output::Event(event) => self.on_event(event),
            }
        }
        self.publish_state();
    }

    /// Makes the client's state visible to [`ClientHandle::state`]; done
    /// before every event is handed out, so that an application that sees an
    /// event sees the state that goes with it.
    fn publish_state(&self) {
        self.state.set(self.client.state());
    }

    fn on_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Connect { endpoint, .. } => {
                let tx = self.tx.clone();
                self.link.dial(|g| {
                    let connect = async move {
                        let result =
                            TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await;
                        let _ = tx.send(Cmd::Connected(g, result));
                    };
                    tokio::spawn(connect).abort_handle()
                });
            }
            ClientEvent::CloseSocket => {
                let (connect, socket) = self.link.close();
                if let Some(connect) = connect {
                    connect.abort();
                }
                if let Some(s) = socket {
                    // The writer writes what it holds (a close frame), then
                    // shuts its side down; the socket closes with it.
                    s.reader.abort();
                    drop(s.writer);
                }
            }
            // Nobody listening is fine: events are then dropped.
            other => {
                self.closed |= other == ClientEvent::Closed;
                self.publish_state();
                let _ = self.events.send(other);
            }
        }
    }

    /// Starts the reader and writer tasks of a connected stream.
    fn open(&self, g: Generation, stream: TcpStream) -> Socket {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (writer_tx, mut writer_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let input = self.input.clone();
        tokio::spawn(async move {
            while let Some(bytes) = writer_rx.recv().await {
                let written = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&bytes)).await;
                if !matches!(written, Ok(Ok(()))) {
                    let _ = input.send((g, SocketInput::IoError)).await;
                    return;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
        });
        let input = self.input.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; READ_BUFFER];
            loop {
                let Some(read) = SocketInput::from_read(rd.read(&mut buf).await, &buf) else {
                    continue; // interrupted
                };
                let last = read.is_last();
                if input.send((g, read)).await.is_err() || last {
                    return;
                }
            }
        });
        Socket {
            writer: writer_tx,
            reader: reader.abort_handle(),
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// 64 bits from the operating system's random source (through `getrandom`).
///
/// There is no fallback: the seed picks the WebSocket keys, masks and jitter,
/// and one derived from the clock could be guessed. It fails only where the
/// system offers no random source.
pub fn os_seed() -> io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("no seed from the OS random source: {e}"))
    })?;
    Ok(u64::from_le_bytes(b))
}
