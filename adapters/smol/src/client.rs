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
//! Plain `ws://` only: an endpoint with `tls: true` (`wss://`) is refused by
//! [`spawn`] with an `InvalidInput` error (terminate TLS in front of the hub,
//! or drive the core client with a TLS stream of your own).

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

/// What the driver task is told: application commands and connect outcomes
/// on one channel, socket input on another (bounded: see [`Plumbing::INPUT_QUEUE`]).
type Cmd = DriverInput<Reply, TcpStream>;

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
/// Fails on an invalid config, a `wss://` endpoint (TLS is not supported by
/// this driver), or when the operating system has no random source for the
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
        let client = (self.setup).start_plain_io("wshub-smol", Instant::now(), os_seed)?;
        let (tx, rx) = channel::unbounded();
        let (input_tx, input_rx) = channel::bounded(Tasks::INPUT_QUEUE);
        let (event_tx, events) = channel::unbounded();
        let tasks = Tasks {
            events: event_tx,
            tx: tx.clone(),
            input: input_tx,
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
    writer: Sender<Vec<u8>>,
    /// Dropping it cancels the reader.
    _reader: Task<()>,
}

/// The driver task's plumbing: its ways out to the application and back to
/// itself, for the tasks it starts.
struct Tasks {
    events: Sender<ClientEvent>,
    /// For connect tasks.
    tx: Sender<Cmd>,
    /// For reader and writer tasks.
    input: Sender<Cmd>,
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
    type Stream = TcpStream;
    type Socket = Socket;

    fn connect(&mut self, g: Generation, endpoint: Endpoint) -> Option<Task<()>> {
        let tx = self.tx.clone();
        Some(smol::spawn(async move {
            let result = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await;
            let _ = tx.try_send(Cmd::Connected(g, result));
        }))
    }

    /// Starts the reader and writer tasks of a connected stream.
    fn open(&mut self, g: Generation, stream: TcpStream) -> io::Result<Socket> {
        let _ = stream.set_nodelay(true);
        let mut rd = stream.clone();
        let mut wr = stream;
        let (writer_tx, writer_rx) = channel::unbounded::<Vec<u8>>();
        let input = self.input.clone();
        smol::spawn(async move {
            while let Ok(bytes) = writer_rx.recv().await {
                let written = future::or(async { wr.write_all(&bytes).await.is_ok() }, async {
                    Timer::after(Self::WRITE_TIMEOUT).await;
                    false
                })
                .await;
                if !written {
                    let _ = input.send(Cmd::Socket(g, SocketInput::IoError)).await;
                    break;
                }
            }
            let _ = wr.shutdown(Shutdown::Both);
        })
        .detach();
        let input = self.input.clone();
        let reader = smol::spawn(async move {
            let mut buf = vec![0u8; Self::READ_BUFFER];
            loop {
                let Some(read) = SocketInput::from_read(rd.read(&mut buf).await, &buf) else {
                    continue; // interrupted
                };
                let last = read.is_last();
                if input.send(Cmd::Socket(g, read)).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Socket {
            writer: writer_tx,
            _reader: reader,
        })
    }

    fn transmit(&mut self, socket: &Socket, bytes: Vec<u8>) {
        let _ = socket.writer.try_send(bytes);
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
