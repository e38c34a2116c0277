//! Driving [`wshub_core::Hub`] from a hand-written, single-threaded readiness
//! loop: no async runtime, no thread per connection, one [`polling::Poller`].
//!
//! Each turn of [`PollingServer::step`] has the shape every sans-IO driver has:
//!
//! 1. **Sleep** until a socket is ready, a [`Handle`] wakes the poller, or the
//!    core's [`Hub::poll_timeout`] deadline passes (none = block).
//! 2. **Mutate**: accept sockets ([`Hub::open`]), feed what they sent
//!    ([`Hub::handle_read`], [`Hub::handle_eof`]), write what was waiting for
//!    writability ([`Hub::handle_written`]), apply application [`Command`]s,
//!    then [`Hub::handle_timeout`].
//! 3. **Drain** until the core has nothing more: [`Hub::poll_event`] (on
//!    `Closed`, deregister and drop the socket) and [`Hub::poll_transmit`]
//!    (write the shared frames with `write_vectored`; what the socket refuses
//!    stays queued on the connection and the socket is armed for writability).
//!
//! An application with its own event loop publishes in one of two ways:
//! from the loop's own thread, through [`PollingServer::hub_mut`] between
//! steps (the next step drains at once, because `poll_timeout` reports the
//! queued output); or from any other thread, through a [`Handle`]: the
//! command goes down a `std::sync::mpsc` channel and [`Poller::notify`] wakes
//! the loop, which takes the channel's commands every turn.
//!
//! ```no_run
//! use std::time::Duration;
//! use wshub_core::{HubCommands, HubConfig, Message};
//! use wshub_example_polling::PollingServer;
//!
//! let mut server = PollingServer::bind("127.0.0.1:8081", HubConfig::default())?;
//! let handle = server.handle();
//! std::thread::spawn(move || loop {
//!     std::thread::sleep(Duration::from_secs(1));
//!     let tick = Message::new("tick", Default::default());
//!     if handle.publish("ticks", tick).is_err() {
//!         return; // the loop is gone
//!     }
//! });
//! server.run()?; // until a Command::Stop or a completed shutdown
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The only `unsafe` in this crate is the call to [`Poller::add`] (in
//! `register`): `polling` requires that a source be deleted from the poller
//! before it is dropped. Every registered socket is owned by the server and
//! leaves through one function, `deregister`, which deletes it first; `Drop`
//! for the server deregisters whatever is left.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use polling::{Event as Interest, Events, Poller};
use wshub_core::command::{Command as HubCommand, Reply};
use wshub_core::{ConnId, ConnMap, Event, Hub, HubConfig, Output, PeerInfo, Stats};

pub use polling;
pub use wshub_core;
pub use wshub_core::command::{HubCommands, Stopped};

/// Poller key of the listener; connection keys are `slot + 1`.
const LISTENER: usize = 0;
/// The one read buffer, shared by every connection.
const READ_BUFFER: usize = 16 * 1024;
/// Reads per socket per turn (then the socket is re-armed, and fires again at
/// once if data is left), so one fast sender cannot starve the rest.
const READS_PER_TURN: usize = 16;
/// Accepts per turn, for the same reason.
const ACCEPTS_PER_TURN: usize = 256;
/// Commands taken per turn before I/O gets its turn again.
const COMMANDS_PER_TURN: usize = 1024;
/// Most slices handed to one `writev`.
const MAX_SLICES: usize = 64;

/// What the application asks of the loop through a [`Handle`].
pub enum Command {
    /// A hub command (publish, close, stats...: the [`HubCommands`] methods)
    /// and where its reply goes, if anyone waits.
    Hub(HubCommand, Option<Sender<Reply>>),
    /// Report the hub's and the loop's counters.
    Stats(Sender<LoopStats>),
    /// Graceful shutdown: every client gets a 1001 close; the loop stops once
    /// all are closed.
    Shutdown,
    /// Stop the loop now (sockets are dropped without a close handshake).
    Stop,
}

/// The hub's counters plus the loop's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopStats {
    /// The core's [`Hub::stats`].
    pub hub: Stats,
    /// Sockets the loop holds (handshaking, open and closing).
    pub sockets: usize,
    /// Writes the kernel refused with `WouldBlock` (each one armed the socket
    /// for writability).
    pub blocked_writes: u64,
}

/// Commands the loop from any thread: each call queues a [`Command`] and wakes
/// the poller. Cheap to clone. The hub's commands are the [`HubCommands`]
/// methods.
///
/// Those that return a value, and [`Handle::loop_stats`], block until the
/// loop answers: never call them on the loop's own thread (use
/// [`PollingServer::hub_mut`] there).
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Command>,
    poller: Arc<Poller>,
}

impl HubCommands for Handle {
    fn command(&self, command: HubCommand) -> Result<Reply, Stopped> {
        let (reply, answer) = mpsc::channel();
        self.submit(Command::Hub(command, Some(reply)))?;
        answer.recv().map_err(|_| Stopped)
    }

    fn tell(&self, command: HubCommand) -> Result<(), Stopped> {
        self.submit(Command::Hub(command, None))
    }
}

impl Handle {
    /// Queues a command and wakes the loop.
    pub fn submit(&self, command: Command) -> Result<(), Stopped> {
        self.tx.send(command).map_err(|_| Stopped)?;
        self.wake();
        Ok(())
    }

    /// The hub's and the loop's counters.
    pub fn loop_stats(&self) -> Result<LoopStats, Stopped> {
        let (reply, answer) = mpsc::channel();
        self.submit(Command::Stats(reply))?;
        answer.recv().map_err(|_| Stopped)
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&self) -> Result<(), Stopped> {
        self.submit(Command::Shutdown)
    }

    /// Stops the loop at its next turn.
    pub fn stop(&self) -> Result<(), Stopped> {
        self.submit(Command::Stop)
    }

    /// Wakes the loop without a command (after setting the flag given to
    /// [`PollingServer::run_until`], say).
    pub fn wake(&self) {
        // Fails only if the OS cannot signal the poller; the loop then wakes at
        // its next deadline or readiness anyway.
        let _ = self.poller.notify();
    }
}

/// A hook that sees every hub event on the loop's thread, with the hub at
/// hand to react (subscribe a new connection, answer a deferred auth...).
pub type EventHook = Box<dyn FnMut(&mut Hub, Instant, &Event) + Send>;

/// One accepted socket.
struct Socket {
    /// The hub's connection (the table is indexed by its slot).
    id: ConnId,
    stream: TcpStream,
    /// Frames leased by `poll_transmit`, not yet fully written.
    pending: VecDeque<Bytes>,
    /// Bytes of the front pending frame already written.
    offset: usize,
    /// The interest registered with the poller: `Some(writable_too)`, or
    /// `None` once its oneshot event fired and it must be re-armed.
    armed: Option<bool>,
}

/// A WebSocket pub/sub server on one thread and one [`Poller`].
pub struct PollingServer {
    hub: Hub,
    poller: Arc<Poller>,
    /// Always `Some` until `Drop` takes it.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// By connection; poller keys are slots, hence `get_slot_mut`.
    sockets: ConnMap<Socket>,
    open_sockets: usize,
    events: Events,
    /// Connection slots that fired this turn (reused).
    fired: Vec<(usize, bool, bool)>,
    /// Slots whose poller registration may need updating this turn (reused).
    touched: Vec<usize>,
    read_buf: Box<[u8]>,
    frames: Vec<Bytes>,
    commands: Receiver<Command>,
    handle: Handle,
    /// `Stats` commands taken this turn, answered once it is drained.
    stats_waiters: Vec<Sender<LoopStats>>,
    on_event: Option<EventHook>,
    stopped: bool,
    blocked_writes: u64,
}

impl PollingServer {
    /// Binds a listener on `addr` and builds a hub with `config`.
    pub fn bind(addr: impl ToSocketAddrs, config: HubConfig) -> io::Result<PollingServer> {
        Self::with_listener(TcpListener::bind(addr)?, config)
    }

    /// Serves an already bound listener.
    pub fn with_listener(listener: TcpListener, config: HubConfig) -> io::Result<PollingServer> {
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let hub = Hub::new(config, now, unix)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let poller = Arc::new(Poller::new()?);
        register(&poller, &listener, Interest::readable(LISTENER))?;
        let (tx, commands) = mpsc::channel();
        Ok(PollingServer {
            hub,
            handle: Handle {
                tx,
                poller: poller.clone(),
            },
            poller,
            listener: Some(listener),
            local_addr,
            sockets: ConnMap::new(),
            open_sockets: 0,
            events: Events::new(),
            fired: Vec::new(),
            touched: Vec::new(),
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            frames: Vec::new(),
            commands,
            stats_waiters: Vec::new(),
            on_event: None,
            stopped: false,
            blocked_writes: 0,
        })
    }

    /// Calls `hook` with every hub event, on the loop's thread. `Closed`
    /// events reach it after the socket is gone.
    pub fn on_event(&mut self, hook: impl FnMut(&mut Hub, Instant, &Event) + Send + 'static) {
        self.on_event = Some(Box::new(hook));
    }

    /// A handle to command the loop from other threads.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The hub, for queries.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The hub, to command it from the loop's own thread between steps
    /// (publish, close...). The next [`step`](Self::step) writes the output
    /// without sleeping.
    pub fn hub_mut(&mut self) -> &mut Hub {
        &mut self.hub
    }

    /// Whether a [`Command::Stop`] arrived or a graceful shutdown completed.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The loop's own counters alongside the hub's.
    pub fn stats(&self) -> LoopStats {
        LoopStats {
            hub: self.hub.stats(),
            sockets: self.open_sockets,
            blocked_writes: self.blocked_writes,
        }
    }

    /// Runs until [`Command::Stop`] or a completed graceful shutdown.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.stopped {
            self.step(None)?;
        }
        Ok(())
    }

    /// Runs until `stop` is set (then call [`Handle::wake`] so a sleeping loop
    /// notices), a [`Command::Stop`] arrives or a graceful shutdown completes.
    pub fn run_until(&mut self, stop: &AtomicBool) -> io::Result<()> {
        while !self.stopped && !stop.load(Ordering::Acquire) {
            self.step(None)?;
        }
        Ok(())
    }

    /// One turn: sleep (at most `max_wait`, and never past the core's next
    /// deadline), feed what happened to the core, drain what it wants done.
    pub fn step(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        // 1. Sleep until readiness, a wake-up or the core's deadline.
        let now = Instant::now();
        let until_deadline = self
            .hub
            .poll_timeout()
            .map(|at| at.saturating_duration_since(now));
        let wait = match (until_deadline, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.events.clear();
        self.poller.wait(&mut self.events, wait)?;

        // 2. Mutate: everything that happened, at one `now`.
        let now = Instant::now();
        let mut accept = false;
        self.fired.clear();
        for ev in self.events.iter() {
            match ev.key {
                LISTENER => accept = true,
                key => self.fired.push((key - 1, ev.readable, ev.writable)),
            }
        }
        // Accept first, so a slot freed by a read below is not reused before
        // its `Closed` is drained (`open` copes anyway).
        if accept {
            self.accept(now)?;
        }
        for i in 0..self.fired.len() {
            let (slot, readable, writable) = self.fired[i];
            let Some(sock) = self.socket_at(slot) else {
                continue; // closed earlier this turn
            };
            sock.armed = None; // oneshot: the event disarmed it
            self.touched.push(slot);
            if writable {
                self.flush(now, slot);
            }
            if readable {
                self.read(now, slot);
            }
        }
        self.apply_commands(now);
        self.hub.handle_timeout(now);

        // 3. Drain events and output until the core has nothing more.
        self.drain(now);
        self.rearm(now);
        if !self.stats_waiters.is_empty() {
            let stats = self.stats();
            for reply in self.stats_waiters.drain(..) {
                let _ = reply.send(stats);
            }
        }
        Ok(())
    }

    fn socket_at(&mut self, slot: usize) -> Option<&mut Socket> {
        self.sockets.get_slot_mut(slot).map(|(_, sock)| sock)
    }

    fn accept(&mut self, now: Instant) -> io::Result<()> {
        // Taken out for the loop, since `open` borrows `self` mutably.
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        for _ in 0..ACCEPTS_PER_TURN {
            match listener.accept() {
                Ok((stream, peer)) => self.open(now, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Aborted connections, out of descriptors: try again next turn.
                // (Re-armed, a persistent error fires again at once; a
                // production loop would back off before accepting again.)
                Err(_) => break,
            }
        }
        let rearmed = self.poller.modify(&listener, Interest::readable(LISTENER));
        self.listener = Some(listener);
        rearmed
    }

    fn open(&mut self, now: Instant, stream: TcpStream, peer: SocketAddr) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let Ok(id) = self.hub.open(now, PeerInfo { addr: Some(peer) }) else {
            return; // shutting down: dropping the stream closes it
        };
        let slot = id.slot();
        // The core frees a slot when the connection ends, before its `Closed`
        // is drained: a socket still here belongs to a connection the core
        // has already forgotten.
        if let Some((stale, _)) = self.sockets.get_slot_mut(slot) {
            if let Some(sock) = self.sockets.remove(stale) {
                self.deregister(sock);
            }
        }
        if register(&self.poller, &stream, Interest::readable(slot + 1)).is_err() {
            // Never registered, so dropping it is fine; the core emits `Closed`.
            let _ = self.hub.handle_io_error(now, id);
            return;
        }
        self.open_sockets += 1;
        self.sockets.insert(
            id,
            Socket {
                id,
                stream,
                pending: VecDeque::new(),
                offset: 0,
                armed: Some(false),
            },
        );
    }

    /// Reads until `WouldBlock` (or the per-turn cap) into the shared buffer.
    fn read(&mut self, now: Instant, slot: usize) {
        for _ in 0..READS_PER_TURN {
            let Some(sock) = self.sockets.get_slot_mut(slot).map(|(_, s)| s) else {
                return;
            };
            let id = sock.id;
            match sock.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    let _ = self.hub.handle_eof(now, id);
                    return;
                }
                Ok(n) => {
                    // Err: the core already ended it (its `Closed` is queued).
                    if self.hub.handle_read(now, id, &self.read_buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = self.hub.handle_io_error(now, id);
                    return;
                }
            }
        }
    }

    /// Writes the socket's pending frames until done or `WouldBlock`.
    fn flush(&mut self, now: Instant, slot: usize) {
        let Some(sock) = self.sockets.get_slot_mut(slot).map(|(_, s)| s) else {
            return;
        };
        while !sock.pending.is_empty() {
            let result = {
                // Straight from the core's shared frames: no copy, no allocation.
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (i, frame) in sock.pending.iter().take(MAX_SLICES).enumerate() {
                    let from = if i == 0 { sock.offset } else { 0 };
                    slices[i] = IoSlice::new(&frame[from..]);
                    count += 1;
                }
                (&sock.stream).write_vectored(&slices[..count])
            };
            match result {
                Ok(n) if n > 0 => {
                    advance(&mut sock.pending, &mut sock.offset, n);
                    // Err: the connection ended meanwhile (a stall timeout).
                    let _ = self.hub.handle_written(now, sock.id, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // `rearm` adds writable interest at the end of the turn.
                    self.blocked_writes += 1;
                    self.touched.push(slot);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(_) | Err(_) => {
                    sock.pending.clear();
                    sock.offset = 0;
                    let _ = self.hub.handle_io_error(now, sock.id);
                    return;
                }
            }
        }
    }

    fn apply_commands(&mut self, now: Instant) {
        for _ in 0..COMMANDS_PER_TURN {
            let Ok(command) = self.commands.try_recv() else {
                return;
            };
            match command {
                Command::Hub(command, reply) => {
                    let answer = self.hub.apply(now, command);
                    if let Some(reply) = reply {
                        let _ = reply.send(answer);
                    }
                }
                // Answered at the end of the turn: the core's counters change
                // as soon as a connection ends, the socket table only when its
                // `Closed` is drained.
                Command::Stats(reply) => self.stats_waiters.push(reply),
                Command::Shutdown => self.hub.shutdown(now),
                Command::Stop => self.stopped = true,
            }
        }
        // More are queued: make sure the next wait does not sleep on them.
        self.handle.wake();
    }

    /// Routes events and output until the core has nothing more.
    fn drain(&mut self, now: Instant) {
        while let Some(output) = self.hub.poll_output(&mut self.frames) {
            let id = match output {
                // This example runs one node: no broker, no broker output.
                Output::Broker(_) => continue,
                Output::Event(event) => {
                    match &event {
                        Event::Closed { conn, .. } => {
                            if let Some(sock) = self.sockets.remove(*conn) {
                                self.deregister(sock);
                            }
                        }
                        Event::ShutdownComplete => self.stopped = true,
                        _ => {}
                    }
                    if let Some(hook) = self.on_event.as_mut() {
                        hook(&mut self.hub, now, &event);
                    }
                    continue;
                }
                Output::Transmit(id) => id,
            };
            let Some(sock) = self.sockets.get_mut(id) else {
                self.frames.clear();
                continue;
            };
            let idle = sock.pending.is_empty();
            sock.pending.extend(self.frames.drain(..));
            // A socket with older frames pending is waiting for
            // writability: trying now would only hit `WouldBlock` again.
            if idle {
                self.flush(now, id.slot());
            }
        }
    }

    /// Restores the poller registration of every socket touched this turn:
    /// readable always, writable while frames are pending.
    fn rearm(&mut self, now: Instant) {
        while let Some(slot) = self.touched.pop() {
            let key = slot + 1;
            let Some(sock) = self.sockets.get_slot_mut(slot).map(|(_, s)| s) else {
                continue;
            };
            let want_write = !sock.pending.is_empty();
            if sock.armed == Some(want_write) {
                continue;
            }
            let interest = if want_write {
                Interest::all(key)
            } else {
                Interest::readable(key)
            };
            match self.poller.modify(&sock.stream, interest) {
                Ok(()) => sock.armed = Some(want_write),
                // Its `Closed` comes out of the next step, which does not
                // sleep: the core has an event waiting.
                Err(_) => {
                    let _ = self.hub.handle_io_error(now, sock.id);
                }
            }
        }
    }

    /// Removes a socket from the poller, then closes it. Every registered
    /// socket leaves through here: this upholds `register`'s invariant.
    fn deregister(&mut self, sock: Socket) {
        self.open_sockets -= 1;
        if self.poller.delete(&sock.stream).is_err() {
            // Not deleted: leak the descriptor rather than drop a source the
            // poller may still refer to.
            std::mem::forget(sock.stream);
            return;
        }
        let _ = sock.stream.shutdown(Shutdown::Write);
    }
}

impl Drop for PollingServer {
    fn drop(&mut self) {
        let sockets: Vec<_> = self.sockets.drain().collect();
        for (_, sock) in sockets {
            self.deregister(sock);
        }
        if let Some(listener) = self.listener.take() {
            if self.poller.delete(&listener).is_err() {
                std::mem::forget(listener); // see `deregister`
            }
        }
    }
}

/// Registers `source` with `poller` in oneshot mode.
///
/// Invariant (the `unsafe` contract of [`Poller::add`]): the source is deleted
/// from the poller before it is dropped. Sockets are owned by the
/// [`PollingServer`] and dropped only in `deregister` (or `Drop`, which calls
/// the same), after [`Poller::delete`]; the listener is deleted in `Drop`.
#[allow(unsafe_code)]
fn register<S>(poller: &Poller, source: &S, interest: Interest) -> io::Result<()>
where
    for<'a> &'a S: polling::AsRawSource,
{
    // SAFETY: see the invariant above.
    unsafe { poller.add(source, interest) }
}

/// Drops `n` written bytes from the front of `pending`.
fn advance(pending: &mut VecDeque<Bytes>, offset: &mut usize, mut n: usize) {
    while n > 0 {
        let Some(front) = pending.front() else {
            return;
        };
        let left = front.len() - *offset;
        if n >= left {
            n -= left;
            *offset = 0;
            pending.pop_front();
        } else {
            *offset += n;
            n = 0;
        }
    }
}
