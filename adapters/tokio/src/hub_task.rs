//! The hub task: owns the core, sleeps until a command or the core's next
//! deadline, and writes the core's output to the sockets itself.

use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use wshub_core::broker::BrokerLink;
use wshub_core::command::{Command, Reply};
use wshub_core::overflow::EventOverflow;
use wshub_core::{ConnId, ConnMap, Event, Hub, HubConfig, Output, PeerInfo};

use crate::conn::{self, ConnIo};
use crate::handle::Handle;
use crate::DeferredAuth;
use wshub_core::write_queue::Flushed;

/// Everything the hub task is told.
pub(crate) enum Cmd {
    /// A stream, its peer, and what the application already read of it.
    Open(TcpStream, Option<SocketAddr>, Vec<u8>),
    Read(ConnId, Vec<u8>),
    /// A socket that was full can take more.
    Writable(ConnId),
    Eof(ConnId),
    IoError(ConnId),
    /// An application command, and where its reply goes if anyone waits.
    Hub(Command, Option<oneshot::Sender<Reply>>),
    /// Graceful shutdown, cut short at the deadline.
    Shutdown(Instant, oneshot::Sender<bool>),
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

/// Commands in flight before readers wait: bounds memory under a flood, and
/// a flooding peer waits in TCP instead.
const COMMAND_QUEUE: usize = 4096;

/// The clock fed to the core: tokio's, so `tokio::time::pause` applies.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) struct Started {
    pub handle: Handle,
    pub task: JoinHandle<()>,
    /// Turns true when shutdown starts; its sender drops when the hub ends.
    pub stopping: watch::Receiver<bool>,
}

/// Starts the hub task on the current runtime.
pub(crate) fn spawn(
    config: HubConfig,
    events: mpsc::Sender<Event>,
    parts: Parts,
) -> io::Result<Started> {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let hub = Hub::new(config, now(), unix)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| io::Error::other(format!("wshub-tokio must start inside a runtime: {e}")))?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (stopping_tx, stopping) = watch::channel(false);
    let state = HubTask {
        hub,
        conns: ConnMap::new(),
        events,
        overflow: EventOverflow::default(),
        deferred: parts.deferred,
        broker: parts.broker,
        read_buffer: parts.read_buffer,
        tx: tx.clone(),
        stopping: stopping_tx,
        shutdown_deadline: None,
        shutdown_waiters: Vec::new(),
        done: false,
        frames: Vec::new(),
    };
    let task = runtime.spawn(state.run(rx));
    Ok(Started {
        handle: Handle { tx },
        task,
        stopping,
    })
}

/// What the builder hands the hub task besides the config.
pub(crate) struct Parts {
    pub deferred: Option<DeferredAuth>,
    pub broker: Option<Box<dyn BrokerLink>>,
    pub read_buffer: usize,
}

struct HubTask {
    hub: Hub,
    conns: ConnMap<ConnIo>,
    /// Bounded: an application that does not read costs dropped events
    /// (counted, then reported), never a stalled hub or unbounded memory.
    events: mpsc::Sender<Event>,
    overflow: EventOverflow,
    deferred: Option<DeferredAuth>,
    /// Where broker outputs go (with `HubConfig::broker`).
    broker: Option<Box<dyn BrokerLink>>,
    read_buffer: usize,
    tx: mpsc::Sender<Cmd>,
    stopping: watch::Sender<bool>,
    shutdown_deadline: Option<Instant>,
    shutdown_waiters: Vec<oneshot::Sender<bool>>,
    /// Shutdown completed: stop after this round.
    done: bool,
    frames: Vec<Bytes>,
}

impl HubTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        // One timer, moved to each new deadline rather than re-created.
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let limit = self.hub.commands_per_round();
        let mut batch = Vec::with_capacity(limit);
        loop {
            let deadline = match (self.hub.poll_timeout(), self.shutdown_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Commands left over from the last round go first, without waiting.
            let closed = if !batch.is_empty() {
                false
            } else {
                match deadline {
                    Some(at) => {
                        let at = tokio::time::Instant::from_std(at);
                        if sleep.deadline() != at {
                            sleep.as_mut().reset(at);
                        }
                        tokio::select! {
                            biased;
                            n = rx.recv_many(&mut batch, limit) => n == 0,
                            () = &mut sleep => false,
                        }
                    }
                    None => rx.recv_many(&mut batch, limit).await == 0,
                }
            };
            if closed {
                break; // cannot happen while this task holds a sender; be safe
            }
            let mut taken = 0;
            while !batch.is_empty() {
                // Up to the round's weight (a broker batch counts each of its
                // inputs); what is left waits for the next round.
                let mut take = 0;
                while take < batch.len() && taken < limit {
                    taken += batch[take].weight();
                    take += 1;
                }
                let mut answered = false;
                for cmd in batch.drain(..take) {
                    answered |= self.apply(cmd);
                }
                if taken >= limit {
                    break;
                }
                if answered {
                    // A publisher we just answered may have its next message
                    // ready: let it run once, so consecutive publishes share
                    // the writes below instead of costing one each.
                    tokio::task::yield_now().await;
                }
                while taken + batch.len() < limit {
                    match rx.try_recv() {
                        Ok(cmd) => batch.push(cmd),
                        Err(_) => break,
                    }
                }
            }
            self.drain();
            // Timers are checked after every batch, so a busy command channel
            // (the select above prefers it) never starves them.
            let now = now();
            if self.shutdown_deadline.is_some_and(|d| now >= d) {
                break;
            }
            self.hub.handle_timeout(now);
            self.drain();
            if self.done {
                break;
            }
        }
        self.cut_all();
    }

    /// Applies one command; true when it answered a caller who may have more
    /// to send.
    fn apply(&mut self, cmd: Cmd) -> bool {
        let now = now();
        let hub = &mut self.hub;
        // `Err(UsageError)` here means a stale id (the connection closed while
        // the command was in flight) or a command its state does not allow:
        // nothing to do either way.
        match cmd {
            Cmd::Open(stream, peer, read) => self.open(now, stream, peer, &read),
            Cmd::Read(id, data) => {
                let _ = hub.handle_read(now, id, &data);
            }
            Cmd::Writable(id) => {
                if let Some(c) = self.conns.get_mut(id) {
                    c.unblock();
                }
                self.flush(now, id);
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
                    return false;
                };
                // A publish through a broker is answered when the broker is.
                hub.apply_then(
                    now,
                    command,
                    Box::new(move |answer| drop(reply.send(answer))),
                );
                return true;
            }
            Cmd::Shutdown(deadline, reply) => {
                self.stopping.send_replace(true);
                hub.shutdown(now);
                self.shutdown_waiters.push(reply);
                let d = self.shutdown_deadline.map_or(deadline, |d| d.min(deadline));
                self.shutdown_deadline = Some(d);
            }
        }
        false
    }

    fn open(&mut self, now: Instant, stream: TcpStream, peer: Option<SocketAddr>, read: &[u8]) {
        let Ok(id) = self.hub.open(now, PeerInfo { addr: peer }) else {
            return; // shutting down: dropping the stream closes it
        };
        let tasks = conn::spawn(id, stream, self.tx.clone(), self.read_buffer);
        self.conns.insert(id, tasks);
        // Before any Read from the socket: this command is applied first.
        if !read.is_empty() {
            let _ = self.hub.handle_read(now, id, read);
        }
    }

    /// Routes events and output until the core has nothing more.
    fn drain(&mut self) {
        // One clock read per drain, not one per connection written.
        let now = now();
        while let Some(output) = self.hub.poll_output(&mut self.frames) {
            match output {
                Output::Event(event) => self.on_event(event),
                Output::Broker(output) => {
                    if let Some(link) = &mut self.broker {
                        link.send(output);
                    }
                }
                Output::Transmit(id) => {
                    match self.conns.get_mut(id) {
                        Some(c) => c.queue(&mut self.frames),
                        None => self.frames.clear(), // unreachable: ids are live here
                    }
                    self.flush(now, id);
                }
            }
        }
        // The application may have read since: report what was dropped.
        let events = &self.events;
        self.overflow.flush(|e| events.try_send(e).is_ok());
    }

    /// Writes what connection `id` has pending, unless its socket is full,
    /// and tells the core what went out.
    fn flush(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.blocked() {
            return; // its waiter sends `Writable` when there is room
        }
        let flushed = c.flush(&self.tx);
        if flushed.written() > 0 {
            let _ = self.hub.handle_written(now, id, flushed.written());
        }
        if let Flushed::Failed(_) = flushed {
            let _ = self.hub.handle_io_error(now, id);
        }
    }

    fn on_event(&mut self, event: Event) {
        let event = match event {
            Event::Closed { conn, flushed, .. } => {
                if let Some(c) = self.conns.remove(conn) {
                    // The core knows whether the peer is owed anything.
                    if flushed {
                        c.end();
                    } else {
                        c.cut();
                    }
                }
                event
            }
            Event::AuthPending { conn, request } if self.deferred.is_some() => {
                let f = self.deferred.clone().expect("checked");
                let tx = self.tx.clone();
                let task = tokio::spawn(async move {
                    let decision = f(request).await;
                    let _ = tx
                        .send(Cmd::Hub(Command::Answer(conn, decision), None))
                        .await;
                });
                match self.conns.get_mut(conn) {
                    // Aborted if the connection ends first (handshake timeout).
                    Some(c) => c.auth = Some(task.abort_handle()),
                    None => task.abort(),
                }
                return;
            }
            Event::ShutdownComplete => {
                self.done = true;
                for w in self.shutdown_waiters.drain(..) {
                    let _ = w.send(true);
                }
                event
            }
            other => other,
        };
        // Nobody listening is fine: events are then dropped.
        let events = &self.events;
        self.overflow.offer(event, |e| events.try_send(e).is_ok());
    }

    /// The hub is stopping: cut what is left, answer pending shutdowns.
    fn cut_all(&mut self) {
        for (_, c) in self.conns.drain() {
            c.cut();
        }
        for w in self.shutdown_waiters.drain(..) {
            let _ = w.send(false);
        }
    }
}
