//! The parts of the smol adapter the shared suite does not reach: an
//! application-provided executor, `start` + `add_stream`, blocking calls from
//! a plain thread, and the event stream ending after shutdown.

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::Arc;
use std::time::Duration;

use smol::stream::StreamExt;
use smol::Executor;
use wshub_smol::wshub_core::{Event, HubConfig};
use wshub_smol::Server;

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Reads one unmasked server frame with a short payload: (opcode, payload).
fn read_frame(s: &mut StdStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    (head[0] & 0x0f, payload)
}

#[test]
fn own_executor_add_stream_and_blocking_calls() {
    // The application's executor, run on a thread of its own.
    let ex = Arc::new(Executor::new());
    let (stop_ex, stop_rx) = smol::channel::bounded::<()>(1);
    let runner = {
        let ex = ex.clone();
        std::thread::spawn(move || smol::block_on(ex.run(stop_rx.recv())))
    };

    let server = Server::builder(HubConfig::default())
        .executor(ex)
        .start()
        .unwrap();
    assert_eq!(server.local_addr(), None);
    let handle = server.handle();
    let events = server.events();
    smol::pin!(events);

    // Accepted elsewhere (here: a std listener), handed over.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = StdStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let stream = smol::net::TcpStream::try_from(accepted).unwrap();
    // Blocking use from a plain thread (the test thread).
    smol::block_on(handle.add_stream(stream)).unwrap();

    client.write_all(UPGRADE).unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).unwrap();
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"));
    let conn = match smol::block_on(events.next()) {
        Some(Event::Connected { conn, .. }) => conn,
        other => panic!("{other:?}"),
    };

    // Commands from another plain thread while this one reads.
    let h = handle.clone();
    let sent = std::thread::spawn(move || {
        smol::block_on(h.subscribe(conn, "news")).unwrap();
        smol::block_on(h.publish(
            "news",
            wshub_smol::wshub_core::Message::event("hi", 1.into()),
        ))
        .unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(sent, 1);
    let (op, payload) = read_frame(&mut client);
    assert_eq!(op, 1);
    assert!(String::from_utf8(payload).unwrap().contains("\"hi\""));
    assert_eq!(smol::block_on(handle.stats()).unwrap().connections, 1);

    // Shutdown: the client gets 1001, replies, and the hub completes.
    let h = handle.clone();
    let done = std::thread::spawn(move || smol::block_on(h.shutdown(Duration::from_secs(5))));
    let (op, payload) = read_frame(&mut client);
    assert_eq!((op, &payload[..2]), (8, &1001u16.to_be_bytes()[..]));
    // A masked close reply with the same code (mask 0: payload unchanged).
    client
        .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9])
        .unwrap();
    assert!(done.join().unwrap(), "shutdown completed in time");
    let rest: Vec<Event> = smol::block_on(events.collect());
    assert!(rest
        .iter()
        .any(|e| matches!(e, Event::Closed { conn: c, .. } if *c == conn)));
    assert!(matches!(rest.last(), Some(Event::ShutdownComplete)));
    assert!(
        smol::block_on(handle.stats()).is_err(),
        "the hub has stopped"
    );

    // The socket is closed (FIN, not reset) after the close handshake.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();

    drop(stop_ex);
    // The runner ends when its stop channel closes.
    let _ = runner.join().unwrap();
}
