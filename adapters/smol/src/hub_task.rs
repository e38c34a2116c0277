//! The hub task: owns the core, sleeps until a command or the core's next
//! deadline, and routes output to connection writers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use smol::channel::{Receiver, Sender};
use smol::future;
use smol::net::TcpStream;
use smol::Timer;
use wshub_core::{AuthDecision, ConnId, Event, Hub, Identity, Message, PeerInfo, Rejection, Stats};

use crate::conn::{self, ConnTasks};
use crate::{DeferredAuth, Spawner};

/// Everything the hub task is told.
pub(crate) enum Cmd {
    Open(TcpStream, Option<SocketAddr>),
    Read(ConnId, Vec<u8>),
    Written(ConnId, usize),
    Eof(ConnId),
    IoError(ConnId),
    Publish(String, Message, Sender<usize>),
    Broadcast(Message, Sender<usize>),
    Send(ConnId, Message),
    SendToUser(String, Message, Sender<usize>),
    Subscribe(ConnId, String),
    Unsubscribe(ConnId, String),
    Close(ConnId, u16, String),
    Accept(ConnId, Identity),
    Reject(ConnId, Rejection),
    AuthAnswer(ConnId, AuthDecision),
    HttpRespond(ConnId, u16, Vec<(String, String)>, Vec<u8>),
    Stats(Sender<Stats>),
    SubscriberCount(String, Sender<usize>),
    Channels(Sender<Vec<(String, usize)>>),
    Shutdown(Sender<bool>),
    Stop,
}

/// Commands taken before output is drained, so many publishes go out in few
/// writes.
const BATCH: usize = 256;

/// What woke the hub task.
enum Wake {
    Cmd(Cmd),
    Timer,
    Gone,
}

pub(crate) struct HubTask {
    pub hub: Hub,
    pub conns: HashMap<ConnId, ConnTasks>,
    pub events: Sender<Event>,
    pub deferred: Option<DeferredAuth>,
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
                    if !self.apply(cmd) {
                        return self.cut_all();
                    }
                    // Output goes to the writers after every command, so a
                    // burst of publishes cannot fill every queue past its cap
                    // before a byte is written.
                    self.drain();
                    for _ in 1..BATCH {
                        let Ok(cmd) = rx.try_recv() else { break };
                        if !self.apply(cmd) {
                            return self.cut_all();
                        }
                        self.drain();
                    }
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

    /// Applies one command; false means stop.
    fn apply(&mut self, cmd: Cmd) -> bool {
        let now = Instant::now();
        let hub = &mut self.hub;
        match cmd {
            Cmd::Open(stream, peer) => self.open(now, stream, peer),
            Cmd::Read(id, data) => {
                let _ = hub.handle_read(now, id, &data);
            }
            Cmd::Written(id, n) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.written(n);
                }
                let _ = hub.handle_written(now, id, n);
            }
            Cmd::Eof(id) => {
                let _ = hub.handle_eof(now, id);
            }
            Cmd::IoError(id) => {
                let _ = hub.handle_io_error(now, id);
            }
            Cmd::Publish(ch, m, reply) => {
                let _ = reply.try_send(hub.publish(now, &ch, m));
            }
            Cmd::Broadcast(m, reply) => {
                let _ = reply.try_send(hub.broadcast(now, &m));
            }
            Cmd::Send(id, m) => {
                let _ = hub.send(now, id, &m);
            }
            Cmd::SendToUser(user, m, reply) => {
                let _ = reply.try_send(hub.send_to_user(now, &user, &m));
            }
            Cmd::Subscribe(id, ch) => {
                let _ = hub.subscribe(now, id, &ch);
            }
            Cmd::Unsubscribe(id, ch) => {
                let _ = hub.unsubscribe(now, id, &ch);
            }
            Cmd::Close(id, code, reason) => {
                let _ = hub.close(now, id, code, &reason);
            }
            Cmd::Accept(id, identity) => {
                let _ = hub.accept(now, id, identity);
            }
            Cmd::Reject(id, rejection) => {
                let _ = hub.reject(now, id, rejection);
            }
            Cmd::AuthAnswer(id, decision) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.auth = None; // finished; dropping the handle is harmless
                }
                let _ = hub.answer(now, id, decision);
            }
            Cmd::HttpRespond(id, status, headers, body) => {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let _ = hub.http_respond(now, id, status, &headers, &body);
            }
            Cmd::Stats(reply) => {
                let _ = reply.try_send(hub.stats());
            }
            Cmd::SubscriberCount(ch, reply) => {
                let _ = reply.try_send(hub.subscriber_count(&ch));
            }
            Cmd::Channels(reply) => {
                let _ = reply.try_send(hub.channels());
            }
            Cmd::Shutdown(reply) => {
                hub.shutdown(now);
                self.shutdown_waiters.push(reply);
            }
            Cmd::Stop => return false,
        }
        true
    }

    fn open(&mut self, now: Instant, stream: TcpStream, peer: Option<SocketAddr>) {
        let Ok(id) = self.hub.open(now, PeerInfo { addr: peer }) else {
            return; // shutting down: dropping the stream closes it
        };
        let tasks = conn::spawn(id, stream, self.tx.clone(), &self.spawner, self.read_buffer);
        self.conns.insert(id, tasks);
    }

    /// Routes events and output until the core has nothing more.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.hub.poll_event() {
                progressed = true;
                self.on_event(event);
            }
            while let Some(id) = self.hub.poll_transmit(&mut self.frames) {
                progressed = true;
                let batch = std::mem::take(&mut self.frames);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.transmit(batch);
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let event = match (event, &self.deferred) {
            (Event::AuthPending { conn, request }, Some(f)) => {
                let (decide, tx) = (f(request), self.tx.clone());
                let task = self.spawner.spawn(async move {
                    let decision = decide.await;
                    let _ = tx.send(Cmd::AuthAnswer(conn, decision)).await;
                });
                // Kept with the connection: if it closes first (say the
                // handshake timeout passes), the check is cancelled.
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.auth = Some(task);
                }
                return;
            }
            (event, _) => event,
        };
        match &event {
            Event::Closed { conn, flushed, .. } => {
                if let Some(c) = self.conns.remove(conn) {
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
        let _ = self.events.try_send(event);
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
