//! A cheap many-client WebSocket load client: one thread drives every client
//! with nonblocking std sockets and a `polling` readiness loop (no thread, no
//! task per client). Each client sends a hand-rolled upgrade request with a
//! fixed key, checks the 101, sends a masked subscribe frame, then decodes the
//! server's frames with the core's `FrameDecoder` and checks that it receives
//! exactly the expected messages, in order.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use polling::{Event, Events, PollMode, Poller};
use wshub_core::frame::{encode_frame, Decoded, FrameDecoder, OpCode, Role};

/// The RFC 6455 sample key and its accept value: computed independently of
/// the code under test.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// What the load client does.
#[derive(Clone, Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub clients: usize,
    pub channel: String,
    /// Each client must receive exactly these messages: `{"type":"m",...,
    /// "data":n,...}` for n in 0..messages, in order.
    pub messages: usize,
    /// Handshakes in flight at once (keeps the listener's backlog from
    /// overflowing, which would cost a 1 s SYN retransmit).
    pub max_connecting: usize,
    pub deadline: Instant,
}

/// How it went.
#[derive(Clone, Debug)]
pub struct Report {
    /// Start to the last 101 (and subscribe sent).
    pub connected: Duration,
    /// Start to the last message received.
    pub total: Duration,
    /// Text messages received over all clients.
    pub received: u64,
}

enum Phase {
    /// Waiting for the end of the 101 response head.
    Handshake(Vec<u8>),
    Open,
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    decoder: FrameDecoder,
    /// Bytes not yet written (subscribe, pongs).
    out: Vec<u8>,
    want_write: bool,
    got: usize,
    mask: [u8; 4],
}

/// Raises the soft open-files limit to at least `want` (capped by the hard
/// limit); returns the soft limit now in force.
pub fn raise_fd_limit(want: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let target = want.min(lim.rlim_max);
        if lim.rlim_cur < target {
            lim.rlim_cur = target;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
    }
    lim.rlim_cur
}

/// Runs the plan to completion: Ok when every client received every message
/// in order, Err with the first problem (or a progress summary on timeout).
/// `on_connected` is called once, when every client has its 101 and has sent
/// its subscribe.
pub fn run(plan: &Plan, mut on_connected: impl FnMut(Duration)) -> Result<Report, String> {
    let start = Instant::now();
    let poller = Poller::new().map_err(|e| format!("poller: {e}"))?;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        plan.addr
    );
    let subscribe = format!(r#"{{"type":"subscribe","channel":"{}"}}"#, plan.channel);
    let mut conns: Vec<Conn> = Vec::with_capacity(plan.clients);
    let mut state = Progress::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::new();
    let result = (|| {
        while state.done < plan.clients {
            while conns.len() < plan.clients && state.connecting < plan.max_connecting {
                let key = conns.len();
                conns.push(open(plan.addr, key, request.as_bytes(), &poller)?);
                state.connecting += 1;
            }
            let now = Instant::now();
            if now >= plan.deadline {
                return Err(format!("timed out: {}", state.summary(&conns, plan)));
            }
            events.clear();
            let wait = (plan.deadline - now).min(Duration::from_millis(500));
            poller
                .wait(&mut events, Some(wait))
                .map_err(|e| format!("poll: {e}"))?;
            for ev in events.iter() {
                let key = ev.key;
                let c = &mut conns[key];
                if ev.writable {
                    flush(c, key, &poller)?;
                }
                if ev.readable {
                    let before = state.connected;
                    on_readable(c, key, plan, &subscribe, &mut buf, &mut state, &poller)?;
                    if state.connected > before && state.connected == plan.clients {
                        state.connected_at = start.elapsed();
                        on_connected(state.connected_at);
                    }
                }
            }
        }
        Ok(())
    })();
    for c in &conns {
        let _ = poller.delete(&c.stream);
    }
    result.map(|()| Report {
        connected: state.connected_at,
        total: start.elapsed(),
        received: state.received,
    })
}

#[derive(Default)]
struct Progress {
    connecting: usize,
    connected: usize,
    done: usize,
    received: u64,
    connected_at: Duration,
}

impl Progress {
    fn summary(&self, conns: &[Conn], plan: &Plan) -> String {
        let mut hist = vec![0usize; plan.messages + 1];
        for c in conns {
            hist[c.got.min(plan.messages)] += 1;
        }
        let partial: Vec<String> = hist
            .iter()
            .enumerate()
            .filter(|(n, count)| **count > 0 && *n != plan.messages)
            .map(|(n, count)| format!("{count} clients at {n}"))
            .collect();
        format!(
            "{} opened, {} connected, {} done of {}; messages received {}; short: [{}]",
            conns.len(),
            self.connected,
            self.done,
            plan.clients,
            self.received,
            partial.join(", ")
        )
    }
}

fn open(addr: SocketAddr, key: usize, request: &[u8], poller: &Poller) -> Result<Conn, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("client {key}: connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    // A fresh socket's send buffer takes the whole request at once.
    stream
        .write_all(request)
        .map_err(|e| format!("client {key}: write request: {e}"))?;
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("client {key}: nonblocking: {e}"))?;
    // SAFETY: the stream is deleted from the poller before it is dropped
    // (end of `run`), and lives in `conns` until then.
    unsafe { poller.add_with_mode(&stream, Event::readable(key), PollMode::Level) }
        .map_err(|e| format!("client {key}: poller add: {e}"))?;
    let k = key as u32;
    Ok(Conn {
        stream,
        phase: Phase::Handshake(Vec::new()),
        decoder: FrameDecoder::new(Role::Client, 1 << 20),
        out: Vec::new(),
        want_write: false,
        got: 0,
        mask: (k.wrapping_mul(0x9E37_79B9) ^ 0x5A5A_A5A5).to_be_bytes(),
    })
}

fn on_readable(
    c: &mut Conn,
    key: usize,
    plan: &Plan,
    subscribe: &str,
    buf: &mut [u8],
    state: &mut Progress,
    poller: &Poller,
) -> Result<(), String> {
    loop {
        let n = match c.stream.read(buf) {
            Ok(0) => {
                return Err(format!(
                    "client {key}: the server closed the connection after {} messages",
                    c.got
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("client {key}: read: {e} after {} messages", c.got)),
        };
        let data = &buf[..n];
        match &mut c.phase {
            Phase::Handshake(head) => {
                head.extend_from_slice(data);
                let Some(end) = find(head, b"\r\n\r\n") else {
                    if head.len() > 4096 {
                        return Err(format!("client {key}: response head too long"));
                    }
                    continue;
                };
                let rest = head.split_off(end + 4);
                check_101(head).map_err(|e| format!("client {key}: {e}"))?;
                c.phase = Phase::Open;
                state.connecting -= 1;
                state.connected += 1;
                encode_frame(&mut c.out, OpCode::Text, subscribe.as_bytes(), Some(c.mask));
                flush(c, key, poller)?;
                frames(c, key, &rest, plan, state, poller)?;
            }
            Phase::Open => frames(c, key, data, plan, state, poller)?,
        }
    }
}

fn frames(
    c: &mut Conn,
    key: usize,
    mut input: &[u8],
    plan: &Plan,
    state: &mut Progress,
    poller: &Poller,
) -> Result<(), String> {
    while !input.is_empty() {
        let (used, outcome) = c.decoder.decode(input);
        input = &input[used..];
        match outcome {
            Ok(None) => {}
            Ok(Some(Decoded::Text(text))) => {
                check_message(&text, c.got, plan.messages)
                    .map_err(|e| format!("client {key}: message {}: {e}", c.got))?;
                c.got += 1;
                state.received += 1;
                if c.got == plan.messages {
                    state.done += 1;
                }
            }
            Ok(Some(Decoded::Ping(payload))) => {
                encode_frame(&mut c.out, OpCode::Pong, &payload, Some(c.mask));
                flush(c, key, poller)?;
            }
            Ok(Some(Decoded::Close(code))) => {
                return Err(format!(
                    "client {key}: server sent close {code:?} after {} messages",
                    c.got
                ))
            }
            Ok(Some(other)) => {
                return Err(format!("client {key}: unexpected frame {other:?}"));
            }
            Err(v) => return Err(format!("client {key}: bad frame from server: {v}")),
        }
    }
    Ok(())
}

/// The n-th message must be `{"type":"m",...,"data":n,...}`; checked on the
/// bytes (no JSON parse: a million of them in a debug build add up).
fn check_message(text: &str, n: usize, messages: usize) -> Result<(), String> {
    if n >= messages {
        return Err(format!("one message too many: {text}"));
    }
    if !text.starts_with(r#"{"type":"m","#) || !text.contains(&format!(r#","data":{n},"#)) {
        return Err(format!("expected data {n}, got {text}"));
    }
    Ok(())
}

fn check_101(head: &[u8]) -> Result<(), String> {
    let head = std::str::from_utf8(head).map_err(|_| "response head not UTF-8".to_string())?;
    if !head.starts_with("HTTP/1.1 101 ") {
        return Err(format!(
            "expected 101, got {:?}",
            head.lines().next().unwrap_or("")
        ));
    }
    match header(head, "sec-websocket-accept") {
        Some(v) if v == ACCEPT => Ok(()),
        v => Err(format!("bad Sec-WebSocket-Accept {v:?}")),
    }
}

/// A header's value from a response head (name case-insensitive).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn flush(c: &mut Conn, key: usize, poller: &Poller) -> Result<(), String> {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return Err(format!("client {key}: write returned 0")),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("client {key}: write: {e}")),
        }
    }
    let want = !c.out.is_empty();
    if want != c.want_write {
        let interest = if want {
            Event::all(key)
        } else {
            Event::readable(key)
        };
        poller
            .modify_with_mode(&c.stream, interest, PollMode::Level)
            .map_err(|e| format!("client {key}: poller modify: {e}"))?;
        c.want_write = want;
    }
    Ok(())
}
