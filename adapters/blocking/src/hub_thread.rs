//! The hub thread: owns the core, sleeps until a command or the core's next
//! deadline, and writes the core's output to the sockets without blocking.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wshub_core::broker::BrokerLink;
use wshub_core::command::{Command, Reply};
use wshub_core::overflow::EventOverflow;
use wshub_core::{ConnId, ConnMap, Event, Hub, HubConfig, Output, PeerInfo, Rejection};

use crate::conn::{self, ConnIo, Settings};
use crate::handle::Handle;
use crate::DeferredAuth;
use wshub_core::write_queue::Flushed;

/// Everything the hub thread is told.
pub(crate) enum Cmd {
    /// A stream, its peer, and what the application already read of it.
    Open(TcpStream, Option<SocketAddr>, Vec<u8>),
    Read(ConnId, Vec<u8>),
    Written(ConnId, usize),
    Eof(ConnId),
    IoError(ConnId),
    /// An application command, and where its reply goes if anyone waits.
    Hub(Command, Option<SyncSender<Reply>>),
    Shutdown(SyncSender<bool>),
    Stop,
}

impl Cmd {
    /// What it counts for in a round (`Command::weight`).
    fn weight(&self) -> usize {
        match self {
            Cmd::Hub(command, _) => command.weight(),
            _ => 1,
        }
    }
}

/// Commands in flight before readers block: bounds memory under a flood.
const COMMAND_QUEUE: usize = 4096;

pub(crate) fn spawn(
    config: HubConfig,
    events: SyncSender<Event>,
    deferred: Option<DeferredAuth>,
    broker: Option<Box<dyn BrokerLink>>,
    settings: Settings,
) -> io::Result<(Handle, JoinHandle<()>)> {
    let (tx, rx) = mpsc::sync_channel(COMMAND_QUEUE);
    let handle = Handle {
        tx: tx.clone(),
        stopping: Arc::new(AtomicBool::new(false)),
        listen_addr: Arc::new(std::sync::OnceLock::new()),
    };
    let now = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let hub =
        Hub::new(config, now, unix).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut state = HubThread {
        hub,
        conns: ConnMap::new(),
        events,
        overflow: EventOverflow::default(),
        deferred,
        broker,
        settings,
        tx,
        shutdown_waiters: Vec::new(),
        frames: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("wshub-hub".into())
        .spawn(move || state.run(rx))?;
    Ok((handle, thread))
}

struct HubThread {
    hub: Hub,
    conns: ConnMap<ConnIo>,
    /// Bounded: an application that does not read costs dropped events
    /// (counted, then reported), never a stalled hub or unbounded memory.
    events: SyncSender<Event>,
    overflow: EventOverflow,
    deferred: Option<DeferredAuth>,
    /// Where broker outputs go (with `HubConfig::broker`).
    broker: Option<Box<dyn BrokerLink>>,
    settings: Settings,
    tx: SyncSender<Cmd>,
    shutdown_waiters: Vec<SyncSender<bool>>,
    frames: Vec<bytes::Bytes>,
}

impl HubThread {
    fn run(&mut self, rx: mpsc::Receiver<Cmd>) {
        loop {
            let cmd = match self.hub.poll_timeout() {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(cmd) => Some(cmd),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return self.cut_all(),
                    }
                }
                None => match rx.recv() {
                    Ok(cmd) => Some(cmd),
                    Err(_) => return self.cut_all(),
                },
            };
            // A round: every command already queued, up to the limit, then
            // one write per connection with output.
            let mut next = cmd;
            let mut taken = 0;
            let mut answered = false;
            while let Some(cmd) = next.take() {
                taken += cmd.weight();
                match self.apply(cmd) {
                    Some(a) => answered |= a,
                    None => return self.cut_all(),
                }
                if taken >= self.hub.commands_per_round() {
                    break;
                }
                next = rx.try_recv().ok();
                if next.is_none() && std::mem::take(&mut answered) {
                    // A publisher just answered may have its next message
                    // ready: let it run once, so consecutive publishes share
                    // the writes.
                    std::thread::yield_now();
                    next = rx.try_recv().ok();
                }
            }
            self.hub.handle_timeout(Instant::now());
            self.drain();
        }
    }

    /// Applies one command: `None` means stop, `Some(true)` that it answered
    /// a caller who may have more to send.
    fn apply(&mut self, cmd: Cmd) -> Option<bool> {
        let now = Instant::now();
        let hub = &mut self.hub;
        match cmd {
            Cmd::Open(stream, peer, read) => self.open(now, stream, peer, &read),
            Cmd::Read(id, data) => {
                let _ = hub.handle_read(now, id, &data);
            }
            Cmd::Written(id, n) => {
                let _ = hub.handle_written(now, id, n);
            }
            Cmd::Eof(id) => {
                let _ = hub.handle_eof(now, id);
            }
            Cmd::IoError(id) => {
                let _ = hub.handle_io_error(now, id);
            }
            Cmd::Hub(command, reply) => {
                let Some(reply) = reply else {
                    let _ = hub.apply(now, command);
                    return Some(false);
                };
                // A publish through a broker is answered when the broker is.
                hub.apply_then(
                    now,
                    command,
                    Box::new(move |answer| drop(reply.send(answer))),
                );
                return Some(true);
            }
            Cmd::Shutdown(reply) => {
                hub.shutdown(now);
                self.shutdown_waiters.push(reply);
            }
            Cmd::Stop => return None,
        }
        Some(false)
    }

    fn open(&mut self, now: Instant, stream: TcpStream, peer: Option<SocketAddr>, read: &[u8]) {
        let Ok(id) = self.hub.open(now, PeerInfo { addr: peer }) else {
            return; // shutting down: dropping the stream closes it
        };
        match conn::spawn(id, stream, self.tx.clone(), self.settings) {
            Ok(io) => {
                self.conns.insert(id, io);
                // Before any Read from the socket: this command is applied first.
                if !read.is_empty() {
                    let _ = self.hub.handle_read(now, id, read);
                }
            }
            Err(_) => {
                // Out of threads: the connection cannot be served.
                let _ = self.hub.handle_io_error(now, id);
            }
        }
    }

    /// Routes events and output until the core has nothing more.
    fn drain(&mut self) {
        // One clock read per drain, not one per connection written.
        let now = Instant::now();
        while let Some(output) = self.hub.poll_output(&mut self.frames) {
            let id = match output {
                Output::Event(event) => {
                    self.on_event(event);
                    continue;
                }
                Output::Broker(output) => {
                    if let Some(link) = &mut self.broker {
                        link.send(output);
                    }
                    continue;
                }
                Output::Transmit(id) => id,
            };
            let Some(c) = self.conns.get_mut(id) else {
                self.frames.clear(); // unreachable: ids are live here
                continue;
            };
            let flushed = c.send(&mut self.frames, &self.tx);
            if flushed.written() > 0 {
                let _ = self.hub.handle_written(now, id, flushed.written());
            }
            if let Flushed::Failed(_) = flushed {
                let _ = self.hub.handle_io_error(now, id);
            }
        }
        // The application may have read since: report what was dropped.
        let events = &self.events;
        self.overflow.flush(|e| events.try_send(e).is_ok());
    }

    fn on_event(&mut self, event: Event) {
        match &event {
            Event::Closed { conn, flushed, .. } => {
                if let Some(c) = self.conns.remove(*conn) {
                    // The core knows whether the peer is owed anything.
                    if *flushed {
                        c.end();
                    } else {
                        c.cut();
                    }
                }
            }
            Event::AuthPending { conn, request } => {
                if let Some(f) = self.deferred.clone() {
                    let (id, request, tx) = (*conn, request.clone(), self.tx.clone());
                    let spawned = std::thread::Builder::new()
                        .name("wshub-auth".into())
                        .stack_size(self.settings.stack.max(256 * 1024))
                        .spawn(move || {
                            let decision = f(&request);
                            let _ = tx.send(Cmd::Hub(Command::Answer(id, decision), None));
                        });
                    if spawned.is_err() {
                        let _ = self.hub.reject(
                            Instant::now(),
                            *conn,
                            Rejection::unauthorized(wshub_core::AuthFailure::Other(
                                "no worker".into(),
                            )),
                        );
                    }
                    return;
                }
            }
            Event::ShutdownComplete => {
                for w in self.shutdown_waiters.drain(..) {
                    let _ = w.send(true);
                }
            }
            _ => {}
        }
        // Nobody listening is fine: events are then dropped.
        let events = &self.events;
        self.overflow.offer(event, |e| events.try_send(e).is_ok());
    }

    fn cut_all(&mut self) {
        for (_, c) in self.conns.drain() {
            c.cut();
        }
        for w in self.shutdown_waiters.drain(..) {
            let _ = w.send(false);
        }
    }
}
