//! The hub task: owns the core, sleeps until a command or the core's next
//! deadline, and writes the core's output to the sockets itself.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use smol::channel::{Receiver, Sender};
use smol::future;
use smol::net::TcpStream;
use smol::Timer;
use wshub_core::broker::BrokerLink;
use wshub_core::command::{Command, Reply};
use wshub_core::overflow::EventOverflow;
use wshub_core::{ConnId, ConnMap, Event, Hub, Output, PeerInfo};

use crate::conn::{self, ConnIo};
use crate::{DeferredAuth, Spawner};
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
    Hub(Command, Option<Sender<Reply>>),
    Shutdown(Sender<bool>),
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

/// What woke the hub task.
enum Wake {
    Cmd(Cmd),
    Timer,
    Gone,
}

pub(crate) struct HubTask {
    pub hub: Hub,
    pub conns: ConnMap<ConnIo>,
    /// Bounded: an application that does not read costs dropped events
    /// (counted, then reported), never a stalled hub or unbounded memory.
    pub events: Sender<Event>,
    pub overflow: EventOverflow,
    pub deferred: Option<DeferredAuth>,
    /// Where broker outputs go (with `HubConfig::broker`).
    pub broker: Option<Box<dyn BrokerLink>>,
    pub spawner: Spawner,
    pub read_buffer: usize,
    /// For connection and auth tasks.
    pub tx: Sender<Cmd>,
    pub shutdown_waiters: Vec<Sender<bool>>,
    pub frames: Vec<Bytes>,
}

impl HubTask {
    pub async fn run(mut self, rx: Receiver<Cmd>) {
        // One timer, re-armed only when the core's deadline changes.
        let mut timer = Timer::never();
        let mut armed: Option<Instant> = None;
        loop {
            let want = self.hub.poll_timeout();
            if want != armed {
                match want {
                    Some(at) => timer.set_at(at),
                    None => timer = Timer::never(),
                }
                armed = want;
            }
            let wake = future::or(
                async {
                    match rx.recv().await {
                        Ok(cmd) => Wake::Cmd(cmd),
                        Err(_) => Wake::Gone,
                    }
                },
                async {
                    (&mut timer).await;
                    Wake::Timer
                },
            )
            .await;
            match wake {
                Wake::Gone => return self.cut_all(),
                // A one-shot timer that fired stays silent until set again.
                Wake::Timer => armed = None,
                Wake::Cmd(cmd) => {
                    // A round: every command already queued, up to the limit,
                    // then one write per connection with output.
                    let mut taken = cmd.weight();
                    let mut answered = match self.apply(cmd) {
                        Some(answered) => answered,
                        None => return self.cut_all(),
                    };
                    while taken < self.hub.commands_per_round() {
                        let cmd = match rx.try_recv() {
                            Ok(cmd) => cmd,
                            Err(_) if answered => {
                                // A publisher just answered may have its next
                                // message ready: let it run once, so
                                // consecutive publishes share the writes.
                                answered = false;
                                future::yield_now().await;
                                match rx.try_recv() {
                                    Ok(cmd) => cmd,
                                    Err(_) => break,
                                }
                            }
                            Err(_) => break,
                        };
                        taken += cmd.weight();
                        match self.apply(cmd) {
                            Some(a) => answered |= a,
                            None => return self.cut_all(),
                        }
                    }
                    self.drain();
                }
            }
            // `or` is biased to the command channel: the deadline is checked
            // after every batch, so a busy channel cannot starve it.
            self.hub.handle_timeout(Instant::now());
            self.drain();
            if !rx.is_empty() {
                // No await above was pending: let the connection tasks sharing
                // this executor thread run before the next batch.
                future::yield_now().await;
            }
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
                if let Command::Answer(id, _) = &command {
                    if let Some(c) = self.conns.get_mut(*id) {
                        c.auth = None; // finished; dropping the handle is harmless
                    }
                }
                let Some(reply) = reply else {
                    let _ = self.hub.apply(now, command);
                    return Some(false);
                };
                // A publish through a broker is answered when the broker is.
                let answer = Box::new(move |answer| drop(reply.try_send(answer)));
                self.hub.apply_then(now, command, answer);
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
        let tasks = conn::spawn(id, stream, self.tx.clone(), &self.spawner, self.read_buffer);
        self.conns.insert(id, tasks);
        // Before any Read from the socket: this command is applied first.
        if !read.is_empty() {
            let _ = self.hub.handle_read(now, id, read);
        }
    }

    /// Routes events and output until the core has nothing more.
    fn drain(&mut self) {
        // One clock read per drain, not one per connection written.
        let now = Instant::now();
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
        let flushed = c.flush(id, &self.tx, &self.spawner);
        if flushed.written() > 0 {
            let _ = self.hub.handle_written(now, id, flushed.written());
        }
        if let Flushed::Failed(_) = flushed {
            let _ = self.hub.handle_io_error(now, id);
        }
    }

    fn on_event(&mut self, event: Event) {
        let event = match (event, &self.deferred) {
            (Event::AuthPending { conn, request }, Some(f)) => {
                let (decide, tx) = (f(request), self.tx.clone());
                let task = self.spawner.spawn(async move {
                    let decision = decide.await;
                    let _ = tx
                        .send(Cmd::Hub(Command::Answer(conn, decision), None))
                        .await;
                });
                // Kept with the connection: if it closes first (say the
                // handshake timeout passes), the check is cancelled.
                if let Some(c) = self.conns.get_mut(conn) {
                    c.auth = Some(task);
                }
                return;
            }
            (event, _) => event,
        };
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
            Event::ShutdownComplete => {
                for w in self.shutdown_waiters.drain(..) {
                    let _ = w.try_send(true);
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
            let _ = w.try_send(false);
        }
    }
}
