//! The client's fuzz check: a [`Client`] driven by connect outcomes, server
//! bytes, application commands and time steps, all chosen by the input.

use std::time::{Duration, Instant};

use wshub_core::backoff::{BackoffPolicy, Jitter, MAX_FLOOR};
use wshub_core::client::{
    Client, ClientConfig, ClientEvent, ClientState, Endpoint, TokenPlacement,
};
use wshub_core::frame::{self, FrameDecoder, OpCode, Role};
use wshub_core::handshake::accept_key;
use wshub_core::request::Secret;

use crate::input::ByteCursor;

/// The token the fuzzing harness configures; it must never surface.
const FUZZ_TOKEN: &str = "fuzz-s3cr3t-t0ken";

/// The fuzz harness's view of the driver's socket.
#[derive(Default)]
struct FuzzSocket {
    /// A `Connect` is outstanding (not ended by `CloseSocket` or
    /// `handle_connect_failed`).
    open: bool,
    connected: bool,
    /// The harness has answered the request with a 101.
    answered: bool,
    /// Client bytes on this socket: the request, then frames.
    sent: Vec<u8>,
}

/// Fuzzing entry point: drives a [`Client`] with connect outcomes, server
/// bytes, application commands and time steps all chosen by `data`, and
/// checks invariants after every step:
///
/// - no panic, whatever the server sends;
/// - at most one socket at a time, and every `Connect` names a configured
///   endpoint;
/// - every frame the client writes is a valid masked client frame;
/// - a scheduled retry is never further away than the policy's `max`, except
///   under a `Retry-After` floor the harness sent;
/// - after [`ClientEvent::AuthFailed`], no `Connect` until the harness calls
///   [`Client::start`] again;
/// - the token never appears in the `Debug` output of an event, the state or
///   the client;
/// - `poll_timeout` is never before the current time.
///
/// # Panics
///
/// On any violation; that is its purpose.
///
/// `base` anchors the virtual clock (the caller reads it: `Instant` has no
/// other constructor, and the core never reads a clock). Only offsets from it
/// are used, so the outcome does not depend on its value.
pub fn check_client_bytes(base: Instant, data: &[u8]) {
    check_client_bytes_from(base, data);
}

/// How far one harness run got, so tests can tell whether random inputs
/// reach the interesting states at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FuzzReach {
    connects: usize,
    opened: usize,
    messages: usize,
    auth_failed: usize,
    gave_up: usize,
    disconnected: usize,
}

fn check_client_bytes_from(base: Instant, data: &[u8]) -> FuzzReach {
    let mut input = ByteCursor::new(data);
    let flags = input.byte();
    let jitter = match flags % 3 {
        0 => Jitter::None,
        1 => Jitter::Full,
        _ => Jitter::Equal,
    };
    let policy = BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        max_retries: (flags & 0x04 != 0).then_some(u32::from(flags >> 5)),
        jitter,
        reset_after: Duration::from_secs(10),
    };
    let placement = if flags & 0x08 != 0 {
        TokenPlacement::Bearer
    } else {
        TokenPlacement::Query("token".to_owned())
    };
    let endpoints = [
        "ws://a.test:81/ws",
        "ws://b.test/ws?room=1",
        "wss://[::1]/x",
    ]
    .iter()
    .filter_map(|u| Endpoint::parse(u).ok())
    .take(1 + usize::from(flags >> 4) % 3)
    .collect();
    let mut cfg = ClientConfig::new(endpoints);
    cfg.backoff = policy.clone();
    cfg.token = Some((Secret::new(FUZZ_TOKEN), placement));
    cfg.subprotocols = vec!["wshub.v1".to_owned()];
    cfg.ping_interval = Duration::from_secs(2);
    cfg.dead_timeout = Duration::from_secs(5);
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.ack_timeout = Duration::from_secs(1);
    cfg.close_timeout = Duration::from_secs(1);
    cfg.max_message_size = 512;
    cfg.max_response_bytes = 1024;
    cfg.offline_queue = usize::from(flags & 0x03);
    let endpoint_count = cfg.endpoints.len();
    let seed = u64::from(input.byte()) << 8 | u64::from(input.byte());
    let Ok(mut client) = Client::new(cfg, base, seed) else {
        panic!("the harness config must be valid");
    };

    let mut now = base;
    let mut socket = FuzzSocket::default();
    let mut auth_refused = false;
    // The largest Retry-After the harness sent, as Backoff would cap it.
    let mut floor_sent = Duration::ZERO;
    let mut reach = FuzzReach::default();
    client.start(now);
    let mut check = Checks {
        socket: &mut socket,
        auth_refused: &mut auth_refused,
        endpoint_count,
        reach: &mut reach,
    };
    settle(&mut client, now, &mut check);

    while !input.is_empty() {
        // The low nibble picks the operation, the high one is its flags.
        let op = input.byte();
        match op & 0x0f {
            0 => {
                if socket.open && !socket.connected {
                    socket.connected = true;
                    client.handle_connected(now);
                }
            }
            1 => {
                if socket.open && !socket.connected {
                    socket.open = false;
                    client.handle_connect_failed(now);
                }
            }
            2 => {
                // A valid 101 for the key in the request, maybe followed by
                // arbitrary bytes. Once per socket: a second one is just
                // garbage, which op 4 covers.
                let extra = usize::from(input.byte() & 0x1f);
                let mut bytes = fuzz_switching_protocols(&socket.sent, op & 0x10 != 0);
                bytes.extend(input.bytes(extra));
                let how = input.byte();
                if socket.connected && !socket.answered {
                    socket.answered = true;
                    feed_split(&mut client, now, &bytes, how);
                }
            }
            3 => {
                let status =
                    [401, 403, 503, 429, 500, 404, 302, 200][usize::from(input.byte() % 8)];
                let mut head = format!("HTTP/1.1 {status} X\r\n");
                if op & 0x10 != 0 {
                    let secs = u64::from(input.byte()) * 50;
                    floor_sent = floor_sent.max(Duration::from_secs(secs).min(MAX_FLOOR));
                    head.push_str(&format!("Retry-After: {secs}\r\n"));
                }
                head.push_str("\r\n");
                feed_split(&mut client, now, head.as_bytes(), input.byte());
            }
            4 => {
                let n = usize::from(input.byte());
                let bytes = input.bytes(n);
                feed_split(&mut client, now, bytes, input.byte());
            }
            5 => {
                let frame = fuzz_server_frame(&mut input);
                feed_split(&mut client, now, &frame, input.byte());
            }
            6 => client.handle_eof(now),
            7 => client.handle_io_error(now),
            8 | 9 => {
                let ms = u64::from(input.byte()) << 6 | u64::from(op >> 4);
                now += Duration::from_millis(ms * u64::from((op & 0x0f) - 7));
                client.handle_timeout(now);
            }
            10 => {
                let channel = format!("ch{}", input.byte() % 4);
                match input.byte() % 8 {
                    0 | 1 => {
                        client.subscribe(now, &channel);
                    }
                    2 => {
                        client.unsubscribe(now, &channel);
                    }
                    3 | 4 => {
                        let _ = client.send(now, &serde_json::json!({"type": "x", "n": op}));
                    }
                    5 => {
                        let n = usize::from(input.byte()) * 4;
                        let _ = client.send_binary(now, &vec![op; n]);
                    }
                    6 => client.close(now),
                    _ => {
                        // Only an explicit start may connect after a refusal.
                        auth_refused = false;
                        client.start(now);
                    }
                }
            }
            _ => {
                // The state must stay readable and within the policy's bounds.
                if let ClientState::Disconnected {
                    next_attempt: Some(at),
                } = client.state()
                {
                    let wait = at.saturating_duration_since(now);
                    assert!(
                        wait <= policy.max.max(floor_sent),
                        "retry in {wait:?}, beyond max {:?} and floor {floor_sent:?}",
                        policy.max
                    );
                }
            }
        }
        let mut check = Checks {
            socket: &mut socket,
            auth_refused: &mut auth_refused,
            endpoint_count,
            reach: &mut reach,
        };
        settle(&mut client, now, &mut check);
        if let ClientState::Disconnected {
            next_attempt: Some(at),
        } = client.state()
        {
            let wait = at.saturating_duration_since(now);
            assert!(
                wait <= policy.max.max(floor_sent),
                "retry in {wait:?}, beyond max {:?} and floor {floor_sent:?}",
                policy.max
            );
        }
    }
    // Let every timer run out: retries, pings, timeouts. Bounded, since a
    // client with unlimited retries never stops on its own.
    for _ in 0..64 {
        let Some(t) = client.poll_timeout() else {
            break;
        };
        now = now.max(t);
        client.handle_timeout(now);
        let mut check = Checks {
            socket: &mut socket,
            auth_refused: &mut auth_refused,
            endpoint_count,
            reach: &mut reach,
        };
        settle(&mut client, now, &mut check);
    }
    reach
}

/// What `settle` checks against and records into.
struct Checks<'a> {
    socket: &'a mut FuzzSocket,
    auth_refused: &'a mut bool,
    endpoint_count: usize,
    reach: &'a mut FuzzReach,
}

/// Drains the client's outputs as a driver would (every connect stays
/// pending: the fuzz input decides its outcome) and checks the invariants.
fn settle(client: &mut Client, now: Instant, check: &mut Checks<'_>) {
    let Checks {
        socket,
        auth_refused,
        endpoint_count,
        reach,
    } = check;
    let endpoint_count = *endpoint_count;
    for _ in 0..1000 {
        let mut progressed = false;
        while let Some(bytes) = client.poll_transmit() {
            progressed = true;
            assert!(socket.connected, "bytes for a socket that is not connected");
            socket.sent.extend_from_slice(&bytes);
        }
        while let Some(event) = client.poll_event() {
            progressed = true;
            // Payloads are the server's own bytes (a fuzzer learns the token
            // from this very comparison and echoes it): only the client's
            // own words must never show it.
            let from_server = matches!(
                event,
                ClientEvent::Message(_) | ClientEvent::Text(_) | ClientEvent::Binary(_)
            );
            let shown = format!("{event:?}");
            assert!(
                from_server || !shown.contains(FUZZ_TOKEN),
                "token in an event: {shown}"
            );
            match event {
                ClientEvent::Connect { endpoint_index, .. } => {
                    reach.connects += 1;
                    assert!(!**auth_refused, "Connect after an auth refusal");
                    assert!(!socket.open, "a second socket while one is open");
                    assert!(endpoint_index < endpoint_count, "unknown endpoint");
                    **socket = FuzzSocket {
                        open: true,
                        ..FuzzSocket::default()
                    };
                }
                ClientEvent::CloseSocket => {
                    assert!(socket.open, "CloseSocket without a socket");
                    check_client_frames(&socket.sent);
                    **socket = FuzzSocket::default();
                }
                ClientEvent::AuthFailed { status, .. } => {
                    assert!(status == 401 || status == 403);
                    **auth_refused = true;
                    reach.auth_failed += 1;
                }
                ClientEvent::Connected { .. } | ClientEvent::Reconnected { .. } => {
                    reach.opened += 1;
                }
                ClientEvent::Message(_) | ClientEvent::Text(_) | ClientEvent::Binary(_) => {
                    reach.messages += 1;
                }
                ClientEvent::GaveUp => reach.gave_up += 1,
                ClientEvent::Disconnected { .. } => reach.disconnected += 1,
                _ => {}
            }
        }
        if let Some(t) = client.poll_timeout() {
            if t <= now {
                client.handle_timeout(now);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    if socket.connected {
        check_client_frames(&socket.sent);
    }
    assert!(client.poll_timeout().is_none_or(|t| t >= now));
    let shown = format!("{client:?} {:?} {:?}", client.state(), client.config());
    assert!(!shown.contains(FUZZ_TOKEN), "token in Debug: {shown}");
}

/// The client's bytes on one socket: a request head, then masked frames that
/// a server-side decoder accepts.
fn check_client_frames(sent: &[u8]) {
    let Some(end) = sent.windows(4).position(|w| w == b"\r\n\r\n") else {
        assert!(sent.is_empty(), "client wrote a partial request");
        return;
    };
    let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
    let mut rest = sent.get(end + 4..).unwrap_or_default();
    while !rest.is_empty() {
        let (n, result) = decoder.decode(rest);
        rest = rest.get(n..).unwrap_or_default();
        match result {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(v) => panic!("client wrote an invalid frame: {v}"),
        }
    }
}

/// A 101 answering the request in `sent` (or a made-up key if none).
fn fuzz_switching_protocols(sent: &[u8], subprotocol: bool) -> Vec<u8> {
    let head = sent
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .and_then(|end| sent.get(..end));
    let key = head
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        })
        .unwrap_or("dGhlIHNhbXBsZSBub25jZQ==");
    let mut r = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if subprotocol {
        r.push_str("Sec-WebSocket-Protocol: wshub.v1\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// One unmasked server frame chosen by the input.
fn fuzz_server_frame(input: &mut ByteCursor<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let pick = input.byte();
    let id = input.byte() % 8;
    match pick % 8 {
        0 => {
            let text = format!(r#"{{"type":"ack","id":"sub-{id}"}}"#);
            frame::encode_frame(&mut out, OpCode::Text, text.as_bytes(), None);
        }
        1 => {
            let text = format!(
                r#"{{"type":"error","id":"sub-{id}","data":{{"code":"forbidden","message":"no"}}}}"#
            );
            frame::encode_frame(&mut out, OpCode::Text, text.as_bytes(), None);
        }
        2 => {
            let text = "{\"type\":\"event\",\"channel\":\"ch1\",\"data\":1}\n{\"type\":\"pong\"}";
            frame::encode_frame(&mut out, OpCode::Text, text.as_bytes(), None);
        }
        3 => {
            let n = usize::from(input.byte() % 126);
            frame::encode_frame(&mut out, OpCode::Ping, input.bytes(n), None);
        }
        4 => {
            let code = [1000, 1001, 1011, 1013, 4000][usize::from(id % 5)];
            out = frame::close_frame(code, "bye", None);
        }
        5 => frame::encode_frame(&mut out, OpCode::Close, &[], None),
        6 => {
            let n = usize::from(input.byte()) * 4;
            frame::encode_frame(&mut out, OpCode::Binary, input.bytes(n), None);
        }
        _ => {
            let n = usize::from(input.byte());
            frame::encode_frame(&mut out, OpCode::Text, input.bytes(n), None);
        }
    }
    out
}

/// Feeds `bytes` in pieces whose sizes come from `how` (0 = one piece).
fn feed_split(client: &mut Client, now: Instant, bytes: &[u8], how: u8) {
    let piece = match how % 4 {
        0 => bytes.len().max(1),
        1 => 1,
        _ => usize::from(how / 4) + 1,
    };
    for chunk in bytes.chunks(piece) {
        client.handle_read(now, chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wshub_core::backoff::SplitMix64;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn fuzz_entry_survives_fixed_inputs() {
        let base = t0();
        check_client_bytes(base, &[]);
        check_client_bytes(base, &[0xff; 64]);
        check_client_bytes_from(base, &[0; 64]);
        // Connect, 101, some frames, a close, time passing.
        check_client_bytes_from(
            base,
            &[1, 0, 0, 0, 2, 0, 0, 5, 2, 1, 0, 5, 4, 3, 0, 8, 200, 9, 255],
        );
        // 401 on the first endpoint, then minutes of time.
        let mut auth = vec![0x30, 0, 0, 0, 3, 0, 0];
        auth.extend([8, 255].repeat(40));
        let reach = check_client_bytes_from(base, &auth);
        assert_eq!((reach.connects, reach.auth_failed), (1, 1), "{reach:?}");
    }

    /// Harness input made of whole operations with exactly the argument
    /// bytes each one reads: a connect, a 101, then frames, time steps,
    /// commands and the odd failure.
    fn structured_ops(rng: &mut SplitMix64) -> Vec<u8> {
        let mut r = || rng.next_u64() as u8;
        let mut out = vec![r(), r(), r()];
        for _ in 0..(r() % 40) {
            match r() % 10 {
                // Connected, then a 101 with no extra bytes, split somehow.
                0 | 1 => out.extend([0, 2 | (r() & 0x10), 0, r()]),
                2 | 3 => {
                    let pick = r() % 8;
                    out.extend([5, pick, r()]);
                    if matches!(pick, 3 | 6 | 7) {
                        let n = r() % 6;
                        out.push(n);
                        for _ in 0..(if pick == 6 { 4 * n } else { n }) {
                            out.push(r());
                        }
                    }
                    out.push(r()); // how to split
                }
                4 => {
                    let what = r();
                    out.extend([10, r(), what]);
                    if what % 8 == 5 {
                        out.push(r() % 4);
                    }
                }
                5 => out.extend([8 | (r() & 0xf0), r() % 40]),
                6 => {
                    // Connected, then a status instead of a 101.
                    let flag = r() & 0x10;
                    out.extend([0, 3 | flag, r()]);
                    if flag != 0 {
                        out.push(r());
                    }
                    out.push(r());
                }
                7 => out.push(1),
                8 => out.push(6 + r() % 2),
                _ => out.extend([4, 3, r(), r(), r(), 0]),
            }
        }
        out
    }

    #[test]
    fn fuzz_entry_survives_random_inputs() {
        let base = t0();
        let mut rng = SplitMix64::new(4);
        let mut total = FuzzReach::default();
        for round in 0..400 {
            // Half raw bytes, half well-formed operations, so that runs get
            // past the handshake and frames are exercised too.
            let data = if round % 2 == 0 {
                let len = (rng.next_u64() % 400) as usize;
                (0..len).map(|_| rng.next_u64() as u8).collect()
            } else {
                structured_ops(&mut rng)
            };
            let r = check_client_bytes_from(base, &data);
            total.connects += r.connects;
            total.opened += r.opened;
            total.messages += r.messages;
            total.auth_failed += r.auth_failed;
            total.gave_up += r.gave_up;
            total.disconnected += r.disconnected;
        }
        // A harness that never gets past the handshake would prove little.
        assert!(total.opened > 50, "{total:?}");
        assert!(total.messages > 20, "{total:?}");
        assert!(total.disconnected > 20, "{total:?}");
        assert!(total.auth_failed > 5, "{total:?}");
        assert!(total.gave_up > 0, "{total:?}");
    }
}
