//! A connection's two tasks: a reader feeding the hub, a writer draining
//! shared frames to the socket with vectored writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::time::Duration;

use bytes::Bytes;
use smol::channel::{self, Receiver, Sender};
use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{Task, Timer};
use wshub_core::ConnId;

use crate::hub_task::Cmd;
use crate::Spawner;

/// How long a finished connection keeps reading (and discarding) until the
/// peer closes its side, so closing the socket does not reset data the peer
/// has yet to read.
const LINGER: Duration = Duration::from_secs(1);

/// Most slices handed to one `writev` (Linux allows 1024; 64 frames of a
/// typical size already fill a socket buffer).
const MAX_SLICES: usize = 64;

/// The hub task's side of a connection.
pub(crate) struct ConnTasks {
    /// Frames for the writer; dropping it lets the writer finish and shut the
    /// write side.
    frames: Sender<Vec<Bytes>>,
    /// Dropping it tells the reader to stop feeding the hub.
    _stop: Sender<()>,
    /// Kept to cut the socket.
    stream: TcpStream,
    reader: Task<()>,
    writer: Task<()>,
    /// A deferred authentication in progress; dropped (cancelled) with the
    /// connection.
    pub auth: Option<Task<()>>,
    /// Bytes handed to the writer and not yet reported written.
    outstanding: usize,
}

impl ConnTasks {
    /// Hands a batch of frames to the writer.
    pub fn transmit(&mut self, batch: Vec<Bytes>) {
        self.outstanding += batch.iter().map(Bytes::len).sum::<usize>();
        // Unbounded, but the core caps what a connection may owe its socket.
        let _ = self.frames.try_send(batch);
    }

    /// The writer reported `n` bytes written.
    pub fn written(&mut self, n: usize) {
        self.outstanding = self.outstanding.saturating_sub(n);
    }

    /// The core is done with the connection. When everything handed to the
    /// writer was written (a flushed close or refusal), the writer shuts the
    /// write side and the reader lingers until the peer's EOF; otherwise the
    /// core gave up on the output (EOF, error, stall, timeout) and the socket
    /// is cut.
    pub fn end(self) {
        if self.outstanding > 0 {
            return self.cut();
        }
        self.writer.detach();
        self.reader.detach();
        // `frames` and `_stop` drop here: both tasks wind down on their own.
    }

    /// Cuts the connection at once: shuts both directions and cancels the
    /// tasks (dropping a `Task` cancels it).
    pub fn cut(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Starts the reader and writer tasks of `stream` for connection `id`.
pub(crate) fn spawn(
    id: ConnId,
    stream: TcpStream,
    hub: Sender<Cmd>,
    spawner: &Spawner,
    read_buffer: usize,
) -> ConnTasks {
    let _ = stream.set_nodelay(true);
    let (frames_tx, frames_rx) = channel::unbounded();
    let (stop_tx, stop_rx) = channel::bounded(1);
    let writer = spawner.spawn(write_loop(id, stream.clone(), frames_rx, hub.clone()));
    let reader = spawner.spawn(read_loop(id, stream.clone(), hub, stop_rx, read_buffer));
    ConnTasks {
        frames: frames_tx,
        _stop: stop_tx,
        stream,
        reader,
        writer,
        auth: None,
        outstanding: 0,
    }
}

async fn read_loop(
    id: ConnId,
    mut stream: TcpStream,
    hub: Sender<Cmd>,
    stop: Receiver<()>,
    size: usize,
) {
    let mut buf = vec![0u8; size];
    loop {
        // The stop signal goes first: `or` is biased to the left, and a
        // flooding peer must not hide it.
        let got = future::or(
            async {
                let _ = stop.recv().await;
                None
            },
            async { Some(stream.read(&mut buf).await) },
        )
        .await;
        let cmd = match got {
            None => break,
            Some(Ok(0)) => {
                let _ = hub.send(Cmd::Eof(id)).await;
                return;
            }
            // The bounded command channel is the backpressure: a peer that
            // sends faster than the hub handles it waits in TCP, not in memory.
            Some(Ok(n)) => Cmd::Read(id, buf[..n].to_vec()),
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Some(Err(_)) => {
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
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    future::or(drain, async {
        Timer::after(LINGER).await;
    })
    .await;
}

async fn write_loop(
    id: ConnId,
    mut stream: TcpStream,
    frames: Receiver<Vec<Bytes>>,
    hub: Sender<Cmd>,
) {
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    // Bytes of the front frame already written.
    let mut offset = 0usize;
    loop {
        if pending.is_empty() {
            if pending.capacity() > 4 * MAX_SLICES {
                pending = VecDeque::new(); // an idle connection keeps little
            }
            match frames.recv().await {
                Ok(batch) => pending.extend(batch),
                Err(_) => break, // the hub is done with this connection
            }
        }
        // Gather whatever else is queued so one system call carries it all.
        while let Ok(batch) = frames.try_recv() {
            pending.extend(batch);
        }
        let result = {
            // One small allocation per system call; the frames themselves are
            // the core's shared bytes, never copied.
            let slices: Vec<IoSlice<'_>> = pending
                .iter()
                .take(MAX_SLICES)
                .enumerate()
                .map(|(i, f)| IoSlice::new(&f[if i == 0 { offset } else { 0 }..]))
                .collect();
            stream.write_vectored(&slices).await
        };
        let n = match result {
            Ok(0) => {
                let _ = hub.send(Cmd::IoError(id)).await;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = hub.send(Cmd::IoError(id)).await;
                return;
            }
        };
        if hub.send(Cmd::Written(id, n)).await.is_err() {
            return;
        }
        let mut left = n;
        while left > 0 {
            let Some(front) = pending.front() else { break };
            let avail = front.len() - offset;
            if left >= avail {
                left -= avail;
                offset = 0;
                pending.pop_front();
            } else {
                offset += left;
                left = 0;
            }
        }
    }
    // Everything handed over is written: send FIN after it.
    let _ = stream.shutdown(Shutdown::Write);
}
