//! A connection: a reader task feeding the hub task, and the socket's write
//! side, which the hub task itself writes without blocking.
//!
//! Why the hub writes: with a writer task per connection, smol's FIFO
//! executor ran the publisher again before any writer, so every writer found
//! one frame and paid a system call (and a TCP segment) for it. Writing from
//! the hub task after it has taken every queued command puts all a
//! connection owes into one `writev`. Only a socket whose buffer is full gets
//! a task, which waits for room and tells the hub to write again.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream as StdStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smol::channel::{self, Receiver, Sender};
use smol::future;
use smol::net::TcpStream;
use smol::{Async, Task, Timer};
use wshub_core::write_queue::{Flushed, WriteQueue};
use wshub_core::ConnId;

use crate::hub_task::Cmd;
use crate::Spawner;

/// How long a finished connection keeps reading (and discarding) until the
/// peer closes its side, so closing the socket does not reset data the peer
/// has yet to read.
const LINGER: Duration = Duration::from_secs(1);

thread_local! {
    /// Read scratch space, one per executor thread rather than one per
    /// connection: an idle connection then holds no read buffer at all.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The hub task's side of a connection.
pub(crate) struct ConnIo {
    stream: Arc<Async<StdStream>>,
    /// Frames the core handed out and the socket has not taken yet.
    pending: WriteQueue,
    /// Waits for room in a full socket buffer; dropping it cancels the wait.
    waiter: Option<Task<()>>,
    /// Dropping it tells the reader to stop feeding the hub.
    _stop: Sender<()>,
    reader: Task<()>,
    /// A deferred authentication in progress; dropped (cancelled) with the
    /// connection.
    pub auth: Option<Task<()>>,
}

impl ConnIo {
    /// Queues frames the core handed out for this connection.
    pub fn queue(&mut self, frames: &mut Vec<Bytes>) {
        self.pending.extend(frames);
    }

    /// True while a task waits for the socket to drain.
    pub fn blocked(&self) -> bool {
        self.waiter.is_some()
    }

    /// The waiter reported the socket writable again.
    pub fn unblock(&mut self) {
        if let Some(task) = self.waiter.take() {
            task.detach(); // it has finished: it sent the message
        }
    }

    /// Writes what is pending, in as few system calls as the socket allows,
    /// never waiting (the socket is nonblocking: `Async` made it so); on
    /// `Blocked` a task now waits for room and sends [`Cmd::Writable`].
    pub fn flush(&mut self, id: ConnId, hub: &Sender<Cmd>, spawner: &Spawner) -> Flushed {
        let mut socket: &StdStream = self.stream.get_ref();
        let flushed = self
            .pending
            .write_with(|slices| socket.write_vectored(slices));
        if let Flushed::Blocked(_) = flushed {
            let (stream, hub) = (self.stream.clone(), hub.clone());
            self.waiter = Some(spawner.spawn(async move {
                if stream.writable().await.is_ok() {
                    let _ = hub.send(Cmd::Writable(id)).await;
                }
            }));
        }
        flushed
    }

    /// The core is done with the connection and every byte it owed was
    /// written: FIN after the last byte, and the reader lingers until the
    /// peer's EOF. Anything still pending (which a flushed close never
    /// leaves) means a cut.
    pub fn end(self) {
        if !self.pending.is_empty() {
            return self.cut();
        }
        let _ = self.stream.get_ref().shutdown(Shutdown::Write);
        self.reader.detach();
        // `_stop` drops here: the reader winds down on its own.
    }

    /// Cuts the connection at once: shuts both directions and cancels the
    /// tasks (dropping a `Task` cancels it).
    pub fn cut(self) {
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
    }
}

/// Starts the reader task of `stream` for connection `id`.
pub(crate) fn spawn(
    id: ConnId,
    stream: TcpStream,
    hub: Sender<Cmd>,
    spawner: &Spawner,
    read_buffer: usize,
) -> ConnIo {
    let _ = stream.set_nodelay(true);
    let stream: Arc<Async<StdStream>> = stream.into();
    let (stop_tx, stop_rx) = channel::bounded(1);
    let reader = spawner.spawn(read_loop(id, stream.clone(), hub, stop_rx, read_buffer));
    ConnIo {
        stream,
        pending: WriteQueue::default(),
        waiter: None,
        _stop: stop_tx,
        reader,
        auth: None,
    }
}

/// One nonblocking read into the thread's scratch space: `Ok(None)` when the
/// socket had nothing after all (a spurious readiness).
fn read_now(stream: &Async<StdStream>, size: usize) -> io::Result<Option<Vec<u8>>> {
    SCRATCH.with_borrow_mut(|buf| {
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let mut socket: &StdStream = stream.get_ref();
        match socket.read(&mut buf[..size]) {
            Ok(n) => Ok(Some(buf[..n].to_vec())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    })
}

async fn read_loop(
    id: ConnId,
    stream: Arc<Async<StdStream>>,
    hub: Sender<Cmd>,
    stop: Receiver<()>,
    size: usize,
) {
    loop {
        // The stop signal goes first: `or` is biased to the left, and a
        // flooding peer must not hide it. No buffer is held while waiting.
        let ready = future::or(
            async {
                let _ = stop.recv().await;
                None
            },
            async { Some(stream.readable().await) },
        )
        .await;
        let Some(ready) = ready else { break };
        let cmd = match ready.and_then(|()| read_now(&stream, size)) {
            Ok(None) => continue,
            Ok(Some(data)) if data.is_empty() => {
                let _ = hub.send(Cmd::Eof(id)).await;
                return;
            }
            // The bounded command channel is the backpressure: a peer that
            // sends faster than the hub handles it waits in TCP, not in memory.
            Ok(Some(data)) => Cmd::Read(id, data),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = hub.send(Cmd::IoError(id)).await;
                return;
            }
        };
        if hub.send(cmd).await.is_err() {
            return;
        }
    }
    // The hub is done with the connection: discard input until the peer
    // closes (or a moment passes), then let the socket go.
    drop(hub);
    let drain = async {
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
    };
    future::or(drain, async {
        Timer::after(LINGER).await;
    })
    .await;
}
