//! Runs the core's reconnecting [`wshub_core::client::Client`] over real TCP
//! sockets on smol.
//!
//! [`spawn`] starts one **driver task** on smol's global executor that owns
//! the client and sleeps until the client's next deadline (`Timer::at`), an
//! application command, or socket input arrives. Each connection attempt is a
//! task (`TcpStream::connect`, cancelled if the client gives up on it: the
//! connect timeout is the core's), and each connection has a **reader task**
//! and a **writer task**. The driver makes no protocol decisions: the
//! handshake, backoff, failover, resubscription, recovery and timeouts are the core's.
//! What the driver does with what arrives is the core's too
//! ([`DriverCore`]), as are the handle's and
//! builder's methods: this module is the runtime's plumbing.
//!
//! ```no_run
//! use wshub_smol::client::{self, ClientConfig, ClientEvent, Endpoint};
//!
//! smol::block_on(async {
//!     let endpoint = Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap();
//!     let (client, events) = client::spawn(ClientConfig::new(vec![endpoint]))?;
//!     client.subscribe("process:build-1");
//!     while let Ok(event) = events.recv().await {
//!         match event {
//!             ClientEvent::Message(m) => println!("{}: {}", m.kind, m.data),
//!             ClientEvent::AuthFailed { status, .. } => {
//!                 eprintln!("refused with HTTP {status}");
//!                 client.close();
//!             }
//!             other => eprintln!("{other:?}"),
//!         }
//!     }
//!     // The channel ends after `ClientEvent::Closed`.
//!     Ok::<(), std::io::Error>(())
//! })?;
//! # Ok::<(), std::io::Error>(())
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
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use smol::channel::{self, Receiver, Sender};
use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{Task, Timer};
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
type Reply = Sender<Result<(), SendError>>;

/// Commands a running client from any task or thread. Cheap to clone.
/// [`ClientHandle::send`] from a plain thread:
/// `smol::block_on(handle.send(..))`.
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
        let (tx, rx) = channel::bounded(1);
        if !self.shared.tell(Command::Send(message, tx)) {
            return Err(SendError::Closed);
        }
        rx.recv().await.unwrap_or(Err(SendError::Closed))
    }
}

/// Starts a client on `config.endpoints` with a seed from the operating
/// system, as a task on smol's global executor. Returns its handle and its
/// events: everything the core reports except the driver's own `Connect` and
/// `CloseSocket`, ending with [`ClientEvent::Closed`] (after which the
/// channel ends).
///
/// Fails on an invalid config, an unreadable or empty
/// [`ClientConfig::ca_file`] (`InvalidInput`, naming the file), or when the
/// operating system has no random source for the
/// seed ([`os_seed`]).
pub fn spawn(config: ClientConfig) -> io::Result<(ClientHandle, Receiver<ClientEvent>)> {
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

    /// Starts the client: see [`spawn`].
    pub fn spawn(self) -> io::Result<(ClientHandle, Receiver<ClientEvent>)> {
        let config = self.setup.config();
        let tls = if config.ca_file.is_some() || config.endpoints.iter().any(|e| e.tls) {
            Some(Connector::new(config.ca_file.as_deref())?)
        } else {
            None
        };
        let client = (self.setup).start_io(Instant::now(), os_seed)?;
        let (tx, rx) = channel::unbounded();
        let (input_tx, input_rx) = channel::bounded(Tasks::INPUT_QUEUE);
        let (event_tx, events) = channel::unbounded();
        let tasks = Tasks {
            events: event_tx,
            tx: tx.clone(),
            input: input_tx,
            tls,
        };
        let driver = DriverCore::new(client, tasks);
        let state = driver.shared_state();
        smol::spawn(run(driver, rx, input_rx)).detach();
        let tell = move |command| tx.try_send(Cmd::Command(command)).is_ok();
        let handle = ClientHandle {
            shared: Arc::new(SharedHandle::new(state, tell)),
        };
        Ok((handle, events))
    }
}

/// The current connection's tasks.
struct Socket {
    /// Output for the writer; dropping it makes the writer finish and shut
    /// the socket down.
    writer: Sender<ToWriter>,
    /// Dropping it cancels the reader.
    _reader: Task<()>,
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
    events: Sender<ClientEvent>,
    /// For connect tasks.
    tx: Sender<Cmd>,
    /// For reader and writer tasks.
    input: Sender<Cmd>,
    /// For `wss://` endpoints.
    tls: Option<Connector>,
}

async fn run(mut driver: DriverCore<Tasks>, rx: Receiver<Cmd>, input: Receiver<Cmd>) {
    driver.drain(Instant::now());
    while !driver.is_closed() {
        let timer = match driver.poll_timeout() {
            Some(at) => Timer::at(at),
            None => Timer::never(),
        };
        // `or` polls left first: commands, then input, then the timer.
        // The driver holds senders of both channels: neither ends first.
        let woken = future::or(
            async {
                match rx.recv().await {
                    Ok(cmd) => Some(cmd),
                    Err(_) => future::pending().await,
                }
            },
            future::or(
                async {
                    match input.recv().await {
                        Ok(cmd) => Some(cmd),
                        Err(_) => future::pending().await,
                    }
                },
                async {
                    timer.await;
                    None
                },
            ),
        )
        .await;
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
    /// Dropping it cancels the connect.
    type Reply = Reply;
    type Connect = Task<()>;
    type Stream = Stream;
    type Socket = Socket;

    fn connect(&mut self, g: Generation, endpoint: Endpoint) -> Option<Task<()>> {
        let tx = self.tx.clone();
        let tls = self.tls.clone();
        Some(smol::spawn(async move {
            let result = connect(&endpoint, tls.as_ref()).await;
            let _ = tx.try_send(Cmd::Connected(g, result));
        }))
    }

    /// Starts the reader and writer tasks of a connected stream. On a TLS
    /// socket the session is shared ([`SharedSession`]): the reader
    /// decrypts, the writer encrypts and is the only one to write.
    fn open(&mut self, g: Generation, stream: Stream) -> io::Result<Socket> {
        let Stream { tcp: stream, tls } = stream;
        let _ = stream.set_nodelay(true);
        let tls = tls.map(SharedSession::new);
        let mut rd = stream.clone();
        let mut wr = stream;
        let (writer_tx, writer_rx) = channel::unbounded::<ToWriter>();
        let input = self.input.clone();
        let writer_tls = tls.clone();
        smol::spawn(async move {
            while let Ok(write) = writer_rx.recv().await {
                let bytes = match (&writer_tls, write) {
                    (None, ToWriter::Bytes(bytes)) => Ok(Some(bytes)),
                    (None, ToWriter::Flush) => Ok(None),
                    (Some(s), ToWriter::Bytes(plain)) => s.encrypt(Some(&plain)),
                    (Some(s), ToWriter::Flush) => s.encrypt(None),
                };
                let written = match bytes {
                    Ok(Some(bytes)) => {
                        future::or(async { wr.write_all(&bytes).await.is_ok() }, async {
                            Timer::after(Self::WRITE_TIMEOUT).await;
                            false
                        })
                        .await
                    }
                    Ok(None) => true,
                    Err(_) => false,
                };
                if !written {
                    let _ = input.send(Cmd::Socket(g, SocketInput::IoError)).await;
                    break;
                }
            }
            if let Some(out) = writer_tls.as_ref().and_then(SharedSession::close) {
                let _ = future::or(async { wr.write_all(&out).await.is_ok() }, async {
                    Timer::after(std::time::Duration::from_secs(1)).await;
                    false
                })
                .await;
            }
            let _ = wr.shutdown(Shutdown::Both);
        })
        .detach();
        let input = self.input.clone();
        let flush = writer_tx.clone();
        let reader = smol::spawn(async move {
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
            _reader: reader,
        })
    }

    fn transmit(&mut self, socket: &Socket, bytes: Vec<u8>) {
        let _ = socket.writer.try_send(ToWriter::Bytes(bytes));
    }

    fn close(&mut self, connect: Option<Task<()>>, socket: Option<Socket>) {
        // Dropping a connect task cancels it. Dropping the socket: the writer
        // writes what it holds (a close frame), then shuts the socket down;
        // the reader is cancelled.
        drop((connect, socket));
    }

    fn deliver(&mut self, event: ClientEvent) {
        let _ = self.events.try_send(event);
    }

    fn answer(&mut self, reply: Reply, result: Result<(), SendError>) {
        let _ = reply.try_send(result);
    }

    fn connect_done(&mut self, connect: Task<()>) {
        // It has finished: detach rather than cancel it.
        connect.detach();
    }
}

/// What the TLS session made of a read; the writer flushes what it must
/// answer.
fn decrypted(
    (inputs, flush): (Vec<SocketInput>, bool),
    writer: &Sender<ToWriter>,
) -> Vec<SocketInput> {
    if flush {
        let _ = writer.try_send(ToWriter::Flush);
    }
    inputs
}

/// TCP connect, then on a `wss://` endpoint the TLS handshake (the core's
/// connect timeout bounds both: it drops this task).
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
