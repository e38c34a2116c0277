//! The load generator: a few threads, each driving its share of the clients
//! with nonblocking std sockets and one `polling` readiness loop (no thread
//! or task per client). A client sends a fixed upgrade request, waits for the
//! 101, sends a masked `{"type":"subscribe","data":"bench"}` when told, then
//! decodes the server's frames with the core's `FrameDecoder` (client role)
//! and reads the CLOCK_MONOTONIC stamp at the start of each message's data.
//!
//! Cheap on purpose: one `read` of up to 64 KiB per readiness event (another
//! only when it filled the buffer; level-triggered polling reports what is
//! left), no JSON parsing (the stamp is found by a byte search), latencies
//! appended to a `Vec` and sorted once per phase.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};
use wshub_core::frame::{encode_frame, Decoded, FrameDecoder, OpCode, Role};

use crate::sys::mono_ns;
use crate::CHANNEL;

/// Counters every generator thread updates; the orchestrator polls them.
#[derive(Default)]
pub struct Shared {
    /// Clients whose 101 arrived.
    pub connected: AtomicUsize,
    /// Clients that failed to connect or were refused.
    pub failed: AtomicUsize,
    /// Clients the server closed (close frame, EOF or reset) after the 101.
    pub closed: AtomicUsize,
    /// Messages of the current phase received, over all clients.
    pub received: AtomicU64,
    /// Messages of another phase (stragglers), not counted above.
    pub stale: AtomicU64,
    /// CLOCK_MONOTONIC of the latest 101 / the latest message of the phase.
    pub last_connect_ns: AtomicU64,
    pub last_recv_ns: AtomicU64,
    /// The phase whose messages count (the digit after the stamp).
    pub phase: AtomicU32,
}

enum Cmd {
    Connect {
        addr: SocketAddr,
        count: usize,
        inflight: usize,
    },
    Subscribe,
    /// Hands back (and clears) the latencies recorded so far, in ns.
    Take(Sender<Vec<u64>>),
    /// Drops every client.
    Reset,
    Stop,
}

struct Worker {
    tx: Sender<Cmd>,
    poller: Arc<Poller>,
    thread: Option<JoinHandle<()>>,
}

/// The generator threads.
pub struct Generator {
    workers: Vec<Worker>,
    pub shared: Arc<Shared>,
}

impl Generator {
    /// Starts `threads` threads (on the calling thread's CPUs).
    pub fn new(threads: usize) -> io::Result<Generator> {
        let shared = Arc::new(Shared::default());
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let poller = Arc::new(Poller::new()?);
            let (tx, rx) = mpsc::channel();
            let (p, s) = (poller.clone(), shared.clone());
            let thread = std::thread::Builder::new()
                .name(format!("loadgen-{i}"))
                .spawn(move || Loop::new(p, s, i).run(rx))?;
            workers.push(Worker {
                tx,
                poller,
                thread: Some(thread),
            });
        }
        Ok(Generator { workers, shared })
    }

    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    fn send(&self, i: usize, cmd: Cmd) {
        let w = &self.workers[i];
        let _ = w.tx.send(cmd);
        let _ = w.poller.notify();
    }

    /// Starts connecting `count` clients to `addr`, at most `inflight`
    /// handshakes at once over all threads (the listen backlog stays short,
    /// so no SYN is dropped and retried a second later).
    pub fn connect(&self, addr: SocketAddr, count: usize, inflight: usize) {
        let t = self.workers.len();
        for i in 0..t {
            let share = count / t + usize::from(i < count % t);
            let inflight = (inflight / t).max(1);
            self.send(
                i,
                Cmd::Connect {
                    addr,
                    count: share,
                    inflight,
                },
            );
        }
    }

    /// Every connected client sends its subscribe.
    pub fn subscribe(&self) {
        for i in 0..self.workers.len() {
            self.send(i, Cmd::Subscribe);
        }
    }

    /// Counts messages of `phase` from now on; resets the phase counters.
    pub fn start_phase(&self, phase: u32) {
        let s = &self.shared;
        s.phase.store(phase, Ordering::SeqCst);
        s.received.store(0, Ordering::SeqCst);
        s.stale.store(0, Ordering::SeqCst);
        s.last_recv_ns.store(0, Ordering::SeqCst);
    }

    /// Every latency recorded since the last call, in ns, sorted.
    pub fn take_latencies(&self) -> Vec<u64> {
        let mut all = Vec::new();
        for i in 0..self.workers.len() {
            let (tx, rx) = mpsc::channel();
            self.send(i, Cmd::Take(tx));
            if let Ok(mut v) = rx.recv_timeout(Duration::from_secs(30)) {
                all.append(&mut v);
            }
        }
        all.sort_unstable();
        all
    }

    /// Drops every client and zeroes the connection counters.
    pub fn reset(&self) {
        for i in 0..self.workers.len() {
            self.send(i, Cmd::Reset);
        }
        // A Take after the Reset waits until every thread has done it.
        self.take_latencies();
        let s = &self.shared;
        s.connected.store(0, Ordering::SeqCst);
        s.failed.store(0, Ordering::SeqCst);
        s.closed.store(0, Ordering::SeqCst);
        s.last_connect_ns.store(0, Ordering::SeqCst);
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        for i in 0..self.workers.len() {
            self.send(i, Cmd::Stop);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

enum Phase {
    /// Waiting for the end of the 101 response head.
    Handshake(Vec<u8>),
    Open,
}

struct Client {
    stream: TcpStream,
    phase: Phase,
    decoder: FrameDecoder,
    /// Bytes not yet written (subscribe, pongs).
    out: Vec<u8>,
    want_write: bool,
    mask: [u8; 4],
}

/// One generator thread.
struct Loop {
    poller: Arc<Poller>,
    shared: Arc<Shared>,
    /// Client slots, keyed by index; `None` once closed.
    clients: Vec<Option<Client>>,
    /// Connection plan.
    addr: Option<SocketAddr>,
    to_open: usize,
    inflight: usize,
    max_inflight: usize,
    latencies: Vec<u64>,
    buf: Vec<u8>,
    request: Vec<u8>,
    subscribe: Vec<u8>,
    seed: u32,
}

impl Loop {
    fn new(poller: Arc<Poller>, shared: Arc<Shared>, index: usize) -> Loop {
        Loop {
            poller,
            shared,
            clients: Vec::new(),
            addr: None,
            to_open: 0,
            inflight: 0,
            max_inflight: 1,
            latencies: Vec::new(),
            buf: vec![0; 64 * 1024],
            request: Vec::new(),
            subscribe: format!(r#"{{"type":"subscribe","data":"{CHANNEL}"}}"#).into_bytes(),
            seed: index as u32,
        }
    }

    fn run(mut self, rx: Receiver<Cmd>) {
        let mut events = Events::new();
        loop {
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Cmd::Connect {
                        addr,
                        count,
                        inflight,
                    } => {
                        self.addr = Some(addr);
                        self.to_open = count;
                        self.max_inflight = inflight;
                        self.request = format!(
                            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                             Sec-WebSocket-Version: 13\r\n\r\n"
                        )
                        .into_bytes();
                    }
                    Cmd::Subscribe => self.subscribe_all(),
                    Cmd::Take(reply) => {
                        let _ = reply.send(std::mem::take(&mut self.latencies));
                    }
                    Cmd::Reset => self.drop_all(),
                    Cmd::Stop => {
                        self.drop_all();
                        return;
                    }
                }
            }
            while self.to_open > 0 && self.inflight < self.max_inflight {
                self.to_open -= 1;
                self.open();
            }
            events.clear();
            let _ = self
                .poller
                .wait(&mut events, Some(Duration::from_millis(100)));
            for ev in events.iter() {
                if ev.writable {
                    self.flush(ev.key);
                }
                if ev.readable {
                    self.on_readable(ev.key);
                }
            }
        }
    }

    fn open(&mut self) {
        let Some(addr) = self.addr else { return };
        let key = self.clients.len();
        let opened = (|| {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            stream.set_nodelay(true)?;
            // A fresh socket's send buffer takes the whole request at once.
            stream.write_all(&self.request)?;
            stream.set_nonblocking(true)?;
            // SAFETY: the stream is deleted from the poller before it is
            // dropped (`close` and `drop_all`), and lives in `clients` until then.
            unsafe {
                self.poller
                    .add_with_mode(&stream, Event::readable(key), PollMode::Level)?
            };
            Ok::<_, io::Error>(stream)
        })();
        match opened {
            Ok(stream) => {
                self.seed = self.seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                self.clients.push(Some(Client {
                    stream,
                    phase: Phase::Handshake(Vec::new()),
                    decoder: FrameDecoder::new(Role::Client, 1 << 20),
                    out: Vec::new(),
                    want_write: false,
                    mask: self.seed.to_be_bytes(),
                }));
                self.inflight += 1;
            }
            Err(_) => {
                self.shared.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn subscribe_all(&mut self) {
        for key in 0..self.clients.len() {
            if let Some(c) = &mut self.clients[key] {
                if matches!(c.phase, Phase::Open) {
                    encode_frame(&mut c.out, OpCode::Text, &self.subscribe, Some(c.mask));
                    self.flush(key);
                }
            }
        }
    }

    fn drop_all(&mut self) {
        for c in self.clients.drain(..).flatten() {
            let _ = self.poller.delete(&c.stream);
        }
        self.to_open = 0;
        self.inflight = 0;
        self.latencies = Vec::new();
    }

    /// The server is done with client `key` (or it with the server).
    fn close(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key).and_then(Option::take) else {
            return;
        };
        let _ = self.poller.delete(&c.stream);
        match c.phase {
            Phase::Handshake(_) => {
                self.inflight -= 1;
                self.shared.failed.fetch_add(1, Ordering::SeqCst);
            }
            Phase::Open => {
                self.shared.closed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn on_readable(&mut self, key: usize) {
        loop {
            let Some(c) = self.clients.get_mut(key).and_then(Option::as_mut) else {
                return;
            };
            let n = match c.stream.read(&mut self.buf) {
                Ok(0) => return self.close(key),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(key),
            };
            let now = mono_ns();
            let full = n == self.buf.len();
            let keep_open = match &mut c.phase {
                Phase::Handshake(head) => {
                    head.extend_from_slice(&self.buf[..n]);
                    match find(head, b"\r\n\r\n") {
                        None => head.len() <= 4096,
                        Some(end) if head.starts_with(b"HTTP/1.1 101 ") => {
                            let rest = head.split_off(end + 4);
                            c.phase = Phase::Open;
                            self.inflight -= 1;
                            self.shared.connected.fetch_add(1, Ordering::SeqCst);
                            self.shared.last_connect_ns.fetch_max(now, Ordering::SeqCst);
                            frames(c, &rest, now, &self.shared, &mut self.latencies)
                        }
                        Some(_) => false,
                    }
                }
                Phase::Open => frames(c, &self.buf[..n], now, &self.shared, &mut self.latencies),
            };
            if !keep_open {
                return self.close(key);
            }
            if !self.clients[key].as_ref().is_some_and(|c| c.out.is_empty()) {
                self.flush(key);
            }
            if !full {
                // Level-triggered: anything left is reported again, so no
                // extra read that would only return WouldBlock.
                return;
            }
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => return self.close(key),
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(key),
            }
        }
        let want = !c.out.is_empty();
        if want != c.want_write {
            let interest = if want {
                Event::all(key)
            } else {
                Event::readable(key)
            };
            let _ = self
                .poller
                .modify_with_mode(&c.stream, interest, PollMode::Level);
            c.want_write = want;
        }
    }
}

/// Decodes what arrived for client `c`; false when the server closed it.
fn frames(
    c: &mut Client,
    mut input: &[u8],
    now: u64,
    shared: &Shared,
    latencies: &mut Vec<u64>,
) -> bool {
    while !input.is_empty() {
        let (used, outcome) = c.decoder.decode(input);
        input = &input[used..];
        match outcome {
            Ok(None) => {}
            Ok(Some(Decoded::Text(text))) => match stamp(&text) {
                Some((sent, phase)) if phase == shared.phase.load(Ordering::Relaxed) => {
                    latencies.push(now.saturating_sub(sent));
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    shared.last_recv_ns.fetch_max(now, Ordering::Relaxed);
                }
                _ => {
                    shared.stale.fetch_add(1, Ordering::Relaxed);
                }
            },
            Ok(Some(Decoded::Ping(payload))) => {
                encode_frame(&mut c.out, OpCode::Pong, &payload, Some(c.mask));
            }
            Ok(Some(Decoded::Close(_))) | Err(_) => return false,
            Ok(Some(_)) => {}
        }
    }
    true
}

/// The send stamp and phase at the start of a message's data:
/// `"data":"<20 digits>.<phase>.`.
pub fn stamp(text: &str) -> Option<(u64, u32)> {
    const KEY: &[u8] = b"\"data\":\"";
    let bytes = text.as_bytes();
    let at = find(bytes, KEY)? + KEY.len();
    let digits = bytes.get(at..at + 20)?;
    let mut v = 0u64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(d - b'0');
    }
    let phase = bytes.get(at + 21)?.wrapping_sub(b'0');
    Some((v, u32::from(phase)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
