//! What every driver of a [`Client`] does the same way, whatever its runtime.
//!
//! A driver owns the client on one task or thread and carries four kinds of
//! values to it: application commands ([`Command`], with the send's reply
//! handle riding along), connect outcomes and socket input (numbered by
//! [`Generation`] through a [`Link`], so that nothing late about a dropped
//! socket reaches the client), and time. It carries two kinds back:
//! [`Output::Transmit`] bytes for the socket and [`Output::Event`]s. What is
//! left to the driver is its runtime's idiom: channels, spawning, reading,
//! writing and sleeping.
//!
//! [`DriverCore`] does that carrying for a driver: the driver implements
//! [`Plumbing`] (start a connect, start a socket's reader and writer, hand
//! bytes to the writer, close, deliver an event), waits for the next
//! command, input or deadline, and passes what woke it to the core. The
//! example below does by hand what [`DriverCore`] does, with [`Link`]. The
//! application's side (the handle's and builder's methods) is written once
//! too, in [`client_command_methods!`](crate::client_command_methods) and
//! [`client_builder_methods!`](crate::client_builder_methods).
//!
//! ```
//! use std::time::Instant;
//! use wshub_core::client::{
//!     ClientConfig, ClientEvent, ClientSetup, Command, Endpoint, Link, Output, SendError,
//!     SocketInput,
//! };
//!
//! let now = Instant::now(); // the driver reads the clock; the core never does
//! let config = ClientConfig::new(vec![Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap()]);
//! let mut client = ClientSetup::new(config)
//!     .subscribe("process:build-1")
//!     .seed(7)
//!     .start_plain("my-driver", now, || unreachable!("seeded"))
//!     .unwrap();
//! // A reply handle (here a plain value; a driver uses its channel's sender).
//! let reply = client.apply(now, Command::Send(serde_json::json!({"hi": 1}), "reply-to"));
//! assert_eq!(reply, Some(("reply-to", Err(SendError::NotConnected))));
//!
//! let mut link: Link<(), Vec<u8>> = Link::new();
//! while let Some(output) = client.poll_output() {
//!     match output {
//!         Output::Event(ClientEvent::Connect { .. }) => {
//!             let g = link.dial(|_| ()); // start connecting; the outcome carries `g`
//!             assert!(link.connected(g).is_some()); // the outcome is for this attempt
//!             link.open(g, Vec::new()); // hold the socket
//!             client.handle_connected(now);
//!         }
//!         Output::Event(ClientEvent::CloseSocket) => drop(link.close()),
//!         Output::Event(other) => println!("{other:?}"),
//!         Output::Transmit(bytes) => link.socket_mut().unwrap().extend(bytes),
//!     }
//! }
//! assert!(link.socket().unwrap().starts_with(b"GET /ws HTTP/1.1\r\n"));
//! // Input from the live socket reaches the client; from an older one it would not.
//! # let g = link.generation();
//! if link.is_live(g) {
//!     client.handle_socket(now, SocketInput::Eof);
//! }
//! ```

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    Client, ClientConfig, ClientConfigError, ClientEvent, DisconnectReason, SendError, SharedState,
};

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// An application command to a [`Client`], as a value a driver carries from
/// the application's handle to the task or thread that owns the client.
///
/// `R` is whatever the driver answers a send with (its channel's reply
/// sender); [`Client::apply`] hands it back with the send's result.
#[derive(Debug)]
pub enum Command<R = ()> {
    /// [`Client::subscribe`].
    Subscribe(String),
    /// [`Client::unsubscribe`].
    Unsubscribe(String),
    /// [`Client::send`], answered through `R`.
    Send(Value, R),
    /// [`Client::close`].
    Close,
}

impl Client {
    /// Applies an application command. For [`Command::Send`], returns the
    /// reply handle with the send's result for the driver to pass on; `None`
    /// for the others (whether a subscription changed is not reported: the
    /// outcome that matters comes as an event).
    pub fn apply<R>(
        &mut self,
        now: Instant,
        command: Command<R>,
    ) -> Option<(R, Result<(), SendError>)> {
        match command {
            Command::Subscribe(channel) => {
                self.subscribe(now, &channel);
                None
            }
            Command::Unsubscribe(channel) => {
                self.unsubscribe(now, &channel);
                None
            }
            Command::Send(message, reply) => Some((reply, self.send(now, &message))),
            Command::Close => {
                self.close(now);
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Socket input
// ---------------------------------------------------------------------------

/// What a reader saw on the socket: one of the client's socket inputs as a
/// value, for a driver that reads on another task or thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketInput {
    /// Bytes read ([`Client::handle_read`]).
    Read(Vec<u8>),
    /// The server closed the socket ([`Client::handle_eof`]).
    Eof,
    /// Reading or writing failed ([`Client::handle_io_error`]).
    IoError,
}

impl SocketInput {
    /// The input a read's result stands for, given the buffer it read into:
    /// `Ok(0)` is EOF, `Ok(n)` the first `n` bytes, an error an I/O error.
    /// `None` for `Interrupted`: the read should simply be retried.
    pub fn from_read(result: io::Result<usize>, buf: &[u8]) -> Option<SocketInput> {
        match result {
            Ok(0) => Some(SocketInput::Eof),
            Ok(n) => Some(SocketInput::Read(buf.get(..n).unwrap_or(buf).to_vec())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(_) => Some(SocketInput::IoError),
        }
    }

    /// Whether nothing more will be read after this (EOF or an error): the
    /// reader stops once it has reported it.
    pub fn is_last(&self) -> bool {
        !matches!(self, SocketInput::Read(_))
    }
}

impl Client {
    /// Feeds one [`SocketInput`]: the matching `handle_*` input. The driver
    /// passes only input from the live socket ([`Link::is_live`]).
    pub fn handle_socket(&mut self, now: Instant, input: SocketInput) {
        match input {
            SocketInput::Read(bytes) => self.handle_read(now, &bytes),
            SocketInput::Eof => self.handle_eof(now),
            SocketInput::IoError => self.handle_io_error(now),
        }
    }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// The next thing a driver must do: [`Client::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Write these bytes to the current socket, all of them, in order
    /// ([`Client::poll_transmit`]).
    Transmit(Vec<u8>),
    /// Carry out or hand on this event ([`Client::poll_event`]).
    Event(ClientEvent),
}

impl Client {
    /// The next output, bytes before events: [`Client::poll_transmit`], else
    /// [`Client::poll_event`]. A driver that loops on this until `None` after
    /// every input has drained both, and writes a close frame before it sees
    /// the [`ClientEvent::CloseSocket`] that follows it.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        match self.poll_transmit() {
            Some(bytes) => Some(Output::Transmit(bytes)),
            None => self.poll_event().map(Output::Event),
        }
    }
}

// ---------------------------------------------------------------------------
// Connection attempts
// ---------------------------------------------------------------------------

/// The number of one connection attempt. A connect outcome or socket input
/// carries the number of the attempt it belongs to, so that the driver can
/// drop what arrives late about an attempt the client has given up on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(u64);

/// A driver's connection attempt in flight and its socket, each with its
/// [`Generation`].
///
/// The client asks for at most one of either at a time (see the socket
/// contract in the module docs): [`Link::dial`] on
/// [`ClientEvent::Connect`], [`Link::connected`] and [`Link::open`] when the
/// attempt's outcome arrives, [`Link::close`] on
/// [`ClientEvent::CloseSocket`]. `D` is whatever cancels a connect in flight
/// (a task handle, or `()`), `S` whatever the driver keeps of a socket (its
/// writer).
#[derive(Debug)]
pub struct Link<D, S> {
    last: Generation,
    dialing: Option<(Generation, D)>,
    socket: Option<(Generation, S)>,
}

impl<D, S> Default for Link<D, S> {
    fn default() -> Self {
        Link::new()
    }
}

impl<D, S> Link<D, S> {
    /// No attempt yet.
    pub fn new() -> Self {
        Link {
            last: Generation(0),
            dialing: None,
            socket: None,
        }
    }

    /// Starts an attempt: numbers it, has `start` begin connecting (it gets
    /// the number to report the outcome with) and keeps what `start` returns
    /// until [`Link::connected`] or [`Link::close`]. Returns the number.
    pub fn dial(&mut self, start: impl FnOnce(Generation) -> D) -> Generation {
        self.last.0 += 1;
        let g = self.last;
        self.dialing = Some((g, start(g)));
        g
    }

    /// [`Link::dial`] for a start that can fail: `None` (and no attempt in
    /// flight) if `start` returns `None`.
    pub fn try_dial(&mut self, start: impl FnOnce(Generation) -> Option<D>) -> Option<Generation> {
        self.last.0 += 1;
        let g = self.last;
        self.dialing = start(g).map(|d| (g, d));
        self.dialing.as_ref().map(|_| g)
    }

    /// The outcome of attempt `g` arrived. If `g` is the attempt in flight,
    /// it is no longer in flight: returns what [`Link::dial`] kept, and the
    /// driver reports the outcome to the client. `None` if the client
    /// cancelled it meanwhile ([`Link::close`], or a newer attempt): the
    /// outcome is dropped (and with it any socket).
    pub fn connected(&mut self, g: Generation) -> Option<D> {
        match self.dialing.take() {
            Some((d, handle)) if d == g => Some(handle),
            other => {
                self.dialing = other;
                None
            }
        }
    }

    /// Holds the socket of attempt `g` (after [`Link::connected`] returned
    /// `Some`); input numbered `g` is live from now on.
    pub fn open(&mut self, g: Generation, socket: S) {
        self.socket = Some((g, socket));
    }

    /// Whether input numbered `g` comes from the live socket.
    pub fn is_live(&self, g: Generation) -> bool {
        self.socket.as_ref().is_some_and(|(s, _)| *s == g)
    }

    /// The live socket.
    pub fn socket(&self) -> Option<&S> {
        self.socket.as_ref().map(|(_, s)| s)
    }

    /// The live socket, mutably.
    pub fn socket_mut(&mut self) -> Option<&mut S> {
        self.socket.as_mut().map(|(_, s)| s)
    }

    /// The number of the latest attempt (`Generation::default()` before the
    /// first).
    pub fn generation(&self) -> Generation {
        self.last
    }

    /// Ends the attempt in flight and the socket, if any: returns them for
    /// the driver to cancel and close. Nothing numbered before this is live
    /// any more.
    pub fn close(&mut self) -> (Option<D>, Option<S>) {
        (
            self.dialing.take().map(|(_, d)| d),
            self.socket.take().map(|(_, s)| s),
        )
    }
}

// ---------------------------------------------------------------------------
// The driver's loop body
// ---------------------------------------------------------------------------

/// A driver's runtime side: what [`DriverCore`] asks of it while it carries
/// out the client's output. Everything here is plumbing (spawning, channels,
/// sockets); the decisions are the client's.
pub trait Plumbing {
    /// How many already queued inputs the driver takes after the one that
    /// woke it, before it [steps](DriverCore::step): a burst of reads or
    /// sends then goes out in few writes, and a flood cannot hold off the
    /// timers.
    const BURST: usize = 64;

    /// Socket input queued to the driver before readers wait: a server that
    /// floods meets TCP backpressure instead of growing memory.
    const INPUT_QUEUE: usize = 256;

    /// A write that makes no progress for this long fails the connection
    /// (the client then reconnects), so a stalled server cannot pin a
    /// writer.
    const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Read buffer per connection.
    const READ_BUFFER: usize = 8 * 1024;

    /// What a send's answer goes back through (the reply sender of a
    /// [`Command::Send`]).
    type Reply;
    /// What [`Plumbing::connect`] returns to cancel a connect in flight (a
    /// task handle, or `()`).
    type Connect;
    /// A connected stream, as a connect's outcome carries it.
    type Stream;
    /// What the driver keeps of a live socket (its writer).
    type Socket;

    /// Starts connecting to `endpoint`; the outcome comes back as
    /// [`DriverInput::Connected`] numbered `g`. `None` if the attempt could
    /// not even start: it fails at once.
    fn connect(&mut self, g: Generation, endpoint: super::Endpoint) -> Option<Self::Connect>;

    /// The connect of the attempt whose outcome has just arrived: it has
    /// finished, so by default it is simply dropped.
    fn connect_done(&mut self, connect: Self::Connect) {
        drop(connect);
    }

    /// Starts reading and writing the stream of attempt `g`: input goes back
    /// as [`DriverInput::Socket`] numbered `g`. An error fails the attempt.
    fn open(&mut self, g: Generation, stream: Self::Stream) -> io::Result<Self::Socket>;

    /// Hands bytes to the live socket's writer, all of them, in order. A
    /// writer that has gone reports the error itself, as socket input.
    fn transmit(&mut self, socket: &Self::Socket, bytes: Vec<u8>);

    /// Cancels the connect in flight and closes the socket, whichever there
    /// are; the socket's writer first writes what it holds (a close frame).
    fn close(&mut self, connect: Option<Self::Connect>, socket: Option<Self::Socket>);

    /// Hands an event to the application; dropped if nobody listens.
    fn deliver(&mut self, event: ClientEvent);

    /// Answers a send: `reply` is the one its [`Command::Send`] carried.
    fn answer(&mut self, reply: Self::Reply, result: Result<(), SendError>);
}

/// What arrives at a driver's task or thread, as one value: what its
/// channels carry to [`DriverCore::handle`].
///
/// `R` is the driver's reply sender for a send, `T` a connected stream.
/// Connect outcomes and socket input carry the [`Generation`] of their
/// attempt, so that nothing late about a dropped socket reaches the client.
#[derive(Debug)]
pub enum DriverInput<R, T> {
    /// An application command.
    Command(Command<R>),
    /// The outcome of connection attempt `g` ([`Plumbing::connect`]).
    Connected(Generation, io::Result<T>),
    /// What the reader or writer of attempt `g`'s socket saw
    /// ([`Plumbing::open`]).
    Socket(Generation, SocketInput),
}

/// What every driver's task or thread does with its [`Client`] between
/// waits, whatever its runtime: it feeds the client what arrived (commands,
/// connect outcomes, socket input), carries out the output through its
/// [`Plumbing`], keeps the [`Link`] of attempts and socket, and publishes the
/// state to the handles. The driver keeps only its wait: for the next
/// [`DriverInput`] or [`DriverCore::poll_timeout`].
///
/// A driver's loop: [`DriverCore::drain`] once; then, until
/// [`DriverCore::is_closed`], wait, [`DriverCore::handle`] what woke it and
/// up to [`Plumbing::BURST`] more that are already queued, and
/// [`DriverCore::step`].
#[derive(Debug)]
pub struct DriverCore<P: Plumbing> {
    client: Client,
    link: Link<P::Connect, P::Socket>,
    state: SharedState,
    closed: bool,
    plumbing: P,
}

impl<P: Plumbing> DriverCore<P> {
    /// Drives `client` (as [`ClientSetup::start_plain`] returned it: its first
    /// output asks for a connect) through `plumbing`.
    pub fn new(client: Client, plumbing: P) -> Self {
        DriverCore {
            state: SharedState::new(client.state()),
            client,
            link: Link::new(),
            closed: false,
            plumbing,
        }
    }

    /// The state the handles read; the driver publishes to it.
    pub fn shared_state(&self) -> SharedState {
        self.state.clone()
    }

    /// When to wake for [`DriverCore::step`] with nothing else arriving
    /// ([`Client::poll_timeout`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// Whether the client has closed for good ([`ClientEvent::Closed`] has
    /// been delivered): the driver stops.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Feeds the client one thing that arrived ([`Client::apply`],
    /// [`Client::handle_connected`] or [`Client::handle_connect_failed`],
    /// [`Client::handle_socket`]). A send is answered through
    /// [`Plumbing::answer`]. A connect outcome counts only if it is for the
    /// attempt in flight (then its stream is opened with [`Plumbing::open`]
    /// and its connect handed to [`Plumbing::connect_done`]), socket input
    /// only if it is from the live socket; anything else is dropped (and
    /// with it any stream).
    pub fn handle(&mut self, now: Instant, input: DriverInput<P::Reply, P::Stream>) {
        match input {
            DriverInput::Command(command) => {
                if let Some((reply, result)) = self.client.apply(now, command) {
                    self.plumbing.answer(reply, result);
                }
            }
            DriverInput::Connected(g, outcome) => {
                let Some(connect) = self.link.connected(g) else {
                    return;
                };
                self.plumbing.connect_done(connect);
                match outcome.and_then(|stream| self.plumbing.open(g, stream)) {
                    Ok(socket) => {
                        self.link.open(g, socket);
                        self.client.handle_connected(now);
                    }
                    Err(e) => {
                        let reason = match TlsFailure::of(&e) {
                            Some(tls) => DisconnectReason::Tls(tls.0.clone()),
                            None => DisconnectReason::ConnectFailed,
                        };
                        self.client.handle_connect_failed_with(now, reason);
                    }
                }
            }
            DriverInput::Socket(g, input) => {
                if self.link.is_live(g) {
                    self.client.handle_socket(now, input);
                }
            }
        }
    }

    /// Ends a round of input: the client's timers ([`Client::handle_timeout`]),
    /// then its output ([`DriverCore::drain`]).
    pub fn step(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.drain(now);
    }

    /// Carries out the client's output until it has nothing more: bytes to
    /// the live socket, `Connect` and `CloseSocket` through the plumbing,
    /// every other event to the application. The state is published before
    /// each event is handed out, so that an application that sees an event
    /// sees the state that goes with it, and again at the end. `now` is
    /// when a connect that could not start failed.
    pub fn drain(&mut self, now: Instant) {
        while let Some(output) = self.client.poll_output() {
            match output {
                Output::Transmit(bytes) => {
                    if let Some(socket) = self.link.socket() {
                        self.plumbing.transmit(socket, bytes);
                    }
                }
                Output::Event(ClientEvent::Connect { endpoint, .. }) => {
                    let plumbing = &mut self.plumbing;
                    if self
                        .link
                        .try_dial(|g| plumbing.connect(g, endpoint))
                        .is_none()
                    {
                        self.client.handle_connect_failed(now);
                    }
                }
                Output::Event(ClientEvent::CloseSocket) => {
                    let (connect, socket) = self.link.close();
                    self.plumbing.close(connect, socket);
                }
                Output::Event(event) => {
                    self.closed |= event == ClientEvent::Closed;
                    self.state.set(self.client.state());
                    self.plumbing.deliver(event);
                }
            }
        }
        self.state.set(self.client.state());
    }
}

// ---------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------

/// What a driver's builder collects before it starts a client: the config,
/// subscriptions in place before the first connect (so they are confirmed by
/// [`ClientEvent::SubscriptionsRestored`]) and an optional seed.
#[derive(Debug)]
pub struct ClientSetup {
    config: ClientConfig,
    subscriptions: Vec<String>,
    seed: Option<u64>,
}

impl ClientSetup {
    /// A client on `config.endpoints`.
    pub fn new(config: ClientConfig) -> Self {
        ClientSetup {
            config,
            subscriptions: Vec::new(),
            seed: None,
        }
    }

    /// Subscribes before the first connect: the subscription goes out with
    /// the first connection and is reported in its
    /// [`ClientEvent::SubscriptionsRestored`].
    #[must_use]
    pub fn subscribe(mut self, channel: impl Into<String>) -> Self {
        self.subscriptions.push(channel.into());
        self
    }

    /// Seeds the WebSocket keys, masks and backoff jitter (reproducible runs
    /// in tests) instead of the driver's seed from the operating system.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The config in force.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The client, with its subscriptions in place and started
    /// ([`Client::start`]): its first output asks for a connect. The seed is
    /// the one given, else `os_seed()`.
    pub fn start(
        self,
        now: Instant,
        os_seed: impl FnOnce() -> u64,
    ) -> Result<Client, ClientConfigError> {
        let seed = self.seed.unwrap_or_else(os_seed);
        let mut client = Client::new(self.config, now, seed)?;
        for channel in &self.subscriptions {
            client.subscribe(now, channel);
        }
        client.start(now);
        Ok(client)
    }

    /// [`ClientSetup::start`] for a driver (named `driver` in the error) that
    /// speaks plain TCP only: a `wss://` endpoint is refused first.
    pub fn start_plain(
        self,
        driver: &'static str,
        now: Instant,
        os_seed: impl FnOnce() -> u64,
    ) -> Result<Client, StartError> {
        if let Some(endpoint) = self.config.endpoints.iter().position(|e| e.tls) {
            return Err(StartError::TlsUnsupported { endpoint, driver });
        }
        self.start(now, os_seed).map_err(StartError::Config)
    }

    /// [`ClientSetup::start`] with errors as a driver's `spawn` returns them,
    /// for a driver that speaks TLS (`wss://` endpoints are accepted): a
    /// config that cannot work is `InvalidInput`, and a failing `os_seed` is
    /// returned as it is.
    pub fn start_io(
        self,
        now: Instant,
        os_seed: impl FnOnce() -> io::Result<u64>,
    ) -> io::Result<Client> {
        let mut seed_error = None;
        let client = self
            .start(now, || {
                os_seed().unwrap_or_else(|e| {
                    seed_error = Some(e);
                    0
                })
            })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match seed_error {
            Some(e) => Err(e),
            None => Ok(client),
        }
    }

    /// [`ClientSetup::start_plain`] with errors as a driver's `spawn` returns
    /// them: a `wss://` endpoint or a config that cannot work is
    /// `InvalidInput`, and a failing `os_seed` (drawn only when no seed was
    /// given) is returned as it is, not hidden behind a made-up seed.
    pub fn start_plain_io(
        self,
        driver: &'static str,
        now: Instant,
        os_seed: impl FnOnce() -> io::Result<u64>,
    ) -> io::Result<Client> {
        let mut seed_error = None;
        let client = self
            .start_plain(driver, now, || {
                os_seed().unwrap_or_else(|e| {
                    seed_error = Some(e);
                    0
                })
            })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match seed_error {
            Some(e) => Err(e),
            None => Ok(client),
        }
    }
}

/// A connect outcome's error that is a failed TLS handshake (a certificate
/// problem or another TLS error), in the TLS library's words. A driver with
/// TLS wraps it in the `io::Error` of [`DriverInput::Connected`];
/// [`DriverCore`] then reports [`DisconnectReason::Tls`] instead of
/// [`DisconnectReason::ConnectFailed`]. The core itself has no TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFailure(pub String);

impl TlsFailure {
    /// The failure as an `io::Error` (kind `InvalidData`) that carries it.
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The failure an `io::Error` carries, if it is one.
    pub fn of(e: &io::Error) -> Option<&TlsFailure> {
        e.get_ref().and_then(|inner| inner.downcast_ref())
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake failed: {}", self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// Why [`ClientSetup::start_plain`] did not start a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartError {
    /// An endpoint is `wss://` and the driver has no TLS.
    TlsUnsupported {
        /// Index into [`ClientConfig::endpoints`] of the first such endpoint.
        endpoint: usize,
        /// The driver's name, for the message.
        driver: &'static str,
    },
    /// The config cannot work.
    Config(ClientConfigError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::TlsUnsupported { endpoint, driver } => write!(
                f,
                "endpoint {endpoint} is wss://: TLS is not supported by the {driver} client \
                 driver (use ws://, or terminate TLS in front of the hub)"
            ),
            StartError::Config(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientState, Endpoint};

    /// Tests need some instant; only differences between instants matter.
    #[allow(clippy::disallowed_methods)]
    fn anchor() -> Instant {
        Instant::now()
    }

    #[test]
    fn link_numbers_attempts_and_drops_stale_outcomes() {
        let mut link: Link<&str, &str> = Link::new();
        assert_eq!(link.generation(), Generation::default());
        let mut seen = None;
        let g1 = link.dial(|g| {
            seen = Some(g);
            "dial-1"
        });
        assert_eq!(seen, Some(g1));
        assert_eq!(link.generation(), g1);
        // Cancelled before its outcome: the outcome finds nothing.
        assert_eq!(link.close(), (Some("dial-1"), None));
        assert_eq!(link.connected(g1), None);

        let g2 = link.dial(|_| "dial-2");
        assert_ne!(g1, g2);
        // A late outcome of an older attempt leaves the current one in flight.
        assert_eq!(link.connected(g1), None);
        assert_eq!(link.connected(g2), Some("dial-2"));
        // Reported once only.
        assert_eq!(link.connected(g2), None);
        assert!(!link.is_live(g2));
        link.open(g2, "socket-2");
        assert!(link.is_live(g2));
        assert!(!link.is_live(g1));
        assert_eq!(link.socket(), Some(&"socket-2"));
        assert_eq!(link.close(), (None, Some("socket-2")));
        assert!(!link.is_live(g2));
        assert_eq!(link.socket(), None);
        assert_eq!(link.close(), (None, None));
    }

    #[test]
    fn a_newer_attempt_makes_the_old_socket_stale() {
        let mut link: Link<(), u32> = Link::new();
        let g1 = link.dial(|_| ());
        assert!(link.connected(g1).is_some());
        link.open(g1, 1);
        let (_, old) = link.close();
        assert_eq!(old, Some(1));
        let g2 = link.dial(|_| ());
        assert!(link.connected(g2).is_some());
        link.open(g2, 2);
        *link.socket_mut().unwrap() += 10;
        assert!(link.is_live(g2) && !link.is_live(g1));
        assert_eq!(link.socket(), Some(&12));
    }

    #[test]
    fn socket_input_from_read_results() {
        let buf = b"hello";
        assert_eq!(SocketInput::from_read(Ok(0), buf), Some(SocketInput::Eof));
        assert_eq!(
            SocketInput::from_read(Ok(3), buf),
            Some(SocketInput::Read(b"hel".to_vec()))
        );
        let interrupted = io::Error::from(io::ErrorKind::Interrupted);
        assert_eq!(SocketInput::from_read(Err(interrupted), buf), None);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            SocketInput::from_read(Err(reset), buf),
            Some(SocketInput::IoError)
        );
        assert!(!SocketInput::Read(vec![1]).is_last());
        assert!(SocketInput::Eof.is_last());
        assert!(SocketInput::IoError.is_last());
    }

    /// Plumbing that records what it was asked to do; the socket is the
    /// number of its attempt.
    #[derive(Debug, Default)]
    struct Fake {
        cannot_start: bool,
        connects: Vec<Generation>,
        written: Vec<u8>,
        closed: Vec<(Option<Generation>, Option<Generation>)>,
        events: Vec<ClientEvent>,
        answers: Vec<(&'static str, Result<(), SendError>)>,
    }

    impl Plumbing for Fake {
        type Reply = &'static str;
        type Connect = Generation;
        type Stream = ();
        type Socket = Generation;

        fn connect(&mut self, g: Generation, _: Endpoint) -> Option<Generation> {
            self.connects.push(g);
            (!self.cannot_start).then_some(g)
        }
        fn open(&mut self, g: Generation, (): ()) -> io::Result<Generation> {
            Ok(g)
        }
        fn transmit(&mut self, _: &Generation, bytes: Vec<u8>) {
            self.written.extend(bytes);
        }
        fn close(&mut self, connect: Option<Generation>, socket: Option<Generation>) {
            self.closed.push((connect, socket));
        }
        fn deliver(&mut self, event: ClientEvent) {
            self.events.push(event);
        }
        fn answer(&mut self, reply: &'static str, result: Result<(), SendError>) {
            self.answers.push((reply, result));
        }
    }

    fn driven(plumbing: Fake, now: Instant) -> DriverCore<Fake> {
        let ws = Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap();
        let client = ClientSetup::new(ClientConfig::new(vec![ws]))
            .seed(7)
            .start(now, || unreachable!("seeded"))
            .unwrap();
        DriverCore::new(client, plumbing)
    }

    #[test]
    fn driver_core_connects_writes_and_drops_stale_input() {
        let now = anchor();
        let mut core = driven(Fake::default(), now);
        let state = core.shared_state();
        core.drain(now);
        let g = core.link.generation();
        assert_eq!(core.plumbing.connects, [g]);
        assert!(matches!(state.get(), ClientState::Connecting { .. }));
        // An outcome or input of another attempt changes nothing.
        let stale = Generation(g.0 + 1);
        core.handle(now, DriverInput::Connected(stale, Ok(())));
        core.handle(now, DriverInput::Socket(g, SocketInput::Eof)); // not open yet
        core.drain(now);
        assert!(core.plumbing.written.is_empty() && core.plumbing.closed.is_empty());

        core.handle(now, DriverInput::Connected(g, Ok(())));
        assert_eq!(core.link.socket(), Some(&g));
        core.drain(now);
        assert!(core.plumbing.written.starts_with(b"GET /ws HTTP/1.1\r\n"));
        core.handle(now, DriverInput::Socket(stale, SocketInput::Eof));
        core.drain(now);
        assert!(core.plumbing.closed.is_empty());
        // The live socket's EOF: the client drops it (and reports it).
        core.handle(now, DriverInput::Socket(g, SocketInput::Eof));
        core.drain(now);
        assert_eq!(core.plumbing.closed, [(None, Some(g))]);
        assert!(!core.plumbing.events.is_empty());
        assert_eq!(state.get(), core.client.state());

        let hello = serde_json::json!({"hi": 1});
        core.handle(now, DriverInput::Command(Command::Send(hello, "reply-1")));
        assert_eq!(
            core.plumbing.answers,
            [("reply-1", Err(SendError::NotConnected))]
        );
        core.handle(now, DriverInput::Command(Command::Close));
        core.step(now);
        assert!(core.is_closed());
        assert_eq!(core.plumbing.events.last(), Some(&ClientEvent::Closed));
        assert_eq!(state.get(), core.client.state());
    }

    #[test]
    fn a_tls_failure_in_a_connect_error_is_reported_as_such() {
        let now = anchor();
        let mut core = driven(Fake::default(), now);
        core.drain(now);
        let g = core.link.generation();
        let tls = TlsFailure("invalid peer certificate: UnknownIssuer".into());
        let e = tls.clone().into_io();
        assert_eq!(TlsFailure::of(&e), Some(&tls));
        assert_eq!(TlsFailure::of(&io::Error::other("refused")), None);
        core.handle(now, DriverInput::Connected(g, Err(e)));
        core.drain(now);
        let reason = DisconnectReason::Tls("invalid peer certificate: UnknownIssuer".into());
        assert_eq!(
            reason.to_string(),
            "TLS handshake failed: invalid peer certificate: UnknownIssuer"
        );
        assert!(
            core.plumbing.events.contains(&ClientEvent::ConnectFailed {
                endpoint_index: 0,
                reason
            }),
            "{:?}",
            core.plumbing.events
        );
        // Any other connect error stays a plain connect failure.
        core.step(now + Duration::from_secs(60));
        let g = core.link.generation();
        core.handle(
            now,
            DriverInput::Connected(g, Err(io::Error::other("refused"))),
        );
        core.drain(now);
        assert!(matches!(
            core.plumbing.events.last(),
            Some(ClientEvent::ConnectFailed {
                reason: DisconnectReason::ConnectFailed,
                ..
            })
        ));
    }

    #[test]
    fn driver_core_fails_a_connect_that_cannot_start() {
        let now = anchor();
        let fake = Fake {
            cannot_start: true,
            ..Fake::default()
        };
        let mut core = driven(fake, now);
        core.drain(now);
        let g = core.link.generation();
        assert_eq!(core.plumbing.connects, [g]);
        // Nothing in flight: the client heard of the failure at once.
        assert_eq!(core.link.connected(g), None);
        assert!(
            core.plumbing
                .events
                .iter()
                .any(|e| matches!(e, ClientEvent::ConnectFailed { .. })),
            "{:?}",
            core.plumbing.events
        );
        assert!(!matches!(
            core.shared_state().get(),
            ClientState::Connecting { .. }
        ));
    }

    #[test]
    fn start_plain_io_returns_the_seed_error_and_refuses_tls() {
        let ws = Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap();
        let wss = Endpoint::parse("wss://127.0.0.1:8443/ws").unwrap();
        let now = anchor();
        let no_seed = || Err(io::Error::other("no random source"));
        let e = ClientSetup::new(ClientConfig::new(vec![ws.clone()]))
            .start_plain_io("my-driver", now, no_seed)
            .unwrap_err();
        assert_eq!(e.to_string(), "no random source");
        // A given seed is used: the OS source is not asked.
        let seeded = ClientSetup::new(ClientConfig::new(vec![ws]))
            .seed(7)
            .start_plain_io("my-driver", now, no_seed);
        assert!(seeded.is_ok());
        let e = ClientSetup::new(ClientConfig::new(vec![wss]))
            .start_plain_io("my-driver", now, || Ok(1))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("my-driver"), "{e}");
    }

    #[test]
    fn tls_refusal_names_the_endpoint_and_driver() {
        let e = StartError::TlsUnsupported {
            endpoint: 1,
            driver: "my-driver",
        };
        assert_eq!(
            e.to_string(),
            "endpoint 1 is wss://: TLS is not supported by the my-driver client driver \
             (use ws://, or terminate TLS in front of the hub)"
        );
        let e = StartError::Config(ClientConfigError {
            field: "endpoints",
            problem: "is empty",
        });
        assert_eq!(e.to_string(), "invalid client config: endpoints is empty");
    }
}
