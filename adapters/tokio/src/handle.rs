//! The application's handles: commands to the hub task, awaited
//! ([`Handle`]) or blocking ([`BlockingHandle`]).

use std::fmt;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use wshub_core::command::{Command, HubCommands, Reply, Stopped};

use crate::hub_task::{self, Cmd};

/// Commands the hub from any task. Cheap to clone.
///
/// Commands are queued to the hub task in order; the ones that return a count
/// or stats wait for its answer. For threads outside the runtime, use
/// [`Handle::blocking`].
#[derive(Clone)]
pub struct Handle {
    pub(crate) tx: mpsc::Sender<Cmd>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("stopped", &self.tx.is_closed())
            .finish()
    }
}

impl Handle {
    /// Applies any [`Command`] and waits for the hub's [`Reply`]; the
    /// methods below (the same list as [`HubCommands`], which
    /// [`BlockingHandle`] implements) are shorthands for it and
    /// [`Handle::tell`].
    pub async fn command(&self, command: Command) -> Result<Reply, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Hub(command, Some(tx)))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Queues a command without waiting for its reply.
    pub async fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.tx
            .send(Cmd::Hub(command, None))
            .await
            .map_err(|_| Stopped)
    }

    /// The same commands as blocking calls, for threads outside the runtime.
    pub fn blocking(&self) -> BlockingHandle {
        BlockingHandle {
            inner: self.clone(),
        }
    }

    wshub_core::hub_command_methods!(async);

    /// Serves a stream accepted elsewhere (an HTTP server's, say) whose
    /// upgrade request has not been read yet. The stream must belong to the
    /// hub's runtime.
    pub async fn add_stream(&self, stream: TcpStream) -> Result<(), Stopped> {
        self.add_stream_read(stream, Vec::new()).await
    }

    /// Serves a stream accepted elsewhere whose first bytes the application
    /// already read (an HTTP server that looked at the request to route
    /// it): `read` is taken as the stream's first bytes, then the socket. The
    /// hub judges the whole request itself (path, origin, required headers,
    /// auth, limits), as for any connection.
    pub async fn add_stream_read(&self, stream: TcpStream, read: Vec<u8>) -> Result<(), Stopped> {
        let peer = stream.peer_addr().ok();
        self.tx
            .send(Cmd::Open(stream, peer, read))
            .await
            .map_err(|_| Stopped)
    }

    /// Graceful shutdown: stops accepting, sends 1001 to every client, and
    /// returns `true` once every connection is closed and flushed, or `false`
    /// when `deadline` passed first (remaining sockets are then cut). The hub
    /// task ends either way; later commands return [`Stopped`].
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let at = hub_task::now() + deadline;
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(at, tx)).await.is_err() {
            return true; // already stopped
        }
        rx.await.unwrap_or(false)
    }
}

/// A [`Handle`] whose calls block the calling thread: for threads outside the
/// tokio runtime (calling one from inside a runtime panics, as tokio's
/// `blocking_*` functions do). Its commands are the [`HubCommands`] methods.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlockingHandle {
    inner: Handle,
}

impl From<Handle> for BlockingHandle {
    fn from(inner: Handle) -> Self {
        BlockingHandle { inner }
    }
}

impl HubCommands for BlockingHandle {
    fn command(&self, command: Command) -> Result<Reply, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .blocking_send(Cmd::Hub(command, Some(tx)))
            .map_err(|_| Stopped)?;
        rx.blocking_recv().map_err(|_| Stopped)
    }

    fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.inner
            .tx
            .blocking_send(Cmd::Hub(command, None))
            .map_err(|_| Stopped)
    }
}

impl BlockingHandle {
    /// The async handle.
    pub fn handle(&self) -> &Handle {
        &self.inner
    }

    /// Serves a stream accepted elsewhere; see [`Handle::add_stream`].
    pub fn add_stream(&self, stream: TcpStream) -> Result<(), Stopped> {
        self.add_stream_read(stream, Vec::new())
    }

    /// See [`Handle::add_stream_read`].
    pub fn add_stream_read(&self, stream: TcpStream, read: Vec<u8>) -> Result<(), Stopped> {
        let peer = stream.peer_addr().ok();
        self.inner
            .tx
            .blocking_send(Cmd::Open(stream, peer, read))
            .map_err(|_| Stopped)
    }

    /// Graceful shutdown; see [`Handle::shutdown`].
    pub fn shutdown(&self, deadline: Duration) -> bool {
        let at = hub_task::now() + deadline;
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.blocking_send(Cmd::Shutdown(at, tx)).is_err() {
            return true; // already stopped
        }
        rx.blocking_recv().unwrap_or(false)
    }
}
