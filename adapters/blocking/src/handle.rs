//! The application's handle: commands to the hub thread.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wshub_core::command::{Command, Reply};
use wshub_core::{ConnId, Identity, Message, Rejection, Stats};

use crate::hub_thread::Cmd;

/// The hub thread is gone (after shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the hub has stopped")
    }
}

impl std::error::Error for Stopped {}

/// Commands the hub from any thread. Cheap to clone.
///
/// Commands are queued to the hub thread in order; the ones that return a
/// count or stats wait for its answer.
#[derive(Clone)]
pub struct Handle {
    pub(crate) tx: SyncSender<Cmd>,
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) listen_addr: Arc<std::sync::OnceLock<SocketAddr>>,
}

impl Handle {
    /// Applies any [`Command`] and waits for the hub's [`Reply`]; the
    /// methods below are shorthands for it.
    pub fn command(&self, command: Command) -> Result<Reply, Stopped> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Cmd::Hub(command, Some(tx)))
            .map_err(|_| Stopped)?;
        rx.recv().map_err(|_| Stopped)
    }

    fn count(&self, command: Command) -> Result<usize, Stopped> {
        Ok(self.command(command)?.count())
    }

    /// Queues a command without waiting for its reply.
    fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.tx.send(Cmd::Hub(command, None)).map_err(|_| Stopped)
    }

    /// Publishes to a channel's subscribers; returns how many got it.
    pub fn publish(&self, channel: &str, message: Message) -> Result<usize, Stopped> {
        self.count(Command::publish(channel, message))
    }

    /// Sends to every connection; returns how many got it.
    pub fn broadcast(&self, message: Message) -> Result<usize, Stopped> {
        self.count(Command::Broadcast(message))
    }

    /// Sends to one connection.
    pub fn send(&self, conn: ConnId, message: Message) -> Result<(), Stopped> {
        self.tell(Command::Send(conn, message))
    }

    /// Sends to every connection of a user; returns how many.
    pub fn send_to_user(&self, user_id: &str, message: Message) -> Result<usize, Stopped> {
        let user = user_id.to_owned();
        self.count(Command::SendToUser { user, message })
    }

    /// go-ws `SendProcessOutput`.
    pub fn process_output(&self, process_id: &str, line: &str) -> Result<usize, Stopped> {
        self.count(Command::process_output(process_id, line))
    }

    /// go-ws `SendProcessStatus`.
    pub fn process_status(
        &self,
        process_id: &str,
        status: &str,
        exit_code: i32,
    ) -> Result<usize, Stopped> {
        self.count(Command::process_status(process_id, status, exit_code))
    }

    /// go-ws `SendEvent`.
    pub fn send_event(&self, name: &str, data: Value) -> Result<usize, Stopped> {
        self.count(Command::send_event(name, data))
    }

    /// go-ws `SendError`.
    pub fn send_error(&self, text: &str) -> Result<usize, Stopped> {
        self.count(Command::send_error(text))
    }

    /// Subscribes a connection on its behalf.
    pub fn subscribe(&self, conn: ConnId, channel: &str) -> Result<(), Stopped> {
        self.tell(Command::Subscribe(conn, channel.to_owned()))
    }

    /// Unsubscribes a connection.
    pub fn unsubscribe(&self, conn: ConnId, channel: &str) -> Result<(), Stopped> {
        self.tell(Command::Unsubscribe(conn, channel.to_owned()))
    }

    /// Closes a connection with a code (1000 or 3000-4999) and a reason.
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), Stopped> {
        self.tell(Command::Close(conn, code, reason.to_owned()))
    }

    /// Accepts a deferred authentication.
    pub fn accept(&self, conn: ConnId, identity: Identity) -> Result<(), Stopped> {
        self.tell(Command::Accept(conn, identity))
    }

    /// Rejects a deferred authentication.
    pub fn reject(&self, conn: ConnId, rejection: Rejection) -> Result<(), Stopped> {
        self.tell(Command::Reject(conn, rejection))
    }

    /// Answers a plain HTTP request (`Event::HttpRequest`, with
    /// `HubConfig::http_fallback` on).
    pub fn http_respond(
        &self,
        conn: ConnId,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<(), Stopped> {
        self.tell(Command::HttpRespond {
            conn,
            status,
            headers,
            body,
        })
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Result<Stats, Stopped> {
        match self.command(Command::Stats)? {
            Reply::Stats(stats) => Ok(stats),
            _ => unreachable!("Stats answers Stats"),
        }
    }

    /// Subscribers of a channel.
    pub fn subscriber_count(&self, channel: &str) -> Result<usize, Stopped> {
        self.count(Command::SubscriberCount(channel.to_owned()))
    }

    /// Every channel with its subscriber count.
    pub fn channels(&self) -> Result<Vec<(String, usize)>, Stopped> {
        match self.command(Command::Channels)? {
            Reply::Channels(channels) => Ok(channels),
            _ => unreachable!("Channels answers Channels"),
        }
    }

    /// Serves a stream accepted elsewhere (its upgrade request not yet read).
    pub fn add_stream(&self, stream: TcpStream) -> Result<(), Stopped> {
        let peer = stream.peer_addr().ok();
        self.add_stream_from(stream, peer)
    }

    pub(crate) fn add_stream_from(
        &self,
        stream: TcpStream,
        peer: Option<SocketAddr>,
    ) -> Result<(), Stopped> {
        self.tx.send(Cmd::Open(stream, peer)).map_err(|_| Stopped)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Graceful shutdown: stops accepting, sends 1001 to every client, and
    /// returns `true` once every connection is closed and flushed, or `false`
    /// when `deadline` passed first (remaining sockets are then cut).
    pub fn shutdown(&self, deadline: Duration) -> bool {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(addr) = self.listen_addr.get() {
            crate::poke(*addr);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Cmd::Shutdown(tx)).is_err() {
            return true;
        }
        let done = rx.recv_timeout(deadline).unwrap_or(false);
        let _ = self.tx.send(Cmd::Stop);
        done
    }
}
