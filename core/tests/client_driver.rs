//! The pieces every client driver shares: commands as values, the builder's
//! setup, socket input as values and the one output loop.

use std::cell::Cell;
use std::time::Instant;

use serde_json::json;
use wshub_core::client::{
    Client, ClientConfig, ClientEvent, ClientSetup, ClientState, Command, DisconnectReason,
    Endpoint, Output, SendError, SocketInput, StartError,
};
use wshub_core::frame::{close_frame, Decoded, FrameDecoder, Role};
use wshub_core::handshake::accept_key;

/// The only clock read in these tests.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn config(urls: &[&str]) -> ClientConfig {
    ClientConfig::new(urls.iter().map(|u| Endpoint::parse(u).unwrap()).collect())
}

/// Everything the client has to say, as outputs.
fn outputs(client: &mut Client) -> Vec<Output> {
    std::iter::from_fn(|| client.poll_output()).collect()
}

/// A started client whose socket is up and whose handshake bytes were taken.
fn dialed(seed: u64) -> (Client, Vec<u8>) {
    let now = t0();
    let mut client = ClientSetup::new(config(&["ws://a.test/ws"]))
        .seed(seed)
        .start(now, || unreachable!("seeded"))
        .unwrap();
    assert!(matches!(
        outputs(&mut client)[..],
        [Output::Event(ClientEvent::Connect { .. })]
    ));
    client.handle_connected(now);
    let Some(Output::Transmit(request)) = client.poll_output() else {
        panic!("no upgrade request");
    };
    (client, request)
}

/// Answers the client's upgrade `request` with a valid 101 and takes what
/// it says on connecting.
fn accept(client: &mut Client, request: &[u8]) {
    let now = t0();
    let request = String::from_utf8(request.to_vec()).unwrap();
    let key = request
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("a key header");
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    client.handle_socket(now, SocketInput::Read(response.into_bytes()));
    assert_eq!(client.state(), ClientState::Connected { endpoint: 0 });
    let _ = outputs(client);
}

#[test]
fn setup_starts_with_subscriptions_in_place_and_the_seed_given() {
    let now = t0();
    let os_seed_calls = Cell::new(0);
    let client = ClientSetup::new(config(&["ws://a.test/ws"]))
        .subscribe("b")
        .subscribe(String::from("a"))
        .start(now, || {
            os_seed_calls.set(os_seed_calls.get() + 1);
            42
        })
        .unwrap();
    assert_eq!(
        os_seed_calls.get(),
        1,
        "no seed given: the OS seed is drawn"
    );
    assert_eq!(client.subscriptions(), ["a", "b"]);
    assert_eq!(
        client.state(),
        ClientState::Connecting {
            attempt: 1,
            endpoint: 0
        }
    );

    // The same seed gives the same WebSocket key; another seed another key.
    let (_, r1) = dialed(9);
    let (_, r2) = dialed(9);
    let (_, r3) = dialed(10);
    assert!(r1.starts_with(b"GET /ws HTTP/1.1\r\n"));
    assert_eq!(r1, r2);
    assert_ne!(r1, r3);
}

#[test]
fn start_plain_refuses_wss_before_anything_else() {
    let now = t0();
    let refused = ClientSetup::new(config(&["ws://a.test/", "wss://b.test/", "wss://c.test/"]))
        .start_plain("wshub-test", now, || 1)
        .unwrap_err();
    assert_eq!(
        refused,
        StartError::TlsUnsupported {
            endpoint: 1,
            driver: "wshub-test"
        }
    );
    assert!(refused.to_string().starts_with("endpoint 1 is wss://"));

    // No endpoints at all: the config's own error, unchanged.
    let invalid = ClientSetup::new(ClientConfig::new(Vec::new()))
        .start_plain("wshub-test", now, || 1)
        .unwrap_err();
    let StartError::Config(e) = &invalid else {
        panic!("{invalid:?}");
    };
    assert_eq!(invalid.to_string(), e.to_string());
    assert_eq!(
        ClientSetup::new(ClientConfig::new(Vec::new()))
            .start(now, || 1)
            .unwrap_err(),
        *e
    );

    let client = ClientSetup::new(config(&["ws://a.test/"]))
        .start_plain("wshub-test", now, || 1)
        .unwrap();
    assert!(matches!(client.state(), ClientState::Connecting { .. }));
}

#[test]
fn apply_carries_out_commands_and_hands_back_the_send_reply() {
    let now = t0();
    let mut client = Client::new(config(&["ws://a.test/ws"]), now, 1).unwrap();
    assert_eq!(
        client.apply(now, Command::<()>::Subscribe("x".into())),
        None
    );
    assert_eq!(
        client.apply(now, Command::<()>::Subscribe("y".into())),
        None
    );
    assert_eq!(
        client.apply(now, Command::<()>::Unsubscribe("x".into())),
        None
    );
    assert_eq!(client.subscriptions(), ["y"]);
    // Not connected, no offline queue: refused, and the reply handle comes back.
    assert_eq!(
        client.apply(now, Command::Send(json!({"a": 1}), 7u8)),
        Some((7, Err(SendError::NotConnected)))
    );
    assert_eq!(client.apply(now, Command::<()>::Close), None);
    assert_eq!(client.poll_event(), Some(ClientEvent::Closed));
    assert_eq!(
        client.apply(now, Command::Send(json!(1), "r")),
        Some(("r", Err(SendError::Closed)))
    );
}

#[test]
fn apply_send_when_connected_goes_out_as_a_text_frame() {
    let now = t0();
    let (mut client, request) = dialed(1);
    // Mid-handshake is not connected yet (and there is no offline queue).
    assert_eq!(
        client.apply(now, Command::Send(json!("early"), ())),
        Some(((), Err(SendError::NotConnected)))
    );
    accept(&mut client, &request);
    assert_eq!(
        client.apply(now, Command::Send(json!({"type": "hi"}), "reply")),
        Some(("reply", Ok(())))
    );
    let Some(Output::Transmit(bytes)) = client.poll_output() else {
        panic!("nothing sent");
    };
    let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
    let (_, frame) = decoder.decode(&bytes);
    assert_eq!(
        frame.unwrap(),
        Some(Decoded::Text(r#"{"type":"hi"}"#.to_owned()))
    );
}

#[test]
fn handle_socket_is_the_matching_input() {
    let now = t0();
    // Eof during the handshake: the attempt fails like handle_eof's does.
    let (mut a, _) = dialed(3);
    let (mut b, _) = dialed(3);
    a.handle_socket(now, SocketInput::Eof);
    b.handle_eof(now);
    assert_eq!(outputs(&mut a), outputs(&mut b));
    assert_eq!(a.state(), b.state());

    let (mut a, _) = dialed(3);
    let (mut b, _) = dialed(3);
    a.handle_socket(now, SocketInput::IoError);
    b.handle_io_error(now);
    let out = outputs(&mut a);
    assert_eq!(out, outputs(&mut b));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(ClientEvent::ConnectFailed {
            reason: DisconnectReason::Io,
            ..
        })
    )));

    // A refusing handshake response fed as a read.
    let (mut a, _) = dialed(3);
    let (mut b, _) = dialed(3);
    let response = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
    a.handle_socket(now, SocketInput::Read(response.to_vec()));
    b.handle_read(now, response);
    assert_eq!(outputs(&mut a), outputs(&mut b));
    assert_eq!(a.state(), ClientState::AuthFailed { status: 401 });
}

#[test]
fn poll_output_gives_bytes_before_the_close_socket_that_follows_them() {
    let now = t0();
    let (mut client, _) = dialed(5);
    // Closing mid-handshake: the socket is dropped at once, then Closed.
    client.close(now);
    assert_eq!(
        outputs(&mut client),
        [
            Output::Event(ClientEvent::CloseSocket),
            Output::Event(ClientEvent::Closed)
        ]
    );
    assert_eq!(client.poll_output(), None);

    // Closing while connected: the close frame is queued, and the server's
    // reply (read before the driver wrote anything) drops the socket. The
    // frame still comes out first, then the events.
    let (mut client, request) = dialed(5);
    accept(&mut client, &request);
    client.close(now);
    assert_eq!(client.state(), ClientState::Closed);
    client.handle_socket(now, SocketInput::Read(close_frame(1000, "", None)));
    let out = outputs(&mut client);
    let [Output::Transmit(bytes), Output::Event(ClientEvent::CloseSocket), Output::Event(ClientEvent::Disconnected { .. }), Output::Event(ClientEvent::Closed)] =
        &out[..]
    else {
        panic!("{out:?}");
    };
    let (_, frame) = FrameDecoder::new(Role::Server, 1 << 20).decode(bytes);
    assert_eq!(
        frame.unwrap(),
        Some(Decoded::Close(Some((1000, String::new()))))
    );
}
