//! A small synchronous test client on tungstenite.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// Why a connect did not upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Status(u16),
    Closed,
}

pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Result<Client, Refused> {
        Self::connect_with(addr, "/ws", &[])
    }

    pub fn connect_with(
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, Refused> {
        let stream = TcpStream::connect(addr).map_err(|_| Refused::Closed)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut req = format!("ws://{addr}{target}")
            .into_client_request()
            .unwrap();
        for (n, v) in headers {
            let name: tungstenite::http::HeaderName = n.parse().unwrap();
            req.headers_mut()
                .insert(name, HeaderValue::from_str(v).unwrap());
        }
        match tungstenite::client(req, stream) {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                Err(Refused::Status(r.status().as_u16()))
            }
            Err(_) => Err(Refused::Closed),
        }
    }

    pub fn send_json(&mut self, v: &serde_json::Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.ws.get_mut().write_all(bytes).unwrap();
    }

    /// The next text message as JSON (pings are answered on the way).
    pub fn next_json(&mut self) -> serde_json::Value {
        loop {
            match self.ws.read().expect("a message before the timeout") {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// Reads (answering pings) for `d`; returns the pings seen.
    pub fn pump_for(&mut self, d: Duration) -> usize {
        let end = Instant::now() + d;
        let mut pings = 0;
        self.ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        while Instant::now() < end {
            match self.ws.read() {
                Ok(Message::Ping(_)) => pings += 1,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("{e}"),
            }
        }
        self.ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        pings
    }

    /// Reads until the server's close frame; returns its code.
    pub fn wait_close(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(c)) => {
                    let _ = self.ws.flush(); // sends our close reply
                    return c.map(|f| u16::from(f.code));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}
