//! A connection: a reader task feeding the hub task, and the socket's write
//! side, which the hub task itself writes without blocking.
//!
//! Why the hub writes: a writer task per connection costs a wake-up, a channel
//! send and a task switch per connection per batch, and spreads one publish
//! into as many small writes as the scheduler happens to interleave. Writing
//! from the hub task right after it has taken every queued command puts all a
//! connection owes into one `writev`. Only a socket whose buffer is full gets
//! a task, which waits for it to drain and tells the hub to write again.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use wshub_core::write_queue::{Flushed, WriteQueue};
use wshub_core::ConnId;

use crate::hub_task::Cmd;

/// How long a finished connection's reader keeps discarding input until the
/// peer's FIN, so closing the socket does not turn unread bytes into a reset.
const LINGER: Duration = Duration::from_secs(1);

thread_local! {
    /// Read scratch space, one per runtime thread rather than one per
    /// connection: an idle connection then holds no read buffer at all.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The hub task's side of a connection.
pub(crate) struct ConnIo {
    pub id: ConnId,
    stream: Arc<TcpStream>,
    /// Frames the core handed out and the socket has not taken yet.
    pending: WriteQueue,
    /// Waits for the socket to become writable after a full buffer.
    waiter: Option<AbortHandle>,
    /// Dropping it stops the reader feeding the hub.
    _stop_reader: oneshot::Sender<()>,
    reader: AbortHandle,
    /// A deferred authentication in progress.
    pub auth: Option<AbortHandle>,
}

impl ConnIo {
    /// Queues frames the core handed out for this connection.
    pub fn queue(&mut self, frames: &mut Vec<Bytes>) {
        self.pending.extend(frames);
    }

    /// True while a task waits for the socket to drain: writing now would
    /// only return `WouldBlock` again.
    pub fn blocked(&self) -> bool {
        self.waiter.is_some()
    }

    /// The waiter reported the socket writable again.
    pub fn unblock(&mut self) {
        self.waiter = None;
    }

    /// Writes what is pending, in as few system calls as the socket allows,
    /// never waiting; on `Blocked` a task now waits for room and sends
    /// [`Cmd::Writable`].
    pub fn flush(&mut self, hub: &mpsc::Sender<Cmd>) -> Flushed {
        let stream = &self.stream;
        let flushed = self
            .pending
            .write_with(|slices| stream.try_write_vectored(slices));
        if let Flushed::Blocked(_) = flushed {
            self.wait_writable(hub);
        }
        flushed
    }

    fn wait_writable(&mut self, hub: &mpsc::Sender<Cmd>) {
        let (stream, hub, id) = (self.stream.clone(), hub.clone(), self.id);
        let task = tokio::spawn(async move {
            // `try_write_vectored` returned WouldBlock, which cleared tokio's
            // write readiness: this waits for the kernel to say there is room.
            if stream.writable().await.is_ok() {
                let _ = hub.send(Cmd::Writable(id)).await;
            }
        });
        self.waiter = Some(task.abort_handle());
    }

    /// Ends the connection (the core reported it closed with all its output
    /// written): FIN after the last byte, the reader waits briefly for the
    /// peer's FIN.
    pub fn end(self) {
        if !self.pending.is_empty() {
            return self.cut(); // cannot happen: the core said it was flushed
        }
        if let Some(auth) = &self.auth {
            auth.abort();
        }
        let _ = socket2::SockRef::from(&*self.stream).shutdown(Shutdown::Write);
        // `_stop_reader` drops here: the reader lingers, then lets the socket go.
    }

    /// Cuts the connection at once: output the core gave up on is dropped.
    pub fn cut(self) {
        let _ = socket2::SockRef::from(&*self.stream).shutdown(Shutdown::Both);
        self.reader.abort();
        for task in [self.waiter, self.auth].into_iter().flatten() {
            task.abort();
        }
    }
}

/// Starts the reader task of `stream` for connection `id`.
pub(crate) fn spawn(
    id: ConnId,
    stream: TcpStream,
    hub: mpsc::Sender<Cmd>,
    read_buffer: usize,
) -> ConnIo {
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let (stop_tx, stop_rx) = oneshot::channel();
    let reader = tokio::spawn(read_loop(id, stream.clone(), hub, read_buffer, stop_rx));
    ConnIo {
        id,
        stream,
        pending: WriteQueue::default(),
        waiter: None,
        _stop_reader: stop_tx,
        reader: reader.abort_handle(),
        auth: None,
    }
}

/// One nonblocking read into the thread's scratch space: `Ok(None)` when the
/// socket had nothing after all (a spurious readiness).
fn read_now(stream: &TcpStream, size: usize) -> io::Result<Option<Vec<u8>>> {
    SCRATCH.with_borrow_mut(|buf| {
        if buf.len() < size {
            buf.resize(size, 0);
        }
        match stream.try_read(&mut buf[..size]) {
            Ok(n) => Ok(Some(buf[..n].to_vec())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    })
}

async fn read_loop(
    id: ConnId,
    stream: Arc<TcpStream>,
    hub: mpsc::Sender<Cmd>,
    size: usize,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        // Both branches are cancel-safe; no buffer is held while waiting.
        let ready = tokio::select! {
            biased;
            _ = &mut stop => break,
            r = stream.readable() => r,
        };
        let read = ready.and_then(|()| read_now(&stream, size));
        match read {
            Ok(None) => {}
            Ok(Some(data)) if data.is_empty() => {
                let _ = hub.send(Cmd::Eof(id)).await;
                return;
            }
            // The bounded command channel is the backpressure: a peer that sends
            // faster than the hub task handles it waits in TCP, not in memory.
            Ok(Some(data)) => {
                let sent = tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    r = hub.send(Cmd::Read(id, data)) => r,
                };
                if sent.is_err() {
                    return; // the hub has stopped
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = hub.send(Cmd::IoError(id)).await;
                return;
            }
        }
    }
    // The hub is done with the connection. Discard what the peer still sends
    // until its FIN, briefly, so closing the socket does not reset it.
    drop(hub);
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            if stream.readable().await.is_err() {
                break;
            }
            match read_now(&stream, size) {
                Ok(Some(data)) if data.is_empty() => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })
    .await;
}
