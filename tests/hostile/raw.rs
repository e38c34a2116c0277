//! The hostile side: a raw `TcpStream` with hand-built frames, and the
//! process measurements (RSS, descriptors, threads) the cases compare.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const FIN: u8 = 0x80;
pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// How long a raw read waits before a case fails.
pub const READ_WAIT: Duration = Duration::from_secs(5);

/// A frame with first byte `b0` (FIN, RSV bits, opcode as given) and a
/// minimally encoded length; masked with [`MASK`] unless `mask` is None.
pub fn frame_with(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(b0);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n @ 126..=0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame.
pub fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(b0, payload, Some(MASK))
}

/// A masked final text frame.
pub fn text(s: &str) -> Vec<u8> {
    frame(FIN | TEXT, s.as_bytes())
}

/// Only the header of a masked frame announcing `len` bytes with the 64-bit
/// length form (the payload never follows).
pub fn header_announcing(b0: u8, len: u64) -> Vec<u8> {
    let mut out = vec![b0, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&MASK);
    out
}

/// A complete, valid upgrade request for `/ws`.
pub fn upgrade_request(extra_headers: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: hub.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame (None for an empty close).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.opcode, TEXT, "not a text frame: {self:?}");
        serde_json::from_slice(&self.payload).expect("server text is JSON")
    }
}

/// How a read ended without data.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Orderly EOF (the server's FIN).
    Eof,
    /// Reset or another error: the server's socket is gone.
    Reset,
    /// Nothing within the wait.
    Timeout,
}

/// A raw client connection.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// TCP only; nothing written yet.
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_WAIT)).unwrap();
        stream.set_write_timeout(Some(READ_WAIT)).unwrap();
        let _ = stream.set_nodelay(true);
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes a WebSocket upgrade by hand (asserts the 101).
    pub fn upgrade(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr);
        raw.send(upgrade_request("").as_bytes());
        let (status, head) = raw.read_head().expect("a response to the upgrade");
        assert_eq!(status, 101, "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        raw
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Writes, reporting whether the server still takes bytes.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads more bytes into the buffer; the end if none come.
    fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(End::Timeout);
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(0) => Err(End::Eof),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Ok(())
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    Err(End::Timeout)
                }
                Err(_) => Err(End::Reset),
            };
        }
    }

    /// Reads an HTTP response head: its status and the head's text.
    pub fn read_head(&mut self) -> Result<(u16, String), End> {
        let deadline = Instant::now() + READ_WAIT;
        loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..at + 4).collect();
                let head = String::from_utf8(head).expect("an ASCII response head");
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no status in {head:?}"));
                assert!(head.starts_with("HTTP/1.1 "), "{head}");
                return Ok((status, head));
            }
            self.fill(deadline)?;
        }
    }

    /// Reads a refusal: status, head and body, and asserts the server then
    /// closes the connection.
    pub fn read_refusal(&mut self) -> (u16, String) {
        let (status, head) = self.read_head().expect("an HTTP refusal");
        assert!(
            !head.to_ascii_lowercase().contains("sec-websocket-accept"),
            "a refusal carries no upgrade headers: {head}"
        );
        assert!(head.contains("Connection: close"), "{head}");
        let end = self.read_to_end(READ_WAIT);
        assert_ne!(end, End::Timeout, "the server closes after a refusal");
        (status, head)
    }

    /// Discards what arrives until the connection ends (or the wait runs out).
    pub fn read_to_end(&mut self, wait: Duration) -> End {
        let deadline = Instant::now() + wait;
        loop {
            self.buf.clear();
            if let Err(end) = self.fill(deadline) {
                return end;
            }
        }
    }

    /// The next frame from the server (server frames are never masked).
    pub fn next_frame(&mut self) -> Result<Frame, End> {
        let deadline = Instant::now() + READ_WAIT;
        loop {
            if let Some(f) = self.parse_frame() {
                return Ok(f);
            }
            self.fill(deadline)?;
        }
    }

    fn parse_frame(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "server frames are unmasked");
        let (len, at) = match b[1] & 0x7F {
            126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b.get(2..10)?);
                (u64::from_be_bytes(be) as usize, 10)
            }
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return None;
        }
        let f = Frame {
            fin: b[0] & FIN != 0,
            opcode: b[0] & 0x0F,
            payload: b[at..at + len].to_vec(),
        };
        assert_eq!(b[0] & 0x70, 0, "server frames set no reserved bits");
        self.buf.drain(..at + len);
        Some(f)
    }

    /// The next text frame as JSON, skipping pings.
    pub fn next_json(&mut self) -> serde_json::Value {
        loop {
            let f = self.next_frame().expect("a message from the server");
            match f.opcode {
                TEXT => return f.json(),
                PING => {}
                _ => panic!("expected a text frame, got {f:?}"),
            }
        }
    }

    /// Reads until the server's close frame (skipping its pings, failing on
    /// any data frame) and returns its code; then asserts the server ends the
    /// TCP connection.
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            let f = self.next_frame().expect("a close frame from the server");
            match f.opcode {
                CLOSE => {
                    let code = f.close_code();
                    let end = self.read_to_end(READ_WAIT);
                    assert_ne!(end, End::Timeout, "the server closes the TCP connection");
                    return code;
                }
                PING | PONG => {}
                _ => panic!("expected a close frame, got {f:?}"),
            }
        }
    }
}

fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
}

/// The process's resident set, in KiB.
pub fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

/// The process's thread count.
pub fn threads() -> u64 {
    status_field("Threads:")
}

/// The process's open descriptors.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
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
