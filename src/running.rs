//! One synchronous face over the three adapters, so the `wshub` binary (and
//! tests) can serve on any runtime with the same code.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use wshub_core::broker::{BrokerInput, BrokerLink};
use wshub_core::command::{Command, HubCommands, Reply, Stopped};
use wshub_core::{Event, HubConfig};

use crate::cli::Runtime;

/// A hub served on one of the runtimes, driven from plain threads: its
/// commands are the [`HubCommands`] methods.
pub struct Running {
    inner: Inner,
    addr: std::net::SocketAddr,
}

enum Inner {
    Blocking {
        server: Mutex<wshub_blocking::Server>,
        handle: wshub_blocking::Handle,
    },
    Smol {
        handle: wshub_smol::Handle,
        events: smol::channel::Receiver<Event>,
        _server: Mutex<wshub_smol::Server>,
    },
    Tokio {
        handle: wshub_tokio::BlockingHandle,
        events: Mutex<tokio::sync::mpsc::Receiver<Event>>,
        _server: Mutex<wshub_tokio::Server>,
        // Dropped last: the runtime must outlive the server's tasks.
        _runtime: tokio::runtime::Runtime,
    },
}

impl Running {
    /// Binds `listen` and serves `config` on `runtime`.
    pub fn start(runtime: Runtime, config: HubConfig, listen: &str) -> io::Result<Running> {
        Running::start_with(runtime, config, listen, None)
    }

    /// [`Running::start`] as one node of many: the hub's broker outputs go
    /// to `broker` (the driver reports back through [`Running::broker_sink`]).
    pub fn start_with(
        runtime: Runtime,
        config: HubConfig,
        listen: &str,
        broker: Option<Box<dyn BrokerLink>>,
    ) -> io::Result<Running> {
        match runtime {
            Runtime::Blocking => {
                let mut builder = wshub_blocking::Server::builder(config);
                if let Some(link) = broker {
                    builder = builder.broker(link);
                }
                let server = builder.bind(listen)?;
                let addr = server
                    .local_addr()
                    .ok_or_else(|| io::Error::other("no address"))?;
                let handle = server.handle();
                Ok(Running {
                    inner: Inner::Blocking {
                        server: Mutex::new(server),
                        handle,
                    },
                    addr,
                })
            }
            Runtime::Smol => {
                let mut builder = wshub_smol::Server::builder(config);
                if let Some(link) = broker {
                    builder = builder.broker(link);
                }
                let server = smol::block_on(builder.bind(listen))?;
                let addr = server
                    .local_addr()
                    .ok_or_else(|| io::Error::other("no address"))?;
                Ok(Running {
                    inner: Inner::Smol {
                        handle: server.handle(),
                        events: server.events(),
                        _server: Mutex::new(server),
                    },
                    addr,
                })
            }
            Runtime::Tokio => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                let mut builder = wshub_tokio::Server::builder(config);
                if let Some(link) = broker {
                    builder = builder.broker(link);
                }
                let mut server = runtime.block_on(builder.bind(listen))?;
                let addr = server
                    .local_addr()
                    .ok_or_else(|| io::Error::other("no address"))?;
                let events = Mutex::new(server.take_events());
                Ok(Running {
                    inner: Inner::Tokio {
                        handle: server.handle().blocking(),
                        events,
                        _server: Mutex::new(server),
                        _runtime: runtime,
                    },
                    addr,
                })
            }
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The next event; `None` once the hub has stopped. Events wait in a
    /// bounded channel (the adapters' default capacity): a caller that falls
    /// behind gets an `Event::EventsDropped` with the count of those lost.
    pub fn next_event(&self) -> Option<Event> {
        match &self.inner {
            Inner::Blocking { server, .. } => server.lock().ok()?.events().recv().ok(),
            Inner::Smol { events, .. } => events.recv_blocking().ok(),
            Inner::Tokio { events, .. } => events.lock().ok()?.blocking_recv(),
        }
    }

    /// The next event within `timeout`.
    pub fn next_event_timeout(&self, timeout: Duration) -> Option<Event> {
        match &self.inner {
            Inner::Blocking { server, .. } => {
                server.lock().ok()?.events().recv_timeout(timeout).ok()
            }
            Inner::Smol { events, .. } => smol::block_on(async {
                smol::future::or(async { events.recv().await.ok() }, async {
                    smol::Timer::after(timeout).await;
                    None
                })
                .await
            }),
            Inner::Tokio { events, .. } => {
                let deadline = std::time::Instant::now() + timeout;
                loop {
                    match events.lock().ok()?.try_recv() {
                        Ok(e) => return Some(e),
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
                        Err(_) if std::time::Instant::now() >= deadline => return None,
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            }
        }
    }

    /// Where a broker driver reports: each input becomes a
    /// `Command::Broker` for the hub; false once the hub has stopped.
    pub fn broker_sink(&self) -> Box<dyn Fn(BrokerInput) -> bool + Send + Sync> {
        match &self.inner {
            Inner::Blocking { handle, .. } => {
                let handle = handle.clone();
                Box::new(move |input| handle.tell(Command::Broker(input)).is_ok())
            }
            Inner::Smol { handle, .. } => {
                let handle = handle.clone();
                Box::new(move |input| smol::block_on(handle.tell(Command::Broker(input))).is_ok())
            }
            Inner::Tokio { handle, .. } => {
                let handle = handle.clone();
                Box::new(move |input| handle.tell(Command::Broker(input)).is_ok())
            }
        }
    }

    /// Graceful shutdown: true when every client got 1001 and was flushed
    /// before `deadline`.
    pub fn shutdown(&self, deadline: Duration) -> bool {
        match &self.inner {
            Inner::Blocking { handle, .. } => handle.shutdown(deadline),
            Inner::Smol { handle, .. } => smol::block_on(handle.shutdown(deadline)),
            Inner::Tokio { handle, .. } => handle.shutdown(deadline),
        }
    }
}

/// The hub's commands, on whichever runtime serves it.
impl HubCommands for Running {
    fn command(&self, command: Command) -> Result<Reply, Stopped> {
        match &self.inner {
            Inner::Blocking { handle, .. } => handle.command(command),
            Inner::Smol { handle, .. } => smol::block_on(handle.command(command)),
            Inner::Tokio { handle, .. } => handle.command(command),
        }
    }

    fn tell(&self, command: Command) -> Result<(), Stopped> {
        match &self.inner {
            Inner::Blocking { handle, .. } => handle.tell(command),
            Inner::Smol { handle, .. } => smol::block_on(handle.tell(command)),
            Inner::Tokio { handle, .. } => handle.tell(command),
        }
    }
}
