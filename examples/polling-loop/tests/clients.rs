//! Real tungstenite clients against a `PollingServer` running on its own thread.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message as WsMessage, WebSocket};
use wshub_core::command::Command;
use wshub_core::{HubCommands, HubConfig, Message};
use wshub_example_polling::{Handle, LoopStats, PollingServer};

/// A server loop on a thread, stopped through `run_until`'s flag on drop.
struct Running {
    handle: Handle,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    fn start(config: HubConfig) -> Running {
        let mut server = PollingServer::bind("127.0.0.1:0", config).unwrap();
        let handle = server.handle();
        let addr = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || server.run_until(&flag));
        Running {
            handle,
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn stats(&self) -> LoopStats {
        self.handle.loop_stats().unwrap()
    }

    /// Polls the stats until `done` holds (or fails after 2 s).
    fn wait_stats(&self, what: &str, done: impl Fn(&LoopStats) -> bool) -> LoopStats {
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            let s = self.stats();
            if done(&s) {
                return s;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {s:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn join(mut self) -> io::Result<()> {
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            self.handle.wake();
            thread.join().unwrap().unwrap();
        }
    }
}

struct Client {
    ws: WebSocket<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
        Client { ws }
    }

    fn send_json(&mut self, v: Value) {
        self.ws.send(WsMessage::text(v.to_string())).unwrap();
    }

    fn next_json(&mut self) -> Value {
        loop {
            match self.ws.read().expect("a message before the timeout") {
                WsMessage::Text(t) => return serde_json::from_str(&t).unwrap(),
                WsMessage::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    fn subscribe(&mut self, channel: &str, id: u64) {
        self.send_json(json!({"type": "subscribe", "channel": channel, "id": id}));
        let ack = self.next_json();
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["id"], id, "{ack}");
    }
}

#[test]
fn subscribe_is_acked_and_published_messages_arrive() {
    let server = Running::start(HubConfig::default());
    let mut client = Client::connect(server.addr);
    client.subscribe("c", 1);

    let n = server
        .handle
        .publish("c", Message::new("news", json!({"k": 1})))
        .unwrap();
    assert_eq!(n, 1);
    let got = client.next_json();
    assert_eq!(got["type"], "news", "{got}");
    assert_eq!(got["channel"], "c", "{got}");
    assert_eq!(got["data"], json!({"k": 1}), "{got}");

    // Fire-and-forget publishes come through the same command channel.
    for i in 0..3 {
        let publish = Command::publish("c", Message::new("seq", json!(i)));
        server.handle.tell(publish).unwrap();
    }
    for i in 0..3 {
        assert_eq!(client.next_json()["data"], json!(i));
    }
    // Nobody listens on another channel.
    let n = server
        .handle
        .publish("other", Message::new("x", Value::Null))
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn ping_gets_a_pong() {
    let server = Running::start(HubConfig::default());
    let mut client = Client::connect(server.addr);
    client.send_json(json!({"type": "ping", "id": 7}));
    let pong = client.next_json();
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], 7, "{pong}");
}

#[test]
fn fifty_clients_all_receive_a_broadcast() {
    let server = Running::start(HubConfig::default());
    let mut clients: Vec<Client> = (0..50).map(|_| Client::connect(server.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.subscribe("c", i as u64);
    }
    assert_eq!(server.stats().hub.connections, 50);

    for round in 0..3 {
        let n = server
            .handle
            .publish("c", Message::new("all", json!({"round": round})))
            .unwrap();
        assert_eq!(n, 50);
    }
    for c in &mut clients {
        for round in 0..3 {
            let got = c.next_json();
            assert_eq!(got["type"], "all", "{got}");
            assert_eq!(got["data"]["round"], round, "{got}");
        }
    }
}

#[test]
fn a_client_gone_mid_frame_frees_its_state() {
    let server = Running::start(HubConfig::default());
    // Another client stays, so "back to the previous value" is not just zero.
    let mut stays = Client::connect(server.addr);
    stays.subscribe("c", 1);
    let before = server.stats();
    assert_eq!(before.hub.connections, 1);

    let mut leaves = Client::connect(server.addr);
    leaves.subscribe("c", 2);
    leaves.subscribe("only-mine", 3);
    let during = server.stats();
    assert_eq!(during.hub.connections, before.hub.connections + 1);
    assert_eq!(during.sockets, before.sockets + 1);
    assert_eq!(during.hub.channels, before.hub.channels + 1);

    // A masked text frame announcing 200 bytes, then 10 of them, then gone.
    let stream = leaves.ws.get_mut();
    stream
        .write_all(&[0x81, 0x80 | 126, 0, 200, 1, 2, 3, 4])
        .unwrap();
    stream.write_all(&[b'x'; 10]).unwrap();
    stream.flush().unwrap();
    drop(leaves);

    let after = server.wait_stats("the connection to go", |s| {
        s.hub.connections == before.hub.connections
    });
    assert_eq!(after.sockets, before.sockets);
    assert_eq!(after.hub.channels, before.hub.channels);
    assert_eq!(after.hub.pending, 0);
    let n = server
        .handle
        .publish("c", Message::new("still", Value::Null))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(stays.next_json()["type"], "still");
}

#[test]
fn output_beyond_the_socket_buffer_waits_for_writability() {
    const MESSAGES: usize = 12;
    const SIZE: usize = 2 * 1024 * 1024;
    let server = Running::start(HubConfig {
        max_queued_bytes: 64 * 1024 * 1024,
        ..HubConfig::default()
    });
    let mut client = Client::connect(server.addr);
    client.subscribe("big", 1);

    // The client reads nothing while 24 MiB are published: more than loopback
    // socket buffers hold, so writes hit WouldBlock and wait for writability.
    let body = "x".repeat(SIZE);
    for i in 0..MESSAGES {
        let m = Message::new("big", json!({"i": i, "body": body}));
        assert_eq!(server.handle.publish("big", m).unwrap(), 1);
    }
    let s = server.stats();
    assert!(s.blocked_writes > 0, "{s:?}");

    for i in 0..MESSAGES {
        let got = client.next_json();
        assert_eq!(got["data"]["i"], i);
        assert_eq!(got["data"]["body"].as_str().unwrap().len(), SIZE);
    }
    // Everything was reported written: the hub's byte counter caught up.
    server.wait_stats("all output written", |s| {
        s.hub.bytes_out as usize > MESSAGES * SIZE
    });
    client.send_json(json!({"type": "ping", "id": 2}));
    assert_eq!(client.next_json()["type"], "pong");
}

#[test]
fn graceful_shutdown_closes_clients_and_ends_the_loop() {
    let server = Running::start(HubConfig::default());
    let mut client = Client::connect(server.addr);
    client.subscribe("c", 1);
    server.handle.shutdown().unwrap();
    let code = loop {
        match client.ws.read() {
            Ok(WsMessage::Close(frame)) => {
                let _ = client.ws.flush(); // our close reply
                break frame.map(|f| u16::from(f.code));
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code, Some(1001));
    // The loop ends by itself once the last connection is gone.
    server.join().unwrap();
}

#[test]
fn the_loop_can_be_stepped_and_published_to_on_its_own_thread() {
    let mut server = PollingServer::bind("127.0.0.1:0", HubConfig::default()).unwrap();
    let addr = server.local_addr();
    let client = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.subscribe("c", 1);
        c.next_json()
    });
    let step = Some(Duration::from_millis(10));
    let end = Instant::now() + Duration::from_secs(2);
    while server.hub().subscriber_count("c") == 0 {
        assert!(Instant::now() < end, "the client never subscribed");
        server.step(step).unwrap();
    }
    // Same thread, no command channel: mutate the hub between steps.
    let n = server
        .hub_mut()
        .publish(Instant::now(), "c", Message::new("direct", json!("hi")));
    assert_eq!(n, 1);
    while !client.is_finished() {
        assert!(Instant::now() < end, "the client never got the message");
        server.step(step).unwrap();
    }
    let got = client.join().unwrap();
    assert_eq!(got["type"], "direct", "{got}");
    assert_eq!(got["data"], "hi", "{got}");
}
