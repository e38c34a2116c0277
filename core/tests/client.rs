//! The reconnecting client under fake time: the upgrade request, response
//! validation, the backoff schedule, failover, auth fast-fail, resubscription
//! against the real hub, server-requested delays, the dead-server timeout and
//! the offline queue.

mod client_net;
mod client_script;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use client_net::Net;
use client_script::{cfg, secs, switching, t0, Dial, Drv};
use quickcheck::{QuickCheck, TestResult};
use serde_json::{json, Value};
use wshub_core::auth::{AuthFailure, BearerAuth};
use wshub_core::backoff::{BackoffPolicy, Jitter};
use wshub_core::client::{
    Client, ClientEvent, ClientState, DisconnectReason, Endpoint, SendError, TokenPlacement,
};
use wshub_core::frame::{close_frame, encode_frame, Decoded, OpCode};
use wshub_core::handshake::accept_key;
use wshub_core::request::{PeerInfo, UpgradeRequest};
use wshub_core::{ChannelPolicy, HubConfig, Identity, Secret};

const TOKEN: &str = "tok-s3cr3t+/=";

fn header<'a>(req: &'a httparse::Request<'_, '_>, name: &str) -> Vec<&'a str> {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| std::str::from_utf8(h.value).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// The upgrade request
// ---------------------------------------------------------------------------

#[test]
fn request_carries_the_upgrade_headers_and_a_bearer_token() {
    let mut c = cfg(1);
    c.endpoints = vec![Endpoint::parse("ws://example.com:8080/ws?room=1").unwrap()];
    c.subprotocols = vec!["wshub.v1".into(), "json".into()];
    c.headers = vec![
        ("X-Tenant".into(), "t1".into()),
        ("Origin".into(), "https://app".into()),
    ];
    c.token = Some((Secret::new(TOKEN), TokenPlacement::Bearer));
    let mut d = Drv::new(c);
    d.start();
    d.connect_tcp();

    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    let n = match req.parse(&d.sent).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("partial request"),
    };
    assert_eq!(n, d.sent.len(), "nothing but the request before the 101");
    assert_eq!(req.method, Some("GET"));
    assert_eq!(req.path, Some("/ws?room=1"));
    assert_eq!(req.version, Some(1));
    assert_eq!(header(&req, "host"), ["example.com:8080"]);
    assert_eq!(header(&req, "upgrade"), ["websocket"]);
    assert_eq!(header(&req, "connection"), ["Upgrade"]);
    assert_eq!(header(&req, "sec-websocket-version"), ["13"]);
    assert_eq!(header(&req, "sec-websocket-protocol"), ["wshub.v1, json"]);
    assert_eq!(header(&req, "authorization"), [format!("Bearer {TOKEN}")]);
    assert_eq!(header(&req, "x-tenant"), ["t1"]);
    assert_eq!(header(&req, "origin"), ["https://app"]);
    let key = header(&req, "sec-websocket-key")[0];
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    assert_eq!(raw.len(), 16, "the key is 16 random bytes");

    // The hub's own parser accepts it and finds the bearer token.
    let r = UpgradeRequest::new(
        req.path.unwrap(),
        req.headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect(),
        PeerInfo::default(),
    );
    assert_eq!(wshub_core::auth::bearer_token(&r).unwrap().expose(), TOKEN);
}

#[test]
fn query_token_is_appended_percent_encoded_and_no_header_is_sent() {
    let mut c = cfg(2);
    c.endpoints[0] = Endpoint::parse("ws://h.test/ws?room=1").unwrap();
    c.token = Some((Secret::new(TOKEN), TokenPlacement::Query("token".into())));
    let mut d = Drv::new(c).dialing(|i| if i == 0 { Dial::Fail } else { Dial::Hold });
    d.start();
    // Endpoint 1 has no query yet: `?` instead of `&`.
    d.connect_tcp();
    let head = d.request_head().to_owned();
    let target = head.lines().next().unwrap();
    assert_eq!(target, "GET /ws?token=tok-s3cr3t%2B%2F%3D HTTP/1.1");
    assert!(!head.to_ascii_lowercase().contains("authorization"));

    let mut d = Drv::new(cfg(1));
    d.c.set_token(Some((
        Secret::new("a b"),
        TokenPlacement::Query("t".into()),
    )))
    .unwrap();
    d.start();
    d.connect_tcp();
    let line = d.request_head().lines().next().unwrap().to_owned();
    let path = line.split(' ').nth(1).unwrap();
    let r = UpgradeRequest::new(path, Vec::new(), PeerInfo::default());
    // The hub's decoder gets the token back exactly.
    assert_eq!(r.query_param("t").as_deref(), Some("a b"));

    // With a query already present, the token joins it.
    let mut c = cfg(1);
    c.endpoints[0] = Endpoint::parse("ws://h.test/ws?room=1").unwrap();
    c.token = Some((Secret::new("x"), TokenPlacement::Query("token".into())));
    let mut d = Drv::new(c);
    d.start();
    d.connect_tcp();
    assert!(d
        .request_head()
        .starts_with("GET /ws?room=1&token=x HTTP/1.1\r\n"));
}

#[test]
fn keys_are_fresh_per_connection_and_reproducible_from_the_seed() {
    let keys = |seed| {
        let base = t0();
        let mut d = Drv::with_seed(cfg(1), seed, base).dialing(|_| Dial::Hold);
        d.start();
        d.connect_tcp();
        let first = d.key();
        d.c.handle_eof(d.now);
        d.pump();
        d.advance(secs(2));
        d.connect_tcp();
        (first, d.key())
    };
    let (a1, a2) = keys(1);
    assert_ne!(a1, a2, "every handshake has its own key");
    assert_eq!(keys(1), (a1.clone(), a2), "same seed, same keys");
    assert_ne!(keys(2).0, a1, "another seed, another key");
}

#[test]
fn host_header_omits_default_ports_and_brackets_ipv6() {
    for (url, host) in [
        ("ws://h.test/ws", "h.test"),
        ("ws://h.test:80/ws", "h.test"),
        ("wss://h.test:443/ws", "h.test"),
        ("wss://h.test:80/ws", "h.test:80"),
        ("ws://[::1]:9000/ws", "[::1]:9000"),
    ] {
        let mut c = cfg(1);
        c.endpoints = vec![Endpoint::parse(url).unwrap()];
        let mut d = Drv::new(c);
        d.start();
        d.connect_tcp();
        assert!(
            d.request_head().contains(&format!("\r\nHost: {host}\r\n")),
            "{url}: {}",
            d.request_head()
        );
    }
}

#[test]
fn the_token_never_shows_in_debug_events_or_errors() {
    let mut c = cfg(2);
    c.token = Some((Secret::new(TOKEN), TokenPlacement::Bearer));
    c.headers = vec![("X-Api-Key".into(), format!("{TOKEN}-header"))];
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("X-Api-Key"), "header names stay visible");

    let mut d = Drv::new(c);
    d.start();
    d.connect_tcp();
    assert!(format!("{:?}", d.c).find("s3cr3t").is_none());
    d.feed(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    let all = format!("{:?} {:?} {:?}", d.log, d.c, d.c.state());
    assert!(!all.contains("s3cr3t"), "{all}");

    // Query placement too, and the config error for a bad token.
    let mut c = cfg(1);
    c.token = Some((Secret::new(TOKEN), TokenPlacement::Query("token".into())));
    let mut d = Drv::new(c);
    d.start();
    d.connect_tcp();
    let all = format!("{:?} {:?}", d.log, d.c);
    assert!(!all.contains("s3cr3t"), "{all}");
    let err =
        d.c.set_token(Some((
            Secret::new("s3cr3t with space"),
            TokenPlacement::Bearer,
        )))
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("s3cr3t"));
}

// ---------------------------------------------------------------------------
// The response
// ---------------------------------------------------------------------------

#[test]
fn invalid_responses_fail_over_to_the_next_endpoint() {
    let ok_accept = |key: &str| format!("Sec-WebSocket-Accept: {}\r\n", accept_key(key));
    type Build = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Build, DisconnectReason)> = vec![
        (
            "wrong accept key",
            Box::new(|_| {
                "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                    .to_owned()
            }),
            DisconnectReason::BadResponse("Sec-WebSocket-Accept does not match the key"),
        ),
        (
            "no accept key",
            Box::new(|_| {
                "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_owned()
            }),
            DisconnectReason::BadResponse("Sec-WebSocket-Accept does not match the key"),
        ),
        (
            "two accept keys",
            Box::new(move |k| {
                format!(
                    "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{a}{a}\r\n",
                    a = ok_accept(k)
                )
            }),
            DisconnectReason::BadResponse("Sec-WebSocket-Accept does not match the key"),
        ),
        (
            "missing Upgrade",
            Box::new(move |k| {
                format!(
                    "HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n{}\r\n",
                    ok_accept(k)
                )
            }),
            DisconnectReason::BadResponse("no Upgrade: websocket"),
        ),
        (
            "Upgrade to something else",
            Box::new(move |k| {
                format!(
                    "HTTP/1.1 101 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n{}\r\n",
                    ok_accept(k)
                )
            }),
            DisconnectReason::BadResponse("no Upgrade: websocket"),
        ),
        (
            "Connection without upgrade",
            Box::new(move |k| {
                format!(
                    "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n{}\r\n",
                    ok_accept(k)
                )
            }),
            DisconnectReason::BadResponse("no Connection: upgrade"),
        ),
        (
            "HTTP/1.0",
            Box::new(move |k| {
                format!(
                    "HTTP/1.0 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{}\r\n",
                    ok_accept(k)
                )
            }),
            DisconnectReason::BadResponse("not HTTP/1.1"),
        ),
        (
            "a subprotocol we did not offer",
            Box::new(move |k| {
                format!(
                    "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{}\
                     Sec-WebSocket-Protocol: chat\r\n\r\n",
                    ok_accept(k)
                )
            }),
            DisconnectReason::BadResponse("subprotocol not offered"),
        ),
        (
            "an extension we did not offer",
            Box::new(move |k| {
                format!(
                    "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{}\
                     Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                    ok_accept(k)
                )
            }),
            DisconnectReason::BadResponse("extension not offered"),
        ),
        (
            "not HTTP",
            Box::new(|_| "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned()),
            DisconnectReason::BadResponse("malformed HTTP"),
        ),
        (
            "a 500",
            Box::new(|_| "HTTP/1.1 500 Internal Server Error\r\n\r\n".to_owned()),
            DisconnectReason::Status(500),
        ),
        (
            "a 404",
            Box::new(|_| "HTTP/1.1 404 Not Found\r\n\r\n".to_owned()),
            DisconnectReason::Status(404),
        ),
        (
            "a redirect",
            Box::new(|_| "HTTP/1.1 302 Found\r\nLocation: ws://x/\r\n\r\n".to_owned()),
            DisconnectReason::Status(302),
        ),
        (
            "a 200",
            Box::new(|_| "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned()),
            DisconnectReason::Status(200),
        ),
        (
            "a head over the size limit",
            Box::new(|_| format!("HTTP/1.1 101 OK\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000))),
            DisconnectReason::ResponseTooLarge,
        ),
    ];
    for (what, build, reason) in cases {
        for split in [false, true] {
            let mut d = Drv::new(cfg(2)).dialing(|_| Dial::Hold);
            d.start();
            d.connect_tcp();
            let response = build(&d.key());
            if split {
                for b in response.as_bytes() {
                    d.c.handle_read(d.now, std::slice::from_ref(b));
                }
                d.pump();
            } else {
                d.feed(response.as_bytes());
            }
            let events = d.events();
            let want = [
                &ClientEvent::CloseSocket,
                &ClientEvent::ConnectFailed {
                    endpoint_index: 0,
                    reason: reason.clone(),
                },
            ];
            assert_eq!(events[1..3], want, "{what} (split {split})");
            assert!(
                matches!(
                    events[3],
                    ClientEvent::Connect {
                        endpoint_index: 1,
                        ..
                    }
                ),
                "{what}: next endpoint at once, got {:?}",
                events[3]
            );
            assert_eq!(
                d.c.state(),
                ClientState::Connecting {
                    attempt: 2,
                    endpoint: 1
                }
            );
        }
    }
}

#[test]
fn the_101_may_come_in_any_split_with_frames_behind_it() {
    let mut c = cfg(1);
    c.subprotocols = vec!["a".into(), "wshub.v1".into()];
    let mut whole = None;
    for piece in [usize::MAX, 1, 7] {
        let mut d = Drv::new(c.clone());
        d.start();
        d.connect_tcp();
        let mut bytes = switching(&d.key(), "sec-websocket-protocol:  wshub.v1 \r\n");
        encode_frame(
            &mut bytes,
            OpCode::Text,
            br#"{"type":"event","channel":"c","data":{"x":1},"timestamp":"t"}"#,
            None,
        );
        encode_frame(&mut bytes, OpCode::Text, b"not json", None);
        for chunk in bytes.chunks(piece.min(bytes.len())) {
            d.c.handle_read(d.now, chunk);
        }
        d.pump();
        let events: Vec<ClientEvent> = d.log.iter().skip(1).map(|(_, e)| e.clone()).collect();
        assert_eq!(
            events[0],
            ClientEvent::Connected {
                endpoint_index: 0,
                subprotocol: Some("wshub.v1".into())
            }
        );
        let ClientEvent::Message(m) = &events[1] else {
            panic!("{events:?}");
        };
        assert_eq!(
            (m.kind.as_str(), m.channel.as_deref()),
            ("event", Some("c"))
        );
        assert_eq!(m.data, json!({"x": 1}));
        assert_eq!(events[2], ClientEvent::Text("not json".into()));
        match &whole {
            None => whole = Some(events),
            Some(w) => assert_eq!(w, &events, "split {piece} changed the outcome"),
        }
    }
}

// ---------------------------------------------------------------------------
// Backoff and failover
// ---------------------------------------------------------------------------

#[test]
fn exact_schedule_without_jitter_is_go_ws() {
    let mut d = Drv::new(cfg(1)).dialing(|_| Dial::Fail);
    d.start();
    d.advance(secs(200));
    assert_eq!(
        d.delays()[..9],
        [1, 2, 4, 8, 16, 30, 30, 30, 30].map(secs),
        "Connect instants {:?}",
        d.connects()
    );
    assert!(d.connects().iter().all(|&(_, e)| e == 0));
}

fn jittered_schedule(seed: u64, jitter: Jitter) -> Vec<Duration> {
    let mut c = cfg(1);
    c.backoff.jitter = jitter;
    let mut d = Drv::with_seed(c, seed, t0()).dialing(|_| Dial::Fail);
    d.start();
    d.advance(secs(300));
    d.delays()
}

#[test]
fn jittered_delays_stay_within_their_windows_and_replay_from_the_seed() {
    fn prop(seed: u64, equal: bool) -> TestResult {
        let jitter = if equal { Jitter::Equal } else { Jitter::Full };
        let policy = BackoffPolicy::default();
        let delays = jittered_schedule(seed, jitter);
        if delays.len() < 8 {
            return TestResult::error(format!("too few retries: {delays:?}"));
        }
        for (attempt, d) in delays.iter().enumerate() {
            let base = policy.base_delay(attempt as u32);
            let low = if equal { base / 2 } else { Duration::ZERO };
            if *d > base || *d < low {
                return TestResult::error(format!(
                    "retry {attempt}: {d:?} outside [{low:?}, {base:?}]"
                ));
            }
        }
        if jittered_schedule(seed, jitter) != delays {
            return TestResult::error("the same seed gave another schedule");
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(60)
        .quickcheck(prop as fn(u64, bool) -> TestResult);

    // And jitter does spread: different seeds, different first delays.
    let firsts: std::collections::BTreeSet<Duration> = (0..40)
        .map(|s| jittered_schedule(s, Jitter::Full)[0])
        .collect();
    assert!(firsts.len() > 35, "{firsts:?}");
}

#[test]
fn a_refused_connection_moves_to_the_next_endpoint_at_once() {
    let mut d = Drv::new(cfg(3)).dialing(|i| if i == 0 { Dial::Fail } else { Dial::Accept });
    d.start();
    assert_eq!(d.connects(), [(Duration::ZERO, 0), (Duration::ZERO, 1)]);
    assert_eq!(d.c.state(), ClientState::Connected { endpoint: 1 });
    assert!(d.events().contains(&&ClientEvent::Connected {
        endpoint_index: 1,
        subprotocol: None
    }));
    // No CloseSocket for a connect that failed: there was no socket.
    assert!(!d.events().contains(&&ClientEvent::CloseSocket));
}

#[test]
fn all_endpoints_down_waits_the_backoff_then_starts_over_from_the_first() {
    let mut d = Drv::new(cfg(2)).dialing(|_| Dial::Fail);
    d.start();
    assert_eq!(
        d.c.state(),
        ClientState::Disconnected {
            next_attempt: Some(d.now + secs(1))
        }
    );
    d.advance(secs(8));
    let z = Duration::ZERO;
    assert_eq!(
        d.connects(),
        [
            (z, 0),
            (z, 1),
            (secs(1), 0),
            (secs(1), 1),
            (secs(3), 0),
            (secs(3), 1),
            (secs(7), 0),
            (secs(7), 1)
        ]
    );
}

#[test]
fn the_retry_limit_ends_in_gave_up() {
    let mut c = cfg(2);
    c.backoff.max_retries = Some(2);
    c.offline_queue = 4;
    let mut d = Drv::new(c).dialing(|_| Dial::Fail);
    d.c.send(d.now, &json!({"type": "x"})).unwrap();
    d.start();
    d.advance(secs(3600));
    // The first walk plus two retries, over both endpoints.
    assert_eq!(d.connects().len(), 6, "{:?}", d.connects());
    assert_eq!(d.events().last(), Some(&&ClientEvent::GaveUp));
    assert_eq!(d.c.state(), ClientState::GivenUp);
    assert_eq!(d.c.poll_timeout(), None);
    assert_eq!(d.c.queued(), 0, "the offline queue is dropped");
    assert_eq!(d.c.send(d.now, &json!({})), Err(SendError::Closed));

    // Only the application starts it again, with a fresh schedule.
    d.clear_log();
    d.dial = Box::new(|_| Dial::Accept);
    d.start();
    assert!(matches!(
        d.events()[..],
        [ClientEvent::Connect { .. }, ClientEvent::Connected { .. }]
    ));
}

#[test]
fn the_connect_timeout_moves_on_whether_tcp_or_the_upgrade_hangs() {
    let mut c = cfg(2);
    c.connect_timeout = secs(5);
    let mut d = Drv::new(c).dialing(|_| Dial::Hold);
    d.start();
    d.advance(secs(5));
    // Endpoint 0 never connected; endpoint 1 connected but never answered.
    d.connect_tcp();
    d.advance(secs(5));
    let timeouts: Vec<_> = d
        .log
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                ClientEvent::ConnectFailed {
                    reason: DisconnectReason::ConnectTimeout,
                    ..
                }
            )
        })
        .map(|(t, _)| *t - d.start)
        .collect();
    assert_eq!(timeouts, [secs(5), secs(10)]);
    assert_eq!(d.connects(), [(secs(0), 0), (secs(5), 1)]);
    // Both sockets were dropped (the driver must cancel the pending connect).
    assert_eq!(
        d.events()
            .iter()
            .filter(|e| ***e == ClientEvent::CloseSocket)
            .count(),
        2
    );
    assert!(matches!(d.c.state(), ClientState::Disconnected { .. }));
}

// ---------------------------------------------------------------------------
// Auth fast-fail
// ---------------------------------------------------------------------------

#[test]
fn a_401_stops_the_walk_and_nothing_is_ever_tried_again() {
    for status in [401, 403] {
        let mut c = cfg(2);
        c.token = Some((Secret::new(TOKEN), TokenPlacement::Bearer));
        c.offline_queue = 8;
        let mut d = Drv::new(c).dialing(|_| Dial::Hold);
        d.c.send(d.now, &json!({"type": "x"})).unwrap();
        d.start();
        d.connect_tcp();
        d.feed(format!("HTTP/1.1 {status} No\r\nContent-Length: 3\r\n\r\nno\n").as_bytes());
        assert_eq!(
            d.events()[1..],
            [
                &ClientEvent::CloseSocket,
                &ClientEvent::AuthFailed {
                    endpoint_index: 0,
                    status
                }
            ]
        );
        assert_eq!(d.c.state(), ClientState::AuthFailed { status });
        assert_eq!(d.c.poll_timeout(), None);
        assert_eq!(d.c.queued(), 0);
        assert_eq!(d.c.send(d.now, &json!({})), Err(SendError::Closed));

        // An hour later (timeouts fired, reads and EOFs ignored): still nothing.
        d.c.handle_timeout(d.now + secs(3600));
        d.c.handle_eof(d.now + secs(3600));
        d.c.handle_connected(d.now + secs(3600));
        d.advance(secs(3600));
        assert_eq!(
            d.connects(),
            [(Duration::ZERO, 0)],
            "endpoint 1 was never tried"
        );
        assert_eq!(d.log.len(), 3);
    }
}

#[test]
fn a_401_from_a_real_hub_stops_the_walk() {
    let base = t0();
    let hub_cfg = HubConfig {
        authenticator: Arc::new(BearerAuth::new(|t| {
            if t.expose() == "good" {
                Ok(Identity::user("u"))
            } else {
                Err(AuthFailure::InvalidCredentials)
            }
        })),
        ..HubConfig::default()
    };
    let mut net = Net::new(hub_cfg, base);
    let mut c = cfg(3);
    c.token = Some((Secret::new("bad"), TokenPlacement::Bearer));
    let i = net.add(Client::new(c, base, 1).unwrap());
    net.peers[i].client.start(base);
    net.touch(i);
    net.run_for(secs(3600));
    let events: Vec<&ClientEvent> = net.peers[i].events.iter().map(|(_, e)| e).collect();
    let connects = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Connect { .. }))
        .count();
    assert_eq!(connects, 1, "{events:?}");
    assert!(events.contains(&&ClientEvent::AuthFailed {
        endpoint_index: 0,
        status: 401
    }));
    assert_eq!(net.hub.stats().connections, 0);

    // With the right token, an explicit restart connects.
    net.peers[i]
        .client
        .set_token(Some((Secret::new("good"), TokenPlacement::Bearer)))
        .unwrap();
    net.peers[i].client.start(net.now);
    net.touch(i);
    assert_eq!(
        net.peers[i].client.state(),
        ClientState::Connected { endpoint: 0 }
    );
    assert_eq!(net.hub.stats().connections, 1);
}

// ---------------------------------------------------------------------------
// Subscriptions, against the real hub
// ---------------------------------------------------------------------------

/// Refuses subscriptions to `secret`.
struct NoSecrets;

impl ChannelPolicy for NoSecrets {
    fn can_subscribe(&self, _who: &Identity, channel: &str) -> bool {
        channel != "secret"
    }
}

fn restored_events(
    events: &[(Instant, ClientEvent)],
) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            ClientEvent::SubscriptionsRestored {
                restored,
                refused,
                unconfirmed,
            } => Some((restored.clone(), refused.clone(), unconfirmed.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn subscriptions_come_back_after_the_server_drops_the_connection() {
    let base = t0();
    let hub_cfg = HubConfig {
        policy: Arc::new(NoSecrets),
        ..HubConfig::default()
    };
    let mut net = Net::new(hub_cfg, base);
    let i = net.add(Client::new(cfg(1), base, 3).unwrap());
    let client = &mut net.peers[i].client;
    client.subscribe(base, "process:1");
    client.subscribe(base, "secret");
    client.start(base);
    net.touch(i);

    let conn = net.peers[i].conn.expect("connected");
    assert_eq!(net.hub.subscriptions(conn), ["process:1"]);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        restored_events(&net.peers[i].events),
        [(s(&["process:1"]), s(&["secret"]), s(&[]))]
    );
    // A refused subscription is forgotten.
    assert_eq!(net.peers[i].client.subscriptions(), ["process:1"]);

    // Subscribed while connected: sent at once.
    net.peers[i].client.subscribe(net.now, "room");
    net.touch(i);
    assert_eq!(net.hub.subscriptions(conn), ["process:1", "room"]);

    // The server drops the connection without a close frame.
    net.run_for(secs(40)); // long enough that the next outage starts afresh
    net.peers[i].events.clear();
    net.drop_conn(i);
    assert_eq!(net.hub.subscriber_count("room"), 0);
    let events: Vec<&ClientEvent> = net.peers[i].events.iter().map(|(_, e)| e).collect();
    assert_eq!(
        events[..2],
        [
            &ClientEvent::CloseSocket,
            &ClientEvent::Disconnected {
                reason: DisconnectReason::Eof
            }
        ]
    );
    net.run_for(secs(2));
    let conn2 = net.peers[i].conn.expect("reconnected");
    assert_ne!(conn2, conn);
    assert_eq!(net.hub.subscriptions(conn2), ["process:1", "room"]);
    assert!(net.peers[i].events.iter().any(|(_, e)| *e
        == ClientEvent::Reconnected {
            attempt: 1,
            endpoint_index: 0,
            subprotocol: None
        }));
    assert_eq!(
        restored_events(&net.peers[i].events),
        [(s(&["process:1", "room"]), s(&[]), s(&[]))]
    );

    // And messages flow to the restored subscription.
    assert_eq!(
        net.hub.publish(
            net.now,
            "process:1",
            wshub_core::Message::process_output("1", "hello")
        ),
        1
    );
    net.settle();
    let got = net.peers[i].events.iter().find_map(|(_, e)| match e {
        ClientEvent::Message(m) if m.kind == "process_output" => Some(m.clone()),
        _ => None,
    });
    let m = got.expect("the message arrived");
    assert_eq!(m.channel.as_deref(), Some("process:1"));
    assert_eq!(m.data, json!("hello"));

    // Unsubscribing reaches the hub and is not restored next time.
    net.peers[i].client.unsubscribe(net.now, "room");
    net.touch(i);
    assert_eq!(net.hub.subscriptions(conn2), ["process:1"]);
    // The hub's ack to the unsubscribe was consumed, not delivered.
    assert!(!net.peers[i]
        .events
        .iter()
        .any(|(_, e)| matches!(e, ClientEvent::Message(m) if m.kind == "ack")));
}

#[test]
fn replies_to_the_applications_own_ids_reach_the_application() {
    let base = t0();
    let mut net = Net::new(HubConfig::default(), base);
    let i = net.add(Client::new(cfg(1), base, 3).unwrap());
    net.peers[i].client.start(base);
    net.touch(i);
    // The application numbers its requests from 1, as the client would its
    // first subscribe; its request fails, ours succeeds, in that order.
    let client = &mut net.peers[i].client;
    client
        .send(
            base,
            &json!({"type":"unsubscribe","channel":"never","id":1}),
        )
        .unwrap();
    client.subscribe(base, "room");
    net.touch(i);
    let conn = net.peers[i].conn.unwrap();
    assert_eq!(net.hub.subscriptions(conn), ["room"]);
    assert_eq!(net.peers[i].client.subscriptions(), ["room"]);
    let delivered: Vec<(String, Option<Value>)> = net.peers[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            ClientEvent::Message(m) => Some((m.kind.clone(), m.id.clone())),
            ClientEvent::SubscribeRefused { .. } => panic!("our subscribe was not refused: {e:?}"),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [("error".to_owned(), Some(json!(1)))]);
}

#[test]
fn a_subscription_refused_while_connected_is_reported_and_forgotten() {
    let base = t0();
    let hub_cfg = HubConfig {
        policy: Arc::new(NoSecrets),
        ..HubConfig::default()
    };
    let mut net = Net::new(hub_cfg, base);
    let i = net.add(Client::new(cfg(1), base, 3).unwrap());
    net.peers[i].client.start(base);
    net.touch(i);
    net.peers[i].client.subscribe(net.now, "secret");
    net.touch(i);
    assert!(net.peers[i].events.iter().any(|(_, e)| *e
        == ClientEvent::SubscribeRefused {
            channel: "secret".into(),
            code: "forbidden".into()
        }));
    assert!(net.peers[i].client.subscriptions().is_empty());
}

#[test]
fn a_level0_server_that_never_acks_leaves_subscriptions_unconfirmed() {
    let mut c = cfg(1);
    c.ack_timeout = secs(3);
    let mut d = Drv::new(c).dialing(|_| Dial::Accept);
    d.c.subscribe(d.now, "b");
    d.c.subscribe(d.now, "a");
    d.start();
    let subs: Vec<Value> = d.client_json();
    assert_eq!(
        subs,
        [
            json!({"type":"subscribe","channel":"a","data":"a","id":"sub-1","positions":true}),
            json!({"type":"subscribe","channel":"b","data":"b","id":"sub-2","positions":true})
        ]
    );
    // One ack arrives; the other never does.
    d.server_text(r#"{"type":"ack","id":"sub-2","timestamp":"t"}"#);
    d.advance(secs(3));
    assert_eq!(
        restored_events(&d.log),
        [(vec!["b".to_owned()], vec![], vec!["a".to_owned()])]
    );
    assert_eq!(
        d.c.subscriptions(),
        ["a", "b"],
        "unconfirmed is still wanted"
    );
    // A late refusal is still honoured.
    d.server_text(r#"{"type":"error","id":"sub-1","data":{"code":"limit","message":"m"}}"#);
    assert_eq!(
        d.events().last(),
        Some(&&ClientEvent::SubscribeRefused {
            channel: "a".into(),
            code: "limit".into()
        })
    );
    assert_eq!(d.c.subscriptions(), ["b"]);
}

// ---------------------------------------------------------------------------
// Server-requested delays
// ---------------------------------------------------------------------------

#[test]
fn retry_after_on_a_503_stretches_the_delay_beyond_max() {
    for (status, header, want) in [
        (503, "Retry-After: 120\r\n", secs(120)),
        (429, "Retry-After: 45\r\n", secs(45)),
        (503, "Retry-After: 99999999\r\n", secs(3600)),
        (503, "", secs(1)),
        (
            503,
            "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n",
            secs(1),
        ),
        (500, "Retry-After: 120\r\n", secs(1)),
    ] {
        let mut d = Drv::new(cfg(2)).dialing(|_| Dial::Hold);
        d.start();
        d.connect_tcp();
        d.feed(format!("HTTP/1.1 {status} Busy\r\n{header}\r\n").as_bytes());
        // The walk still goes on to endpoint 1 at once...
        assert_eq!(d.connects(), [(Duration::ZERO, 0), (Duration::ZERO, 1)]);
        d.c.handle_connect_failed(d.now);
        d.socket = false;
        d.pump();
        // ...and the floor applies to the wait after it.
        assert_eq!(
            d.c.state(),
            ClientState::Disconnected {
                next_attempt: Some(d.start + want)
            },
            "{status} {header:?}"
        );
    }
}

#[test]
fn a_1013_close_stretches_the_next_delay() {
    let mut d = Drv::new(cfg(1)).dialing(|_| Dial::Accept);
    d.start();
    d.feed(&close_frame(1013, "try again later", None));
    let at = d.now;
    assert!(d.events().contains(&&ClientEvent::Disconnected {
        reason: DisconnectReason::ServerClosed {
            code: Some(1013),
            reason: "try again later".into()
        }
    }));
    // Without jitter: exactly the policy's max instead of 1 s.
    assert_eq!(
        d.c.state(),
        ClientState::Disconnected {
            next_attempt: Some(at + secs(30))
        }
    );

    // With jitter: at least half of max, never above it, and not in lockstep.
    let mut waits = std::collections::BTreeSet::new();
    for seed in 0..30 {
        let mut c = cfg(1);
        c.backoff.jitter = Jitter::Full;
        let mut d = Drv::with_seed(c, seed, t0()).dialing(|_| Dial::Accept);
        d.start();
        d.feed(&close_frame(1013, "", None));
        let ClientState::Disconnected {
            next_attempt: Some(t),
        } = d.c.state()
        else {
            panic!("{:?}", d.c.state());
        };
        let wait = t - d.now;
        assert!(wait >= secs(15) && wait <= secs(30), "{wait:?}");
        waits.insert(wait);
    }
    assert!(waits.len() > 25);

    // Any other close code reconnects on the normal schedule.
    let mut d = Drv::new(cfg(1)).dialing(|_| Dial::Accept);
    d.start();
    d.feed(&close_frame(1001, "restart", None));
    assert_eq!(
        d.c.state(),
        ClientState::Disconnected {
            next_attempt: Some(d.now + secs(1))
        }
    );
}

// ---------------------------------------------------------------------------
// Liveness and the close handshake
// ---------------------------------------------------------------------------

#[test]
fn pings_go_out_on_the_interval_and_a_silent_server_is_dropped() {
    let mut c = cfg(1);
    c.ping_interval = secs(10);
    c.dead_timeout = secs(25);
    let mut d = Drv::new(c).dialing(|_| Dial::Accept);
    d.start();
    d.advance(secs(10));
    assert_eq!(d.client_json(), [json!({"type":"ping"})]);
    // The pong (any traffic) keeps it alive past the first deadline.
    d.server_text(r#"{"type":"pong","timestamp":"t"}"#);
    assert!(
        !d.events()
            .iter()
            .any(|e| matches!(e, ClientEvent::Message(_))),
        "pongs are consumed"
    );
    d.advance(secs(24));
    assert_eq!(d.c.state(), ClientState::Connected { endpoint: 0 });
    assert_eq!(d.client_json().len(), 3, "pings at 10, 20 and 30 s");
    // Then silence: dropped 25 s after the pong at 10 s.
    d.advance(secs(1));
    let n = d.log.len();
    assert_eq!(
        d.events()[n - 2..],
        [
            &ClientEvent::CloseSocket,
            &ClientEvent::Disconnected {
                reason: DisconnectReason::DeadServer
            }
        ]
    );
    assert_eq!(d.log.last().unwrap().0 - d.start, secs(35));
    // And it comes back.
    d.advance(secs(2));
    assert!(matches!(
        d.events().last(),
        Some(ClientEvent::Reconnected { attempt: 1, .. })
    ));
}

#[test]
fn server_pings_are_answered_and_a_server_close_is_echoed_before_the_socket_drops() {
    let mut d = Drv::new(cfg(1)).dialing(|_| Dial::Accept);
    d.start();
    let mut ping = Vec::new();
    encode_frame(&mut ping, OpCode::Ping, b"hb-1", None);
    d.feed(&ping);
    assert_eq!(d.client_frames(), [Decoded::Pong(b"hb-1".to_vec())]);

    // The close reply must be written before the driver sees CloseSocket.
    d.c.handle_read(d.now, &close_frame(1001, "bye", None));
    assert_eq!(d.c.poll_event(), None, "CloseSocket waits for the output");
    let out = d.c.poll_transmit().expect("the close reply");
    d.sent.extend_from_slice(&out);
    d.pump();
    assert_eq!(
        d.client_frames().last(),
        Some(&Decoded::Close(Some((1001, String::new()))))
    );
    assert!(!d.socket);
}

#[test]
fn a_protocol_violation_closes_with_its_code_and_reconnects() {
    let mut d = Drv::new(cfg(1)).dialing(|_| Dial::Accept);
    d.start();
    // Servers must not mask.
    let mut masked = Vec::new();
    encode_frame(&mut masked, OpCode::Text, b"{}", Some([1, 2, 3, 4]));
    d.feed(&masked);
    assert!(matches!(
        d.client_frames().last(),
        Some(Decoded::Close(Some((1002, _))))
    ));
    assert!(matches!(
        d.events().last(),
        Some(ClientEvent::Disconnected {
            reason: DisconnectReason::Protocol(_)
        })
    ));
    d.advance(secs(1));
    assert!(matches!(
        d.events().last(),
        Some(ClientEvent::Reconnected { attempt: 1, .. })
    ));
}

#[test]
fn close_sends_1000_waits_for_the_reply_and_stays_closed() {
    let mut d = Drv::new(cfg(1)).dialing(|_| Dial::Accept);
    d.start();
    d.c.close(d.now);
    d.pump();
    assert_eq!(d.c.state(), ClientState::Closed);
    assert_eq!(
        d.client_frames(),
        [Decoded::Close(Some((1000, String::new())))]
    );
    assert!(d.socket, "still waiting for the server's close");
    d.feed(&close_frame(1000, "", None));
    assert_eq!(
        d.events()[d.log.len() - 3..],
        [
            &ClientEvent::CloseSocket,
            &ClientEvent::Disconnected {
                reason: DisconnectReason::Local
            },
            &ClientEvent::Closed
        ]
    );
    d.advance(secs(3600));
    assert_eq!(d.connects().len(), 1);
    assert_eq!(d.c.send(d.now, &json!({})), Err(SendError::Closed));

    // A server that never answers: the close timeout drops it.
    let mut d = Drv::new(cfg(1)).dialing(|_| Dial::Accept);
    d.start();
    d.c.close(d.now);
    d.advance(secs(5));
    assert!(!d.socket);
    assert_eq!(d.events().last(), Some(&&ClientEvent::Closed));
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

#[test]
fn sending_while_disconnected_errors_like_go_ws_by_default() {
    let mut d = Drv::new(cfg(1)).dialing(|_| Dial::Hold);
    assert_eq!(
        d.c.send(d.now, &json!({"type":"x"})),
        Err(SendError::NotConnected)
    );
    d.start();
    assert_eq!(d.c.send_text(d.now, "x"), Err(SendError::NotConnected));
}

#[test]
fn the_offline_queue_is_bounded_and_flushed_in_order_after_the_subscriptions() {
    let mut c = cfg(1);
    c.offline_queue = 2;
    c.max_message_size = 64;
    let mut d = Drv::new(c).dialing(|_| Dial::Fail);
    d.c.subscribe(d.now, "room");
    d.start();
    assert_eq!(d.c.send(d.now, &json!({"type":"a"})), Ok(()));
    assert_eq!(d.c.send_binary(d.now, b"b"), Ok(()));
    assert_eq!(
        d.c.send(d.now, &json!({"type":"c"})),
        Err(SendError::QueueFull)
    );
    assert_eq!(
        d.c.send_text(d.now, &"x".repeat(65)),
        Err(SendError::TooLarge)
    );
    assert_eq!(d.c.queued(), 2);
    d.dial = Box::new(|_| Dial::Accept);
    d.advance(secs(1));
    assert_eq!(d.c.queued(), 0);
    let frames = d.client_frames();
    assert_eq!(frames.len(), 3);
    let Decoded::Text(sub) = &frames[0] else {
        panic!("{frames:?}");
    };
    assert_eq!(
        serde_json::from_str::<Value>(sub).unwrap(),
        json!({"type":"subscribe","channel":"room","data":"room","id":"sub-1","positions":true})
    );
    assert_eq!(frames[1], Decoded::Text(r#"{"type":"a"}"#.into()));
    assert_eq!(frames[2], Decoded::Binary(b"b".to_vec()));
    // Connected: straight to the socket.
    d.c.send(d.now, &json!({"type":"d"})).unwrap();
    d.pump();
    assert_eq!(
        d.client_frames().last(),
        Some(&Decoded::Text(r#"{"type":"d"}"#.into()))
    );
}

// ---------------------------------------------------------------------------
// Attempts and the reset
// ---------------------------------------------------------------------------

#[test]
fn reconnected_counts_the_attempts_and_a_stable_connection_resets_the_schedule() {
    let failures = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let f = failures.clone();
    let mut d = Drv::new(cfg(2)).dialing(move |_| {
        if f.get() > 0 {
            f.set(f.get() - 1);
            Dial::Fail
        } else {
            Dial::Accept
        }
    });
    d.start();
    assert!(matches!(d.events()[1], ClientEvent::Connected { .. }));

    // A flapping server: every connection drops the moment it is up. The
    // delays keep growing: short connections do not reset the schedule.
    for _ in 0..4 {
        d.c.handle_eof(d.now);
        d.pump();
        let retry = d.c.poll_timeout().expect("a retry is scheduled");
        d.advance(retry - d.now);
        assert_eq!(d.c.state(), ClientState::Connected { endpoint: 0 });
    }
    assert_eq!(d.delays(), [1, 2, 4, 8].map(secs));

    // A connection that lasts past reset_after starts again from 1 s; three
    // failed attempts (over two endpoints) before the fourth succeeds.
    d.advance(secs(31));
    d.clear_log();
    failures.set(3);
    let dropped = d.now - d.start;
    d.c.handle_eof(d.now);
    d.pump();
    d.advance(secs(60));
    assert_eq!(
        d.connects(),
        [
            (dropped + secs(1), 0),
            (dropped + secs(1), 1),
            (dropped + secs(3), 0),
            (dropped + secs(3), 1)
        ]
    );
    assert!(matches!(
        d.events().last(),
        Some(ClientEvent::Reconnected {
            attempt: 4,
            endpoint_index: 1,
            ..
        })
    ));
}
