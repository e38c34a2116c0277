//! Broker batches count input by input against a driver's round, on every
//! adapter: a flood of `BrokerInput::Batch`es to a subscriber that reads
//! never queues more than a round's worth before writing, so it is never cut
//! as a slow consumer and gets every publication, in order.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tungstenite::Message as WsMessage;
use wshub_core::broker::{BrokerInput, BrokerOutput};
use wshub_core::command::Command;
use wshub_core::{HistoryConfig, HubCommands, HubConfig};

const BATCHES: usize = 100;
const PER_BATCH: usize = 64;

fn config() -> HubConfig {
    HubConfig {
        history: HistoryConfig::off(),
        ..HubConfig::default()
    }
}

fn batch(b: usize) -> Command {
    let inputs = (0..PER_BATCH)
        .map(|i| BrokerInput::Publication {
            channel: "c".into(),
            json: Bytes::from(format!(
                r#"{{"type":"event","channel":"c","data":{}}}"#,
                b * PER_BATCH + i
            )),
            position: None,
        })
        .collect();
    Command::Broker(BrokerInput::Batch(inputs))
}

/// Subscribes a client, floods batches through `tell`, and reads them all.
fn flood(addr: std::net::SocketAddr, hub: &(dyn HubCommands + Sync)) {
    hub.command(Command::Broker(BrokerInput::Up)).unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws").as_str(), stream).unwrap();
    ws.send(WsMessage::text(
        r#"{"type":"subscribe","id":1,"channel":"c"}"#,
    ))
    .unwrap();
    let _ack = ws.read().unwrap();
    hub.command(Command::Broker(BrokerInput::Subscribed {
        channel: "c".into(),
    }))
    .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for b in 0..BATCHES {
                hub.tell(batch(b)).unwrap();
            }
        });
        let mut next = 0;
        while next < BATCHES * PER_BATCH {
            match ws.read() {
                Ok(WsMessage::Text(t)) => {
                    for line in t.as_str().lines() {
                        let m: Value = serde_json::from_str(line).unwrap();
                        assert_eq!(m["data"], next, "in order, none lost");
                        next += 1;
                    }
                }
                Ok(WsMessage::Close(f)) => panic!("cut after {next}: {f:?}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    panic!("stalled after {next}")
                }
                Err(e) => panic!("after {next}: {e}"),
            }
        }
    });
    assert_eq!(hub.stats().unwrap().slow_consumers, 0);
}

fn ignore(_: BrokerOutput) {}

#[test]
fn blocking_counts_batches_in_its_rounds() {
    let server = wshub_blocking::Server::builder(config())
        .broker(ignore)
        .bind("127.0.0.1:0")
        .unwrap();
    flood(server.local_addr().unwrap(), &server.handle());
}

#[test]
fn smol_counts_batches_in_its_rounds() {
    let server = smol::block_on(
        wshub_smol::Server::builder(config())
            .broker(ignore)
            .bind("127.0.0.1:0"),
    )
    .unwrap();
    let handle = server.handle();
    struct Blocking(wshub_smol::Handle);
    impl HubCommands for Blocking {
        fn command(&self, c: Command) -> Result<wshub_core::command::Reply, wshub_core::Stopped> {
            smol::block_on(self.0.command(c))
        }
        fn tell(&self, c: Command) -> Result<(), wshub_core::Stopped> {
            smol::block_on(self.0.tell(c))
        }
    }
    flood(server.local_addr().unwrap(), &Blocking(handle));
}

#[test]
fn tokio_counts_batches_in_its_rounds() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(
            wshub_tokio::Server::builder(config())
                .broker(ignore)
                .bind("127.0.0.1:0"),
        )
        .unwrap();
    let handle = server.handle().blocking();
    flood(server.local_addr().unwrap(), &handle);
}
