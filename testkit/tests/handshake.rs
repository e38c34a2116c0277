//! The upgrade reader under split feeding and the responses the handshake
//! writes, checked as HTTP by the harness's [`check_response`]; also the
//! handshake fuzz check on hand-made inputs.

use quickcheck::{QuickCheck, TestResult};
use wshub_core::handshake::testing::{request, served, KEY};
use wshub_core::handshake::{
    refusal_response, switching_protocols, HandshakeConfig, Parsed, Refusal, RequestReader,
};
use wshub_core::request::PeerInfo;
use wshub_testkit::check_handshake_bytes;
use wshub_testkit::handshake::{check_response, feed_in_chunks};

fn feed(cfg: &HandshakeConfig, bytes: &[u8]) -> Parsed {
    RequestReader::new().feed(cfg, &PeerInfo::default(), bytes)
}

/// Sample requests covering each outcome, for the split properties.
fn samples() -> Vec<Vec<u8>> {
    let mut pipelined = request("/ws", "Sec-WebSocket-Protocol: x, c\r\n").into_bytes();
    pipelined.extend_from_slice(b"\x81\x80abcd\r\n\r\n");
    vec![
        request("/ws?token=t", "").into_bytes(),
        pipelined,
        request("/nope", "").into_bytes(),
        request("/ws", "").replacen("13", "8", 1).into_bytes(),
        format!("\r\n\n{}", request("/ws", "")).into_bytes(),
        b"POST / HTTP/1.1\nHost: a\n\n".to_vec(),
        request("/ws", &"X-Many: 1\r\n".repeat(70)).into_bytes(),
        request("/ws", &format!("X-Big: {}\r\n", "b".repeat(9000))).into_bytes(),
        request("/ws", "").replace("\r\n", "\n").into_bytes(),
        b"GET /ws HTTP/1.1\r\nHost: a\r\nX".to_vec(),
    ]
}

#[test]
fn version_other_than_one_13_is_426_with_the_header() {
    let cfg = served();
    let v = "Sec-WebSocket-Version: 13\r\n";
    for bad in [
        "Sec-WebSocket-Version: 8\r\n",
        "",
        "Sec-WebSocket-Version: 13, 8\r\n",
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n",
    ] {
        let req = request("/ws", "").replacen(v, bad, 1);
        let Parsed::Refused(refusal) = feed(&cfg, req.as_bytes()) else {
            panic!("version {bad:?} accepted");
        };
        assert_eq!(refusal.status, 426, "{bad:?}");
        let response = refusal_response(&refusal, &[]);
        let (headers, _) = check_response(&response, 426);
        assert!(headers.contains(&("Sec-WebSocket-Version".into(), b"13".to_vec())));
    }
}

#[test]
fn split_feeding_matches_whole_feeding() {
    fn prop(which: u8, sizes: Vec<u8>, flip: Option<(u16, u8)>) -> TestResult {
        let all = samples();
        let mut data = all[usize::from(which) % all.len()].clone();
        // A mutation exercises httparse errors at every position.
        if let Some((at, byte)) = flip {
            let at = usize::from(at) % data.len();
            data[at] = byte;
        }
        let cfg = served();
        let whole = feed(&cfg, &data);
        let mut i = 0;
        let next = || {
            i += 1;
            sizes
                .get(i % sizes.len().max(1))
                .map_or(1, |&s| usize::from(s % 40))
        };
        let (split, _) = feed_in_chunks(&cfg, &data, next, false);
        if split == whole {
            TestResult::passed()
        } else {
            TestResult::error(format!("whole {whole:?} vs split {split:?}"))
        }
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(prop as fn(u8, Vec<u8>, Option<(u16, u8)>) -> TestResult);
}

#[test]
fn every_sample_splits_consistently_byte_by_byte() {
    let cfg = served();
    for data in samples() {
        let (split, _) = feed_in_chunks(&cfg, &data, || 1, true);
        assert_eq!(split, feed(&cfg, &data));
    }
}

#[test]
fn switching_protocols_has_exactly_the_expected_headers() {
    let response = switching_protocols(KEY, Some("chat"));
    let (headers, body) = check_response(&response, 101);
    assert!(body.is_empty());
    let expected: Vec<(String, Vec<u8>)> = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ("Sec-WebSocket-Protocol", "chat"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    assert_eq!(headers, expected);
    let (headers, _) = check_response(&switching_protocols(KEY, None), 101);
    assert_eq!(headers, expected[..3]);
    // A non-token subprotocol cannot inject a header.
    let (headers, _) = check_response(&switching_protocols(KEY, Some("a\r\nX-Evil: 1")), 101);
    assert_eq!(headers, expected[..3]);
}

#[test]
fn switching_protocols_satisfies_a_tungstenite_client() {
    use tungstenite::handshake::client::generate_key;
    use tungstenite::handshake::derive_accept_key;
    let key = generate_key();
    let (headers, _) = check_response(&switching_protocols(&key, None), 101);
    let accept = headers
        .iter()
        .find(|(n, _)| n == "Sec-WebSocket-Accept")
        .unwrap();
    assert_eq!(accept.1, derive_accept_key(key.as_bytes()).into_bytes());
}

#[test]
fn refusal_responses_are_valid_http_without_websocket_headers() {
    for (status, phrase) in [
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (426, "Upgrade Required"),
        (431, "Request Header Fields Too Large"),
        (503, "Service Unavailable"),
    ] {
        let refusal = Refusal {
            status,
            reason: "nope",
        };
        let response = refusal_response(&refusal, &[("Retry-After", "5")]);
        let (headers, body) = check_response(&response, status);
        assert_eq!(body, b"nope\n");
        let text = String::from_utf8(response.clone()).unwrap();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} {phrase}\r\n")),
            "{text}"
        );
        let has = |n: &str, v: &str| headers.contains(&(n.into(), v.as_bytes().to_vec()));
        assert!(has("Connection", "close") && has("Content-Type", "text/plain"));
        assert!(has("Retry-After", "5"));
        let ws: Vec<_> = headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("sec-websocket"))
            .collect();
        if status == 426 {
            assert_eq!(ws, [&("Sec-WebSocket-Version".to_string(), b"13".to_vec())]);
        } else {
            assert!(ws.is_empty(), "{status}: {ws:?}");
        }
    }
}

#[test]
fn refusal_extra_headers_cannot_inject_or_override() {
    let refusal = Refusal {
        status: 503,
        reason: "busy",
    };
    let extras = [
        ("Retry-After", "1\r\nX-Evil: 1"),
        ("Bad Name", "x"),
        ("Content-Length", "0"),
        ("sec-websocket-accept", "x"),
        ("X-Fine", " ok "),
    ];
    let (headers, body) = check_response(&refusal_response(&refusal, &extras), 503);
    assert_eq!(body, b"busy\n");
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Connection", "Content-Type", "Content-Length", "X-Fine"]
    );
    // A status that is no refusal becomes a 500.
    check_response(
        &refusal_response(
            &Refusal {
                status: 101,
                reason: "x",
            },
            &[],
        ),
        500,
    );
    check_response(
        &refusal_response(
            &Refusal {
                status: 0,
                reason: "x",
            },
            &[],
        ),
        500,
    );
}

#[test]
fn check_handshake_bytes_accepts_consistent_inputs() {
    let req = request("/ws?x", "Sec-WebSocket-Protocol: a\r\n");
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for seed in [0u8, 1, 7, 63, 0x80, 0xc5, 0xff] {
        for body in samples()
            .into_iter()
            .chain([req.clone().into_bytes(), Vec::new()])
        {
            let mut data = vec![seed];
            data.extend_from_slice(&body);
            inputs.push(data);
        }
    }
    inputs.push(Vec::new());
    inputs.push(vec![0]);
    inputs.push(vec![3; 9000]);
    for data in &inputs {
        check_handshake_bytes(data);
    }
}

#[test]
#[should_panic(expected = "response status")]
fn check_response_catches_a_wrong_status() {
    check_response(
        &refusal_response(
            &Refusal {
                status: 404,
                reason: "x",
            },
            &[],
        ),
        400,
    );
}
