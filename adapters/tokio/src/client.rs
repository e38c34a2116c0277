//! Runs the core's reconnecting [`wshub_core::client::Client`] over real TCP
//! sockets on a tokio runtime.
//!
//! [`spawn`] starts one **driver task** that owns the client and sleeps until
//! the client's next deadline (`sleep_until`), an application command, or
//! socket input arrives. Each connection attempt is a task (`TcpStream::connect`,
//! aborted if the client gives up on it: the connect timeout is the core's),
//! and each connection has a **reader task** and a **writer task**. The
//! driver makes no protocol decisions: the handshake, backoff, failover,
//! resubscription, recovery and timeouts are the core's.
//! What the driver does with what arrives is the core's too
//! ([`DriverCore`]), as are the handle's and
//! builder's methods: this module is the runtime's plumbing.
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
//! `wss://` endpoints speak TLS through [`wshub_tls`] (rustls with the ring
//! provider, one sans-IO session shared by the reader and writer tasks): the
//! server's certificate is checked against the webpki roots, or against the
//! certificates of [`ClientConfig::ca_file`], and must be valid for the
//! endpoint's host (also sent as SNI). The connect task runs TCP connect and
//! TLS handshake; the core's `connect_timeout` covers both and the upgrade.
//! A failed handshake (unknown CA, wrong host, expired) is a
//! [`ClientEvent::ConnectFailed`] with [`DisconnectReason::Tls`] naming the
//! problem, and the walk goes on to the next endpoint.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
pub use wshub_core::client::{
    ClientConfig, ClientEvent, ClientState, DisconnectReason, Endpoint, SendError, ServerMessage,
    StreamPosition, TokenPlacement,
};
use wshub_core::client::{
    ClientSetup, Command, DriverCore, DriverInput, Generation, Plumbing, SharedHandle, SocketInput,
};
use wshub_tls::{Connector, Session, SharedSession};

/// What the driver task is told: application commands and connect outcomes
/// on one channel, socket input on another (bounded: see [`Plumbing::INPUT_QUEUE`]).
type Cmd = DriverInput<Reply, Stream>;

/// How the driver answers a send.
type Reply = oneshot::Sender<Result<(), SendError>>;

/// Commands a running client from any task or thread. Cheap to clone.
///
/// Dropping the last clone closes the client as [`ClientHandle::close`] does.
#[derive(Clone)]
pub struct ClientHandle {
    shared: Arc<SharedHandle<Reply>>,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

impl ClientHandle {
    wshub_core::client_command_methods!(async);

    fn shared(&self) -> &SharedHandle<Reply> {
        &self.shared
    }

    async fn ask(&self, message: Value) -> Result<(), SendError> {
        let (tx, rx) = oneshot::channel();
        if !self.shared.tell(Command::Send(message, tx)) {
            return Err(SendError::Closed);
        }
        rx.await.unwrap_or(Err(SendError::Closed))
    }
}

/// Starts a client on `config.endpoints` with a seed from the operating
/// system, as a task on the current tokio runtime. Returns its handle and its
/// events: everything the core reports except the driver's own `Connect` and
/// `CloseSocket`, ending with [`ClientEvent::Closed`] (after which the
/// channel ends).
///
/// Fails outside a runtime, on an invalid config, on an unreadable or empty
/// [`ClientConfig::ca_file`] (`InvalidInput`, naming the file), or when the
/// operating system has no random source for the seed ([`os_seed`]).
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
        let config = self.setup.config();
        let tls = if config.ca_file.is_some() || config.endpoints.iter().any(|e| e.tls) {
            Some(Connector::new(config.ca_file.as_deref())?)
        } else {
            None
        };
        let client = (self.setup).start_io(Instant::now(), os_seed)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (input_tx, input_rx) = mpsc::channel(Tasks::INPUT_QUEUE);
        let (event_tx, events) = mpsc::unbounded_channel();
        let tasks = Tasks {
            events: event_tx,
            tx: tx.clone(),
            input: input_tx,
            tls,
        };
        let driver = DriverCore::new(client, tasks);
        let state = driver.shared_state();
        runtime.spawn(run(driver, rx, input_rx));
        let tell = move |command| tx.send(Cmd::Command(command)).is_ok();
        let handle = ClientHandle {
            shared: Arc::new(SharedHandle::new(state, tell)),
        };
        Ok((handle, events))
    }
}

/// The current connection's tasks.
struct Socket {
    /// Output for the writer; dropping it makes the writer finish and shut
    /// the socket's write side down.
    writer: mpsc::UnboundedSender<ToWriter>,
    reader: AbortHandle,
}

/// What the writer task is told.
enum ToWriter {
    /// Plaintext from the client, to write (encrypted on a TLS socket).
    Bytes(Vec<u8>),
    /// The reader fed the TLS session something it must answer: write out
    /// what it has queued.
    Flush,
}

/// A connected stream: TCP, and the TLS session on it for `wss://`, its
/// handshake done.
struct Stream {
    tcp: TcpStream,
    tls: Option<Session>,
}

/// The driver task's plumbing: its ways out to the application and back to
/// itself, for the tasks it starts.
struct Tasks {
    events: mpsc::UnboundedSender<ClientEvent>,
    /// For connect tasks.
    tx: mpsc::UnboundedSender<Cmd>,
    /// For reader and writer tasks.
    input: mpsc::Sender<Cmd>,
    /// For `wss://` endpoints.
    tls: Option<Connector>,
}

async fn run(
    mut driver: DriverCore<Tasks>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    mut input: mpsc::Receiver<Cmd>,
) {
    driver.drain(Instant::now());
    while !driver.is_closed() {
        let deadline = driver.poll_timeout();
        let woken = tokio::select! {
            biased;
            // The driver holds senders of both: neither ends first.
            Some(cmd) = rx.recv() => Some(cmd),
            Some(cmd) = input.recv() => Some(cmd),
            _ = sleep_until(deadline) => None,
        };
        if let Some(cmd) = woken {
            driver.handle(Instant::now(), cmd);
        }
        for _ in 0..Tasks::BURST {
            match rx.try_recv().or_else(|_| input.try_recv()) {
                Ok(cmd) => driver.handle(Instant::now(), cmd),
                Err(_) => break,
            }
        }
        driver.step(Instant::now());
    }
}

impl Plumbing for Tasks {
    type Reply = Reply;
    type Connect = AbortHandle;
    type Stream = Stream;
    type Socket = Socket;

    fn connect(&mut self, g: Generation, endpoint: Endpoint) -> Option<AbortHandle> {
        let tx = self.tx.clone();
        let tls = self.tls.clone();
        let connect = async move {
            let result = connect(&endpoint, tls.as_ref()).await;
            let _ = tx.send(Cmd::Connected(g, result));
        };
        Some(tokio::spawn(connect).abort_handle())
    }

    /// Starts the reader and writer tasks of a connected stream. On a TLS
    /// socket the session is shared ([`SharedSession`]): the reader
    /// decrypts, the writer encrypts and is the only one to write.
    fn open(&mut self, g: Generation, stream: Stream) -> io::Result<Socket> {
        let Stream { tcp: stream, tls } = stream;
        let _ = stream.set_nodelay(true);
        let tls = tls.map(SharedSession::new);
        let (mut rd, mut wr) = stream.into_split();
        let (writer_tx, mut writer_rx) = mpsc::unbounded_channel::<ToWriter>();
        let input = self.input.clone();
        let writer_tls = tls.clone();
        tokio::spawn(async move {
            while let Some(write) = writer_rx.recv().await {
                let bytes = match (&writer_tls, write) {
                    (None, ToWriter::Bytes(bytes)) => Ok(Some(bytes)),
                    (None, ToWriter::Flush) => Ok(None),
                    (Some(s), ToWriter::Bytes(plain)) => s.encrypt(Some(&plain)),
                    (Some(s), ToWriter::Flush) => s.encrypt(None),
                };
                let written = match bytes {
                    Ok(Some(bytes)) => {
                        tokio::time::timeout(Self::WRITE_TIMEOUT, wr.write_all(&bytes))
                            .await
                            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                if written.is_err() {
                    let _ = input.send(Cmd::Socket(g, SocketInput::IoError)).await;
                    return;
                }
            }
            let bye = async {
                if let Some(out) = writer_tls.as_ref().and_then(SharedSession::close) {
                    let _ = wr.write_all(&out).await;
                }
                wr.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
        });
        let input = self.input.clone();
        let flush = writer_tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; Self::READ_BUFFER];
            loop {
                let Some(read) = SocketInput::from_read(rd.read(&mut buf).await, &buf) else {
                    continue; // interrupted
                };
                let inputs = match (&tls, read) {
                    (Some(s), SocketInput::Read(bytes)) => decrypted(s.read(&bytes), &flush),
                    (Some(s), SocketInput::Eof) => decrypted(s.read(&[]), &flush),
                    (_, read) => vec![read],
                };
                for read in inputs {
                    let last = read.is_last();
                    if input.send(Cmd::Socket(g, read)).await.is_err() || last {
                        return;
                    }
                }
            }
        });
        Ok(Socket {
            writer: writer_tx,
            reader: reader.abort_handle(),
        })
    }

    fn transmit(&mut self, socket: &Socket, bytes: Vec<u8>) {
        let _ = socket.writer.send(ToWriter::Bytes(bytes));
    }

    fn close(&mut self, connect: Option<AbortHandle>, socket: Option<Socket>) {
        if let Some(connect) = connect {
            connect.abort();
        }
        if let Some(s) = socket {
            // The writer writes what it holds (a close frame), then shuts its
            // side down; the socket closes with it.
            s.reader.abort();
            drop(s.writer);
        }
    }

    fn deliver(&mut self, event: ClientEvent) {
        let _ = self.events.send(event);
    }

    fn answer(&mut self, reply: Reply, result: Result<(), SendError>) {
        let _ = reply.send(result);
    }
}

/// What the TLS session made of a read; the writer flushes what it must
/// answer.
fn decrypted(
    (inputs, flush): (Vec<SocketInput>, bool),
    writer: &mpsc::UnboundedSender<ToWriter>,
) -> Vec<SocketInput> {
    if flush {
        let _ = writer.send(ToWriter::Flush);
    }
    inputs
}

/// TCP connect, then on a `wss://` endpoint the TLS handshake (the core's
/// connect timeout bounds both: it aborts this task).
async fn connect(endpoint: &Endpoint, tls: Option<&Connector>) -> io::Result<Stream> {
    let mut tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
    let (true, Some(connector)) = (endpoint.tls, tls) else {
        return Ok(Stream { tcp, tls: None });
    };
    let mut session = Session::new(connector, &endpoint.host)?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(out) = session.poll_transmit() {
            tcp.write_all(&out).await?;
        }
        if !session.is_handshaking() {
            return Ok(Stream {
                tcp,
                tls: Some(session),
            });
        }
        let n = tcp.read(&mut buf).await?;
        if let Err(e) = session.handshake_read(&buf[..n]) {
            // Best effort: the alert that tells the server why.
            if let Some(out) = session.poll_transmit() {
                let _ = tcp.write_all(&out).await;
            }
            return Err(e);
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
