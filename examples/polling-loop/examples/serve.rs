//! Serves the hub on 127.0.0.1:8081 from one polling loop and publishes a tick
//! every second to channel `ticks`, from another thread through a [`Handle`].
//!
//! ```text
//! cargo run -p wshub-example-polling --example serve
//! websocat ws://127.0.0.1:8081/ws   # then send {"type":"subscribe","channel":"ticks","id":1}
//! ```
//!
//! [`Handle`]: wshub_example_polling::Handle

use std::time::Duration;

use serde_json::json;
use wshub_core::{Event, HubCommands, HubConfig, Message};
use wshub_example_polling::PollingServer;

fn main() -> std::io::Result<()> {
    let mut server = PollingServer::bind("127.0.0.1:8081", HubConfig::default())?;
    server.on_event(|_hub, _now, event| match event {
        Event::Connected { conn, .. } => eprintln!("{conn} connected"),
        Event::Closed { conn, reason, .. } => eprintln!("{conn} closed: {reason:?}"),
        _ => {}
    });
    eprintln!("serving ws://{}/ws", server.local_addr());

    // The application's side: a mpsc command plus `Poller::notify` per publish.
    let handle = server.handle();
    std::thread::spawn(move || {
        for n in 0u64.. {
            std::thread::sleep(Duration::from_secs(1));
            let tick = Message::new("tick", json!({ "n": n }));
            if handle.publish("ticks", tick).is_err() {
                return; // the loop stopped
            }
        }
    });

    server.run()
}
