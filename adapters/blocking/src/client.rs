//! Runs the core's reconnecting [`wshub_core::client::Client`] over real TCP
//! sockets on std threads.
//!
//! [`spawn`] starts one **driver thread** that owns the client and its socket
//! and sleeps until the client's next deadline, an application command or
//! socket data arrives (all on one channel). Each connection has a **reader
//! thread** (blocking reads fed to that channel) and a **writer thread**
//! (writes the client's output in order, then shuts the socket down when the
//! client asks for it to be dropped), and each connection attempt a short-lived
//! **connect thread**. The driver makes no protocol decisions: the handshake,
//! backoff, failover, resubscription, recovery and timeouts are the core's.
//! What the driver does with what arrives is the core's too
//! ([`DriverCore`]), as are the handle's and
//! builder's methods: this module is the runtime's plumbing.
//!
//! ```no_run
//! use wshub_blocking::client::{self, ClientConfig, ClientEvent, Endpoint};
//!
//! let endpoint = Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap();
//! let (client, events) = client::spawn(ClientConfig::new(vec![endpoint]))?;
//! client.subscribe("process:build-1");
//! for event in events {
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
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! `wss://` endpoints speak TLS through [`wshub_tls`] (rustls with the ring
//! provider): the server's certificate is checked against the webpki roots,
//! or against the certificates of [`ClientConfig::ca_file`], and must be
//! valid for the endpoint's host (also sent as SNI). The connect thread runs
//! TCP connect and TLS handshake; the core's `connect_timeout` covers both
//! and the upgrade. A failed handshake (unknown CA, wrong host, expired) is a
//! [`ClientEvent::ConnectFailed`] with [`DisconnectReason::Tls`] naming the
//! problem, and the walk goes on to the next endpoint.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
pub use wshub_core::client::{
    ClientConfig, ClientEvent, ClientState, DisconnectReason, Endpoint, SendError, ServerMessage,
    StreamPosition, TokenPlacement,
};
use wshub_core::client::{
    ClientSetup, Command, DriverCore, DriverInput, Generation, Plumbing, SharedHandle, SocketInput,
};
use wshub_tls::{Connector, Session, SharedSession};

/// Commands and socket input queued to the driver before senders wait: a
/// server that floods meets TCP backpressure instead of growing memory.
const COMMAND_QUEUE: usize = 1024;

/// Stack size of the reader, writer and connect threads.
const STACK: usize = 128 * 1024;

/// Everything the driver thread is told, on one channel.
type Cmd = DriverInput<Reply, Stream>;

/// A connected stream: TCP, and the TLS session on it for `wss://`, its
/// handshake done.
struct Stream {
    tcp: TcpStream,
    tls: Option<Session>,
}

/// How the driver answers a send.
type Reply = SyncSender<Result<(), SendError>>;

/// Commands a running client from any thread. Cheap to clone.
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
    wshub_core::client_command_methods!(sync);

    fn shared(&self) -> &SharedHandle<Reply> {
        &self.shared
    }

    fn ask(&self, message: Value) -> Result<(), SendError> {
        let (tx, rx) = mpsc::sync_channel(1);
        if !self.shared.tell(Command::Send(message, tx)) {
            return Err(SendError::Closed);
        }
        rx.recv().unwrap_or(Err(SendError::Closed))
    }
}

/// Starts a client on `config.endpoints` with a seed from the operating
/// system. Returns its handle and its events: everything the core reports
/// except the driver's own `Connect` and `CloseSocket`, ending with
/// [`ClientEvent::Closed`] (after which the channel ends).
///
/// Fails on an invalid config, an unreadable or empty
/// [`ClientConfig::ca_file`] (`InvalidInput`, naming the file), when a thread
/// cannot be started, or when the operating system has no random source for
/// the seed ([`os_seed`]).
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
        let connect_timeout = config.connect_timeout;
        let tls = if config.ca_file.is_some() || config.endpoints.iter().any(|e| e.tls) {
            Some(Connector::new(config.ca_file.as_deref())?)
        } else {
            None
        };
        let client = (self.setup).start_io(Instant::now(), os_seed)?;
        let (tx, rx) = mpsc::sync_channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::channel();
        let threads = Threads {
            events: event_tx,
            tx: tx.clone(),
            connect_timeout,
            tls,
        };
        let mut driver = DriverCore::new(client, threads);
        let state = driver.shared_state();
        std::thread::Builder::new()
            .name("wshub-client".into())
            .spawn(move || run(&mut driver, rx))?;
        let tell = move |command| tx.send(Cmd::Command(command)).is_ok();
        let handle = ClientHandle {
            shared: Arc::new(SharedHandle::new(state, tell)),
        };
        Ok((handle, events))
    }
}

/// The current connection's threads.
struct Socket {
    /// Output for the writer; dropping it makes the writer finish and shut
    /// the socket down.
    writer: Sender<ToWriter>,
    /// Kept to cut the socket if the writer cannot be reached.
    stream: TcpStream,
}

/// The driver thread's plumbing: its ways out to the application and back
/// to itself, for the threads it starts.
struct Threads {
    events: Sender<ClientEvent>,
    /// For the connect, reader and writer threads.
    tx: SyncSender<Cmd>,
    connect_timeout: Duration,
    /// For `wss://` endpoints.
    tls: Option<Connector>,
}

/// What the writer thread is told.
enum ToWriter {
    /// Plaintext from the client, to write (encrypted on a TLS socket).
    Bytes(Vec<u8>),
    /// The reader fed the TLS session something it must answer: write out
    /// what it has queued.
    Flush,
}

fn run(driver: &mut DriverCore<Threads>, rx: Receiver<Cmd>) {
    driver.drain(Instant::now());
    while !driver.is_closed() {
        let cmd = match driver.poll_timeout() {
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(cmd) => Some(cmd),
                    Err(RecvTimeoutError::Timeout) => None,
                    // Unreachable: the driver holds a sender itself.
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            None => match rx.recv() {
                Ok(cmd) => Some(cmd),
                Err(_) => return,
            },
        };
        if let Some(cmd) = cmd {
            driver.handle(Instant::now(), cmd);
            for _ in 0..Threads::BURST {
                match rx.try_recv() {
                    Ok(cmd) => driver.handle(Instant::now(), cmd),
                    Err(_) => break,
                }
            }
        }
        driver.step(Instant::now());
    }
}

impl Plumbing for Threads {
    type Reply = Reply;
    /// Its thread cannot be cancelled: the outcome of an attempt the client
    /// has given up on is dropped, and with it the stream.
    type Connect = ();
    type Stream = Stream;
    type Socket = Socket;

    fn connect(&mut self, g: Generation, endpoint: Endpoint) -> Option<()> {
        let (tx, timeout) = (self.tx.clone(), self.connect_timeout);
        let tls = self.tls.clone();
        std::thread::Builder::new()
            .name("wshub-client-connect".into())
            .stack_size(STACK)
            .spawn(move || {
                let result = connect(&endpoint, timeout, tls.as_ref());
                let _ = tx.send(Cmd::Connected(g, result));
            })
            .ok()
            .map(drop)
    }

    /// Starts the reader and writer threads of a connected stream. On a TLS
    /// socket the session is shared ([`SharedSession`]): the reader decrypts,
    /// the writer encrypts and is the only one to write the socket.
    fn open(&mut self, g: Generation, stream: Stream) -> io::Result<Socket> {
        let Stream { tcp: stream, tls } = stream;
        let _ = stream.set_nodelay(true);
        stream.set_write_timeout(Some(Self::WRITE_TIMEOUT))?;
        stream.set_read_timeout(None)?;
        let tls = tls.map(SharedSession::new);
        let mut reader = stream.try_clone()?;
        let mut writer = stream.try_clone()?;
        let (writer_tx, writer_rx) = mpsc::channel::<ToWriter>();
        let tx = self.tx.clone();
        let writer_tls = tls.clone();
        std::thread::Builder::new()
            .name("wshub-client-w".into())
            .stack_size(STACK)
            .spawn(move || {
                for write in writer_rx {
                    let bytes = match (&writer_tls, write) {
                        (None, ToWriter::Bytes(bytes)) => Ok(Some(bytes)),
                        (None, ToWriter::Flush) => Ok(None),
                        (Some(s), ToWriter::Bytes(plain)) => s.encrypt(Some(&plain)),
                        (Some(s), ToWriter::Flush) => s.encrypt(None),
                    };
                    let written = match bytes {
                        Ok(Some(bytes)) => writer.write_all(&bytes),
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    };
                    if written.is_err() {
                        let _ = tx.send(Cmd::Socket(g, SocketInput::IoError));
                        break;
                    }
                }
                if let Some(out) = writer_tls.as_ref().and_then(SharedSession::close) {
                    let _ = writer.write_all(&out);
                }
                let _ = writer.shutdown(Shutdown::Both);
            })?;
        let tx = self.tx.clone();
        let flush = writer_tx.clone();
        std::thread::Builder::new()
            .name("wshub-client-r".into())
            .stack_size(STACK)
            .spawn(move || {
                let mut buf = vec![0u8; Self::READ_BUFFER];
                loop {
                    let Some(read) = SocketInput::from_read(reader.read(&mut buf), &buf) else {
                        continue; // interrupted
                    };
                    let inputs = match (&tls, read) {
                        (Some(s), SocketInput::Read(bytes)) => decrypted(s.read(&bytes), &flush),
                        (Some(s), SocketInput::Eof) => decrypted(s.read(&[]), &flush),
                        (_, read) => vec![read],
                    };
                    for read in inputs {
                        let last = read.is_last();
                        if tx.send(Cmd::Socket(g, read)).is_err() || last {
                            return;
                        }
                    }
                }
            })?;
        Ok(Socket {
            writer: writer_tx,
            stream,
        })
    }

    fn transmit(&mut self, socket: &Socket, bytes: Vec<u8>) {
        let _ = socket.writer.send(ToWriter::Bytes(bytes));
    }

    fn close(&mut self, _connect: Option<()>, socket: Option<Socket>) {
        if let Some(s) = socket {
            // The writer writes what it holds (a close frame), then shuts
            // both directions, which also ends the reader.
            drop(s.writer);
            let _ = s.stream.set_read_timeout(Some(Duration::from_secs(1)));
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
    writer: &Sender<ToWriter>,
) -> Vec<SocketInput> {
    if flush {
        let _ = writer.send(ToWriter::Flush);
    }
    inputs
}

/// Resolves the endpoint, tries each address in turn, and on a `wss://`
/// endpoint runs the TLS handshake (bounded by `timeout` per read and write;
/// the core's connect timeout bounds the whole).
fn connect(endpoint: &Endpoint, timeout: Duration, tls: Option<&Connector>) -> io::Result<Stream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
    for addr in (endpoint.host.as_str(), endpoint.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => return handshake(endpoint, tcp, timeout, tls),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn handshake(
    endpoint: &Endpoint,
    mut tcp: TcpStream,
    timeout: Duration,
    tls: Option<&Connector>,
) -> io::Result<Stream> {
    let (true, Some(connector)) = (endpoint.tls, tls) else {
        return Ok(Stream { tcp, tls: None });
    };
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut session = Session::new(connector, &endpoint.host)?;
    session.handshake_blocking(&mut tcp)?;
    Ok(Stream {
        tcp,
        tls: Some(session),
    })
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
