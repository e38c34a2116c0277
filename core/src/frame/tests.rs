//! The frame codec's unit tests (the property tests over generated
//! scenarios and the tungstenite differential are in
//! `testkit/tests/frame_differential.rs`).

use super::testing::{decode_in_pieces as run_chunks, decode_whole as run_all, raw, Len};
use super::*;

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

fn server() -> FrameDecoder {
    FrameDecoder::new(Role::Server, 1 << 20)
}

/// The violation a server decoder reports for `input`, fed at once.
fn server_err(input: &[u8]) -> Option<Violation> {
    run_all(&mut server(), input).1
}

fn frame(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_fragment(&mut out, op, fin, payload, Some(MASK));
    out
}

fn proto(why: &'static str) -> Option<Violation> {
    Some(Violation::Protocol(why))
}

#[test]
fn close_codes_and_display() {
    assert_eq!(Violation::Protocol("x").close_code(), 1002);
    assert_eq!(Violation::InvalidUtf8.close_code(), 1007);
    assert_eq!(Violation::TooBig.close_code(), 1009);
    assert_eq!(
        Violation::Protocol(RESERVED_OPCODE).to_string(),
        "protocol error: reserved opcode"
    );
    assert!(Violation::TooBig.to_string().contains("maximum"));
}

/// One decoder lives in every connection; the brief's budget is 100.
#[test]
fn decoder_is_small() {
    assert!(
        mem::size_of::<FrameDecoder>() <= 80,
        "{}",
        mem::size_of::<FrameDecoder>()
    );
}

#[test]
fn masking_required_by_role() {
    let unmasked = raw(0x82, Len::Minimal, None, b"hi");
    let v = server_err(&unmasked);
    assert_eq!(v, proto(UNMASKED_FROM_CLIENT));
    assert_eq!(v.map(|v| v.close_code()), Some(1002));

    let masked = raw(0x82, Len::Minimal, Some(MASK), b"hi");
    let mut client = FrameDecoder::new(Role::Client, 1 << 20);
    assert_eq!(run_all(&mut client, &masked).1, proto(MASKED_FROM_SERVER));

    let mut client = FrameDecoder::new(Role::Client, 1 << 20);
    assert_eq!(
        run_all(&mut client, &unmasked),
        (vec![Decoded::Binary(b"hi".to_vec())], None)
    );
}

#[test]
fn reserved_bits_refused() {
    for rsv in [0x40, 0x20, 0x10] {
        let v = server_err(&raw(0x81 | rsv, Len::Minimal, Some(MASK), b"x"));
        assert_eq!(v, proto(RESERVED_BITS));
        assert_eq!(v.map(|v| v.close_code()), Some(1002));
    }
}

#[test]
fn reserved_opcodes_refused() {
    for op in (3..=7).chain(0xB..=0xF) {
        let v = server_err(&raw(0x80 | op, Len::Minimal, Some(MASK), b""));
        assert_eq!(v, proto(RESERVED_OPCODE), "opcode {op:#x}");
        assert_eq!(v.map(|v| v.close_code()), Some(1002));
    }
}

#[test]
fn control_frame_rules() {
    // FIN clear on a ping: refused from the first byte alone.
    let mut dec = server();
    assert_eq!(
        dec.decode(&[0x09]),
        (1, Err(Violation::Protocol(FRAGMENTED_CONTROL)))
    );
    // 126 bytes cannot be a control payload, whatever the encoding.
    assert_eq!(
        server_err(&raw(0x89, Len::Minimal, Some(MASK), &[0; 126])),
        proto(CONTROL_TOO_LONG)
    );
    assert_eq!(
        server_err(&raw(0x8A, Len::Ext16, Some(MASK), &[0; 5])),
        proto(CONTROL_TOO_LONG)
    );
    // 125 is fine.
    let ping = raw(0x89, Len::Minimal, Some(MASK), &[7; 125]);
    assert_eq!(
        run_all(&mut server(), &ping),
        (vec![Decoded::Ping(vec![7; 125])], None)
    );
}

#[test]
fn continuation_rules() {
    let v = server_err(&frame(OpCode::Continuation, true, b"x"));
    assert_eq!(v, proto(UNEXPECTED_CONTINUATION));
    assert_eq!(v.map(|v| v.close_code()), Some(1002));

    for op in [OpCode::Text, OpCode::Binary] {
        let mut wire = frame(OpCode::Binary, false, b"a");
        wire.extend(frame(op, true, b"b"));
        assert_eq!(server_err(&wire), proto(EXPECTED_CONTINUATION));
    }
}

#[test]
fn non_minimal_lengths_refused() {
    assert_eq!(
        server_err(&raw(0x82, Len::Ext16, Some(MASK), &[1; 125])),
        proto(NON_MINIMAL_LENGTH)
    );
    assert_eq!(
        server_err(&raw(0x82, Len::Ext64, Some(MASK), &[1; 126])),
        proto(NON_MINIMAL_LENGTH)
    );
    assert_eq!(
        server_err(&raw(0x82, Len::Ext64, Some(MASK), &[1; 0xFFFF])),
        proto(NON_MINIMAL_LENGTH)
    );
    // The smallest lengths of each form are accepted.
    for n in [126, 0x10000] {
        let (got, err) = run_all(
            &mut server(),
            &raw(0x82, Len::Minimal, Some(MASK), &vec![1; n]),
        );
        assert_eq!((got, err), (vec![Decoded::Binary(vec![1; n])], None));
    }
    let v = server_err(&raw(0x82, Len::Announce(1 << 63), Some(MASK), b""));
    assert_eq!(v, proto(LENGTH_TOP_BIT));
    assert_eq!(v.map(|v| v.close_code()), Some(1002));
}

#[test]
fn huge_announcements_cost_nothing() {
    // 2^63: refused from the header, nothing allocated.
    let mut dec = FrameDecoder::new(Role::Server, usize::MAX);
    let (_, r) = dec.decode(&raw(0x82, Len::Announce(u64::MAX), Some(MASK), b""));
    assert_eq!(r, Err(Violation::Protocol(LENGTH_TOP_BIT)));
    assert_eq!(dec.buffered(), 0);

    // 2^62 over a 1 MiB limit: TooBig from the 10 header bytes alone,
    // before the mask key or any payload.
    let mut dec = server();
    let wire = raw(0x82, Len::Announce(1 << 62), Some(MASK), b"");
    assert_eq!(dec.decode(&wire[..10]), (10, Err(Violation::TooBig)));
    assert_eq!(dec.buffered(), 0);

    // 2^62 with no limit at all: accepted, and memory follows the bytes
    // that actually arrive, not the announcement.
    let mut dec = FrameDecoder::new(Role::Server, usize::MAX);
    let mut wire = raw(0x82, Len::Announce(1 << 62), Some(MASK), b"");
    wire.extend_from_slice(&[0; 1000]);
    assert_eq!(dec.decode(&wire), (wire.len(), Ok(None)));
    assert!(
        dec.buffered() >= 1000 && dec.buffered() <= 2048,
        "{}",
        dec.buffered()
    );
}

#[test]
fn message_size_limit() {
    let mut dec = FrameDecoder::new(Role::Server, 10);
    assert_eq!(
        run_all(&mut dec, &frame(OpCode::Binary, true, &[0; 10])).1,
        None
    );
    let v = run_all(&mut dec, &frame(OpCode::Binary, true, &[0; 11])).1;
    assert_eq!(v, Some(Violation::TooBig));
    assert_eq!(v.map(|v| v.close_code()), Some(1009));

    // Across fragments: refused at the header of the fragment that would
    // cross the limit, before its payload is fed.
    let mut dec = FrameDecoder::new(Role::Server, 10);
    let first = frame(OpCode::Text, false, b"123456");
    assert_eq!(dec.decode(&first), (first.len(), Ok(None)));
    let second = frame(OpCode::Continuation, true, b"12345");
    assert_eq!(dec.decode(&second[..2]), (2, Err(Violation::TooBig)));
    // A control frame does not count towards the message in progress.
    let mut dec = FrameDecoder::new(Role::Server, 10);
    let mut wire = frame(OpCode::Text, false, b"123456");
    wire.extend(frame(OpCode::Ping, true, b"pingping"));
    wire.extend(frame(OpCode::Continuation, true, b"7890"));
    let (got, err) = run_all(&mut dec, &wire);
    assert_eq!(err, None);
    assert_eq!(
        got,
        vec![
            Decoded::Ping(b"pingping".to_vec()),
            Decoded::Text("1234567890".into())
        ]
    );
    // ... but it is itself bounded by the limit.
    assert_eq!(
        run_all(&mut dec, &frame(OpCode::Ping, true, &[0; 11])).1,
        Some(Violation::TooBig)
    );
}

#[test]
fn fragmented_text_with_ping_and_split_char() {
    // "a€b": the 3-byte '€' (E2 82 AC) is split across the fragments.
    let mut wire = frame(OpCode::Text, false, b"a\xE2\x82");
    wire.extend(frame(OpCode::Ping, true, b"p"));
    wire.extend(frame(OpCode::Continuation, true, b"\xACb"));
    let want = vec![Decoded::Ping(b"p".to_vec()), Decoded::Text("a€b".into())];
    assert_eq!(run_all(&mut server(), &wire), (want, None));
    // The ping comes out as soon as it is complete.
    let mut dec = server();
    let (n, r) = dec.decode(&wire);
    assert_eq!(r, Ok(Some(Decoded::Ping(b"p".to_vec()))));
    assert_eq!(n, wire.len() - 8);
    assert_eq!(
        dec.decode(&wire[n..]),
        (8, Ok(Some(Decoded::Text("a€b".into()))))
    );
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn invalid_utf8_fails_fast() {
    // A 100-byte text frame whose 3rd payload byte is invalid: refused
    // before the other 97 bytes are fed.
    let mut payload = b"ab\xFF".to_vec();
    payload.resize(100, b'x');
    let wire = frame(OpCode::Text, true, &payload);
    let mut dec = server();
    let (n, r) = dec.decode(&wire[..6 + 3]);
    assert_eq!((n, r), (9, Err(Violation::InvalidUtf8)));
    assert_eq!(Violation::InvalidUtf8.close_code(), 1007);
    assert_eq!(dec.buffered(), 0);

    // An overlong or surrogate sequence fails at the byte that rules it out.
    for bad in [&b"\xE0\x80"[..], b"\xED\xA0", b"\xF4\x90", b"\xC0"] {
        let mut payload = bad.to_vec();
        payload.resize(50, b'x');
        let wire = frame(OpCode::Text, true, &payload);
        let mut dec = server();
        let at = 6 + bad.len();
        assert_eq!(
            dec.decode(&wire[..at]),
            (at, Err(Violation::InvalidUtf8)),
            "{bad:x?}"
        );
    }

    // Across a fragment boundary: the continuation's first byte decides.
    let mut dec = server();
    let first = frame(OpCode::Text, false, b"ok\xE2");
    assert_eq!(dec.decode(&first), (first.len(), Ok(None)));
    let second = frame(OpCode::Continuation, true, b"A and more");
    assert_eq!(dec.decode(&second[..7]), (7, Err(Violation::InvalidUtf8)));
}

#[test]
fn incomplete_utf8_only_fails_at_the_end() {
    let mut dec = server();
    let first = frame(OpCode::Text, false, b"ok\xE2\x82");
    assert_eq!(dec.decode(&first), (first.len(), Ok(None)));
    let last = frame(OpCode::Continuation, true, b"");
    assert_eq!(dec.decode(&last), (last.len(), Err(Violation::InvalidUtf8)));
    // Same for a single frame.
    assert_eq!(
        server_err(&frame(OpCode::Text, true, b"\xF0\x9F\x98")),
        Some(Violation::InvalidUtf8)
    );
    // Binary is not checked.
    assert_eq!(server_err(&frame(OpCode::Binary, true, b"\xFF")), None);
}

#[test]
fn close_frame_rules() {
    let close = |payload: &[u8]| server_err(&raw(0x88, Len::Minimal, Some(MASK), payload));
    assert_eq!(
        run_all(&mut server(), &frame(OpCode::Close, true, b"")),
        (vec![Decoded::Close(None)], None)
    );
    assert_eq!(close(b"\x03"), proto(CLOSE_ONE_BYTE));
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice("bye ☃".as_bytes());
        let (got, err) = run_all(&mut server(), &raw(0x88, Len::Minimal, Some(MASK), &p));
        assert_eq!(
            (got, err),
            (vec![Decoded::Close(Some((code, "bye ☃".into())))], None)
        );
    }
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let v = close(&code.to_be_bytes());
        assert_eq!(v, proto(CLOSE_CODE), "code {code}");
        assert_eq!(v.map(|v| v.close_code()), Some(1002));
    }
    let v = close(b"\x03\xE8\xFF");
    assert_eq!(v, Some(Violation::InvalidUtf8));
    assert_eq!(v.map(|v| v.close_code()), Some(1007));
}

#[test]
fn poisoned_after_error() {
    let mut dec = server();
    let mut wire = raw(0x82, Len::Minimal, None, b"x");
    wire.extend(frame(OpCode::Binary, true, b"fine"));
    assert_eq!(
        dec.decode(&wire),
        (wire.len(), Err(Violation::Protocol(UNMASKED_FROM_CLIENT)))
    );
    let good = frame(OpCode::Binary, true, b"fine");
    for _ in 0..2 {
        assert_eq!(
            dec.decode(&good),
            (good.len(), Err(Violation::Protocol(UNMASKED_FROM_CLIENT)))
        );
    }
    assert_eq!(
        dec.decode(&[]),
        (0, Err(Violation::Protocol(UNMASKED_FROM_CLIENT)))
    );
}

#[test]
fn memory_is_released_after_a_big_message() {
    let mut dec = server();
    let big = vec![9u8; 100_000];
    let mut wire = frame(OpCode::Binary, false, &big[..40_000]);
    wire.extend(frame(OpCode::Ping, true, b"mid"));
    wire.extend(frame(OpCode::Continuation, true, &big[40_000..]));
    // Fed in small pieces, as a socket would deliver it.
    let (got, err) = run_chunks(&mut dec, &wire, &[1000, 17, 4096]);
    assert_eq!(err, None);
    assert_eq!(
        got,
        vec![Decoded::Ping(b"mid".to_vec()), Decoded::Binary(big)]
    );
    assert_eq!(dec.buffered(), 0);
    // While a message is in progress `buffered` reports it.
    let first = frame(OpCode::Binary, false, &[1; 5000]);
    assert_eq!(dec.decode(&first), (first.len(), Ok(None)));
    assert!(dec.buffered() >= 5000);
}

#[test]
fn round_trip_all_length_classes() {
    for (n, ext) in [(0usize, 0usize), (125, 0), (126, 2), (65535, 2), (65536, 8)] {
        let payload: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
        // Masked client frames into a server decoder.
        let mut wire = Vec::new();
        encode_frame(&mut wire, OpCode::Binary, &payload, Some(MASK));
        assert_eq!(wire.len(), 2 + ext + 4 + n);
        assert_eq!(wire.len(), frame_len(n, true));
        assert_eq!(
            run_chunks(&mut server(), &wire, &[3, 1000, 1]),
            (vec![Decoded::Binary(payload.clone())], None)
        );
        // Unmasked server frames into a client decoder.
        let shared = server_frame(OpCode::Binary, &payload);
        assert_eq!(shared.len(), 2 + ext + n);
        let mut plain = Vec::new();
        encode_frame(&mut plain, OpCode::Binary, &payload, None);
        assert_eq!(&shared[..], &plain[..]);
        let mut client = FrameDecoder::new(Role::Client, 1 << 20);
        assert_eq!(
            run_all(&mut client, &shared),
            (vec![Decoded::Binary(payload)], None)
        );
        // Text of the same length.
        let text = "é".repeat(n / 2) + &"x".repeat(n % 2);
        let mut wire = Vec::new();
        encode_frame(&mut wire, OpCode::Text, text.as_bytes(), Some(MASK));
        assert_eq!(
            run_all(&mut server(), &wire),
            (vec![Decoded::Text(text)], None)
        );
    }
}

#[test]
fn close_frame_truncates_at_a_char_boundary() {
    let reason = "☃".repeat(60); // 180 bytes
    for mask in [None, Some(MASK)] {
        let wire = close_frame(4000, &reason, mask);
        let role = if mask.is_some() {
            Role::Server
        } else {
            Role::Client
        };
        let (got, err) = run_all(&mut FrameDecoder::new(role, 1 << 20), &wire);
        assert_eq!(err, None);
        // 123 bytes of reason room hold 41 three-byte snowmen.
        assert_eq!(got, vec![Decoded::Close(Some((4000, "☃".repeat(41))))]);
    }
    let wire = close_frame(1000, "", None);
    assert_eq!(wire, vec![0x88, 0x02, 0x03, 0xE8]);
}
