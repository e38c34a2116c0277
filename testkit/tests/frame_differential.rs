//! Property tests of the frame decoder over generated scenarios: any split
//! of the input gives the same result as one read, and the decoder agrees
//! with tungstenite's (the `frames` fuzz target's differential oracle, from
//! `wshub_testkit::differential`) up to the documented divergences.

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use wshub_core::frame::testing::{
    decode_in_pieces as run_chunks, decode_whole as run_all, raw, Len,
};
use wshub_core::frame::{
    close_frame, encode_fragment, encode_frame, Decoded, FrameDecoder, OpCode, Role, Violation,
};
use wshub_testkit::differential::{
    tungstenite_decode, TgError, CLOSE_CODE, CONTROL_TOO_LONG, NON_MINIMAL_LENGTH,
};

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// The largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

fn proto(why: &'static str) -> Option<Violation> {
    Some(Violation::Protocol(why))
}

// ---- Property tests -------------------------------------------------

/// A deterministic stream of mask keys, so a scenario is reproducible
/// from its `Debug` output.
struct Lcg(u64);
impl Lcg {
    fn key(&mut self) -> [u8; 4] {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 32) as u32).to_le_bytes()
    }
}

fn below(g: &mut Gen, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        usize::arbitrary(g) % n
    }
}

/// A length from every class that matters: small, around the 7-bit
/// limit, and past it.
fn gen_len(g: &mut Gen) -> usize {
    match below(g, 10) {
        0..=6 => below(g, g.size() + 1),
        7 | 8 => 118 + below(g, 20),
        _ => 250 + below(g, 150),
    }
}

fn gen_bytes(g: &mut Gen, n: usize) -> Vec<u8> {
    (0..n).map(|_| u8::arbitrary(g)).collect()
}

fn gen_text(g: &mut Gen, max_bytes: usize) -> String {
    let mut s = String::new();
    loop {
        // Mostly ASCII and the multi-byte forms (2, 3, 4 bytes).
        let c = match below(g, 6) {
            0 => char::arbitrary(g),
            1 => 'é',
            2 => '€',
            3 => '😀',
            _ => (b'a' + (below(g, 26) as u8)) as char,
        };
        if s.len() + c.len_utf8() > max_bytes {
            return s;
        }
        s.push(c);
    }
}

#[derive(Clone, Debug)]
enum Ctl {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    /// A close frame with an arbitrary payload (maybe 1 byte, bad UTF-8).
    RawClose(Vec<u8>),
}

impl Ctl {
    fn gen(g: &mut Gen, corrupt: bool) -> Ctl {
        const GOOD: [u16; 6] = [1000, 1001, 1008, 1011, 3000, 4999];
        const BAD: [u16; 8] = [0, 999, 1005, 1006, 1015, 1016, 2999, 5000];
        match below(g, if corrupt { 5 } else { 4 }) {
            0 => {
                let n = below(g, 126);
                Ctl::Ping(gen_bytes(g, n))
            }
            1 => {
                let n = below(g, 126);
                Ctl::Pong(gen_bytes(g, n))
            }
            2 => Ctl::Close(None),
            3 => {
                let code = if corrupt && bool::arbitrary(g) {
                    *g.choose(&BAD).unwrap_or(&0)
                } else {
                    *g.choose(&GOOD).unwrap_or(&1000)
                };
                let n = below(g, 124);
                Ctl::Close(Some((code, gen_text(g, n))))
            }
            _ => {
                let n = below(g, 5);
                Ctl::RawClose(gen_bytes(g, n))
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>, mask: Option<[u8; 4]>) {
        match self {
            Ctl::Ping(p) => encode_frame(out, OpCode::Ping, p, mask),
            Ctl::Pong(p) => encode_frame(out, OpCode::Pong, p, mask),
            Ctl::Close(None) => encode_frame(out, OpCode::Close, b"", mask),
            Ctl::Close(Some((code, reason))) => out.extend(close_frame(*code, reason, mask)),
            Ctl::RawClose(p) => encode_frame(out, OpCode::Close, p, mask),
        }
    }

    fn expected(&self) -> Decoded {
        match self {
            Ctl::Ping(p) => Decoded::Ping(p.clone()),
            Ctl::Pong(p) => Decoded::Pong(p.clone()),
            Ctl::Close(c) => Decoded::Close(c.clone()),
            Ctl::RawClose(_) => unreachable!("only in corrupt scenarios"),
        }
    }
}

#[derive(Clone, Debug)]
enum Item {
    /// A data message cut into fragments at `cuts`, with `between[i]`
    /// control frames sent after fragment `i`.
    Data {
        text: bool,
        payload: Vec<u8>,
        cuts: Vec<usize>,
        between: Vec<Vec<Ctl>>,
    },
    Ctl(Ctl),
    /// A frame with an arbitrary first byte, mask bit and length form.
    Raw {
        b0: u8,
        masked: bool,
        len: u8,
        payload: Vec<u8>,
    },
    Garbage(Vec<u8>),
}

impl Arbitrary for Item {
    fn arbitrary(g: &mut Gen) -> Item {
        // Corrupt items are generated through `Scenario`, never here.
        Item::gen(g, false)
    }
}

impl Item {
    fn gen(g: &mut Gen, corrupt: bool) -> Item {
        match below(g, if corrupt { 12 } else { 10 }) {
            0..=6 => {
                let text = bool::arbitrary(g);
                let n = gen_len(g);
                let mut payload = if text {
                    gen_text(g, n).into_bytes()
                } else {
                    gen_bytes(g, n)
                };
                if corrupt && text && below(g, 4) == 0 {
                    let at = below(g, payload.len() + 1);
                    payload.insert(at, 0x80 | u8::arbitrary(g));
                }
                let mut cuts: Vec<usize> = (0..below(g, 4))
                    .map(|_| below(g, payload.len() + 1))
                    .collect();
                cuts.sort_unstable();
                let between = (0..cuts.len())
                    .map(|_| (0..below(g, 3)).map(|_| Ctl::gen(g, corrupt)).collect())
                    .collect();
                Item::Data {
                    text,
                    payload,
                    cuts,
                    between,
                }
            }
            7..=9 => Item::Ctl(Ctl::gen(g, corrupt)),
            10 => {
                let n = gen_len(g);
                // Mostly without RSV bits, which would hide the other rules.
                let b0 = u8::arbitrary(g) & if below(g, 4) == 0 { 0xFF } else { 0x8F };
                Item::Raw {
                    b0,
                    masked: below(g, 4) != 0,
                    len: u8::arbitrary(g),
                    payload: gen_bytes(g, n),
                }
            }
            _ => {
                let n = below(g, 20);
                Item::Garbage(gen_bytes(g, n))
            }
        }
    }

    fn fragments(payload: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain([payload.len()].iter()) {
            out.push(payload[from..c].to_vec());
            from = c;
        }
        out
    }

    fn encode(&self, out: &mut Vec<u8>, keys: &mut Lcg, masked: bool) {
        let key = |keys: &mut Lcg| masked.then(|| keys.key());
        match self {
            Item::Data {
                text,
                payload,
                cuts,
                between,
            } => {
                let frags = Item::fragments(payload, cuts);
                let last = frags.len() - 1;
                for (i, f) in frags.iter().enumerate() {
                    let op = match (i, text) {
                        (0, true) => OpCode::Text,
                        (0, false) => OpCode::Binary,
                        _ => OpCode::Continuation,
                    };
                    encode_fragment(out, op, i == last, f, key(keys));
                    for c in between.get(i).into_iter().flatten() {
                        c.encode(out, key(keys));
                    }
                }
            }
            Item::Ctl(c) => c.encode(out, key(keys)),
            Item::Raw {
                b0,
                masked,
                len,
                payload,
            } => {
                let len = match len % 4 {
                    0 => Len::Minimal,
                    1 => Len::Ext16,
                    2 => Len::Ext64,
                    _ => Len::Announce(payload.len() as u64 + (u64::from(*len) << 20)),
                };
                out.extend(raw(*b0, len, masked.then(|| keys.key()), payload));
            }
            Item::Garbage(bytes) => out.extend_from_slice(bytes),
        }
    }

    fn expected(&self, out: &mut Vec<Decoded>) {
        match self {
            Item::Data {
                text,
                payload,
                between,
                ..
            } => {
                out.extend(between.iter().flatten().map(Ctl::expected));
                out.push(if *text {
                    Decoded::Text(String::from_utf8(payload.clone()).expect("clean text"))
                } else {
                    Decoded::Binary(payload.clone())
                });
            }
            Item::Ctl(c) => out.push(c.expected()),
            _ => unreachable!("only in corrupt scenarios"),
        }
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    items: Vec<Item>,
    /// Whether items may break rules (bad UTF-8, bad close codes, raw
    /// frames, garbage, byte flips, a small size limit).
    corrupt: bool,
    client: bool,
    keys: u64,
    limit: usize,
    /// (position modulo the wire length, XOR value).
    flips: Vec<(usize, u8)>,
    /// Feeding piece sizes, cycled.
    pieces: Vec<usize>,
}

impl Arbitrary for Scenario {
    fn arbitrary(g: &mut Gen) -> Scenario {
        let corrupt = below(g, 3) == 0;
        let items: Vec<Item> = (0..below(g, 12)).map(|_| Item::gen(g, corrupt)).collect();
        let biggest = items
            .iter()
            .map(|i| match i {
                Item::Data { payload, .. } => payload.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
            .max(MAX_CONTROL_PAYLOAD);
        let limit = if corrupt && bool::arbitrary(g) {
            below(g, 300)
        } else {
            biggest + below(g, 3)
        };
        let flips = if corrupt {
            (0..below(g, 3))
                .map(|_| (usize::arbitrary(g), u8::arbitrary(g)))
                .collect()
        } else {
            Vec::new()
        };
        let pieces = match below(g, 4) {
            0 => vec![1],
            _ => (0..1 + below(g, 5)).map(|_| 1 + below(g, 40)).collect(),
        };
        Scenario {
            items,
            corrupt,
            client: below(g, 4) == 0,
            keys: u64::arbitrary(g),
            limit,
            flips,
            pieces,
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Scenario>> {
        let me = self.clone();
        let fewer_items = self.items.shrink().map({
            let me = me.clone();
            move |items| Scenario {
                items,
                ..me.clone()
            }
        });
        let fewer_flips = self.flips.shrink().map(move |flips| Scenario {
            flips,
            ..me.clone()
        });
        Box::new(fewer_items.chain(fewer_flips))
    }
}

impl Scenario {
    fn wire(&self, masked: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut keys = Lcg(self.keys);
        for item in &self.items {
            item.encode(&mut out, &mut keys, masked);
        }
        if !out.is_empty() {
            let len = out.len();
            for &(at, x) in &self.flips {
                out[at % len] ^= x;
            }
        }
        out
    }

    fn expected(&self) -> Option<Vec<Decoded>> {
        if self.corrupt {
            return None;
        }
        let mut out = Vec::new();
        for item in &self.items {
            item.expected(&mut out);
        }
        Some(out)
    }
}

fn split_invariance(sc: Scenario) -> TestResult {
    let role = if sc.client {
        Role::Client
    } else {
        Role::Server
    };
    let wire = sc.wire(!sc.client);
    let mut whole = FrameDecoder::new(role, sc.limit);
    let one = run_all(&mut whole, &wire);
    let mut split = FrameDecoder::new(role, sc.limit);
    let many = run_chunks(&mut split, &wire, &sc.pieces);
    if one != many {
        return TestResult::error(format!("one shot {one:?}\nsplit {many:?}"));
    }
    if let Some(want) = sc.expected() {
        if one != (want, None) {
            return TestResult::error(format!("decoded {one:?}"));
        }
        // Every message ended, so nothing may stay buffered.
        if split.buffered() != 0 || whole.buffered() != 0 {
            return TestResult::error("idle decoder holds memory");
        }
    }
    if let Some(v) = one.1 {
        if split.decode(b"\x81\x80") != (2, Err(v)) || split.buffered() != 0 {
            return TestResult::error("not poisoned");
        }
    }
    TestResult::passed()
}

#[test]
fn any_split_gives_the_same_result() {
    QuickCheck::new()
        .tests(1000)
        .rng(Gen::new(40))
        .quickcheck(split_invariance as fn(Scenario) -> TestResult);
}

// ---- Differential test against tungstenite --------------------------

// The tungstenite side is the fuzz target's.

/// Our decoder over the same bytes, also cut after the first close.
fn ours_decode(wire: &[u8], limit: usize) -> (Vec<Decoded>, Option<Violation>) {
    let (mut got, err) = run_all(&mut FrameDecoder::new(Role::Server, limit), wire);
    if let Some(i) = got.iter().position(|d| matches!(d, Decoded::Close(_))) {
        got.truncate(i + 1);
        return (got, None);
    }
    (got, err)
}

fn compare_with_tungstenite(wire: &[u8], limit: usize) -> TestResult {
    let (ours, our_err) = ours_decode(wire, limit);
    let (theirs, their_err) = tungstenite_decode(wire, limit);
    let report = || format!("ours {ours:?} {our_err:?}\ntheirs {theirs:?} {their_err:?}");
    let Some(v) = our_err else {
        // Valid as far as it goes: the same messages and no error.
        if ours != theirs || their_err.is_some() {
            return TestResult::error(report());
        }
        return TestResult::passed();
    };
    // Known, justified divergences where tungstenite goes on past a frame
    // we refuse, so only a common prefix can be asked for:
    // - it accepts non-minimal length encodings (RFC 6455 §5.2 says "the
    //   minimal number of bytes MUST be used"), including a control frame
    //   of <= 125 bytes announced with a 16/64-bit length;
    // - it turns a close code that is not allowed on the wire into a
    //   `Close(1002)` message instead of an error.
    if matches!(
        v,
        Violation::Protocol(NON_MINIMAL_LENGTH | CONTROL_TOO_LONG | CLOSE_CODE)
    ) {
        if !theirs.starts_with(&ours) {
            return TestResult::error(report());
        }
        return TestResult::passed();
    }
    // Otherwise tungstenite must not complete anything we did not. It
    // runs its checks when a frame's payload is complete while we fail
    // as soon as the header (or the bad UTF-8 byte) is in, so it may
    // still be waiting ("stuck") where we already refused.
    if ours != theirs {
        return TestResult::error(report());
    }
    let compatible = match (&v, &their_err) {
        (_, None) => true,
        (Violation::InvalidUtf8, Some(TgError::Utf8)) => true,
        (Violation::TooBig, Some(TgError::Capacity)) => true,
        // Check order differs: tungstenite tests the announced size first.
        (Violation::Protocol(_), Some(TgError::Protocol | TgError::Capacity)) => true,
        _ => false,
    };
    if compatible {
        TestResult::passed()
    } else {
        TestResult::error(report())
    }
}

fn differential(sc: Scenario) -> TestResult {
    compare_with_tungstenite(&sc.wire(true), sc.limit)
}

fn differential_garbage(bytes: Vec<u8>, limit: u8) -> TestResult {
    compare_with_tungstenite(&bytes, usize::from(limit))
}

#[test]
fn agrees_with_tungstenite() {
    QuickCheck::new()
        .tests(1000)
        .rng(Gen::new(40))
        .quickcheck(differential as fn(Scenario) -> TestResult);
    QuickCheck::new()
        .tests(1000)
        .rng(Gen::new(40))
        .quickcheck(differential_garbage as fn(Vec<u8>, u8) -> TestResult);
}

#[test]
fn tungstenite_divergences_are_real() {
    // Documents the exemptions above: tungstenite takes a non-minimal
    // length and a bad close code, we do not.
    let wire = raw(0x82, Len::Ext16, Some(MASK), b"abc");
    assert_eq!(
        tungstenite_decode(&wire, 100).0,
        vec![Decoded::Binary(b"abc".to_vec())]
    );
    assert_eq!(ours_decode(&wire, 100).1, proto(NON_MINIMAL_LENGTH));
    let wire = raw(0x88, Len::Minimal, Some(MASK), &1005u16.to_be_bytes());
    assert!(matches!(
        tungstenite_decode(&wire, 100).0[..],
        [Decoded::Close(Some((1002, _)))]
    ));
    assert_eq!(ours_decode(&wire, 100).1, proto(CLOSE_CODE));
}
