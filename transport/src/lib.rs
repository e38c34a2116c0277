//! The TLS transport of wshub's client drivers (`wss://`): rustls, which is
//! itself a sans-IO state machine, wrapped as one [`Session`] that every
//! driver (blocking, smol, tokio) feeds bytes read from its socket and drains
//! bytes to write, in its own runtime's idiom. The hub core never sees TLS:
//! it reads and writes plaintext through the driver.
//!
//! - Crypto provider: rustls with **ring** (`default-features = false`,
//!   features `ring`, `std`, `tls12`). ring builds with a C compiler alone;
//!   aws-lc-rs, rustls's default, also needs cmake, which a fresh machine of
//!   this project's kind does not have.
//! - Roots: the Mozilla roots compiled in from `webpki-roots` (no dependency
//!   on the operating system's store), or, with a CA file
//!   ([`Connector::new`]), exactly the certificates in that PEM file.
//! - The server name (SNI, and the name the certificate must be valid for)
//!   is the endpoint's host; an IP address host is checked against the
//!   certificate's IP addresses. Verification is always on: there is no way
//!   to turn it off.
//!
//! A failed handshake is an `io::Error` carrying a
//! [`wshub_core::client::TlsFailure`] with rustls's reason (for example
//! `invalid peer certificate: UnknownIssuer`), which the drivers report as
//! [`wshub_core::client::DisconnectReason::Tls`]: a failure of that endpoint,
//! so failover goes on to the next.
//!
//! A blocking handshake over a `TcpStream`:
//!
//! ```no_run
//! use std::net::TcpStream;
//! use wshub_tls::{Connector, Session};
//!
//! let connector = Connector::new(None)?; // the webpki roots
//! let mut tcp = TcpStream::connect("example.com:443")?;
//! let mut session = Session::new(&connector, "example.com")?;
//! session.handshake_blocking(&mut tcp)?;
//! session.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, RootCertStore};
use wshub_core::client::SocketInput;
pub use wshub_core::client::TlsFailure;

/// Largest ciphertext buffered by rustls before it is written out; rustls's
/// default is unlimited. The drivers write everything out after each send,
/// so this only bounds a writer that is stuck.
const SEND_BUFFER: usize = 256 * 1024;

/// The TLS settings of one client, built once and shared by its connection
/// attempts (cheap to clone).
#[derive(Clone)]
pub struct Connector {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl Connector {
    /// Trusts the certificates of the PEM file `ca_file` (a private CA), or
    /// with `None` the built-in webpki roots. An unreadable file, or one with
    /// no valid certificate, is an `InvalidInput` error that names the file.
    pub fn new(ca_file: Option<&Path>) -> io::Result<Connector> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                let bad = |why: String| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("CA file {}: {why}", path.display()),
                    )
                };
                let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
                let mut certs = Vec::new();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    certs.push(cert.map_err(|e| bad(format!("not a PEM file ({e})")))?);
                }
                if certs.is_empty() {
                    return Err(bad("no certificate in it".into()));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| bad(format!("invalid certificate ({e})")))?;
                }
            }
        }
        // Deprecated since rustls 0.23.48 only because ring has no
        // post-quantum key exchange; aws-lc-rs, which has, does not build
        // without cmake (see the crate docs).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Connector {
            config: Arc::new(config),
        })
    }
}

/// What [`Session::handle_read`] found besides plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The server ended the TLS stream (close_notify): no more plaintext.
    pub eof: bool,
    /// The session has bytes to write ([`Session::poll_transmit`]), for
    /// example an alert or a key update answer.
    pub wants_write: bool,
}

/// One client TLS connection as a sans-IO state machine: bytes read from
/// the socket go in with [`Session::handle_read`] and come out as
/// plaintext; plaintext to send goes in with [`Session::send`]; what the
/// socket must carry comes out of [`Session::poll_transmit`], which the
/// driver drains after every input.
pub struct Session {
    conn: ClientConnection,
    /// Plaintext that arrived with the handshake's last flight.
    early: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handshaking", &self.conn.is_handshaking())
            .finish_non_exhaustive()
    }
}

/// A rustls error as the `io::Error` the drivers hand to the core.
fn failure(e: rustls::Error) -> io::Error {
    TlsFailure(e.to_string()).into_io()
}

impl Session {
    /// A session to `host` (the endpoint's host: a DNS name or an IP
    /// address), whose certificate must be valid for that name.
    pub fn new(connector: &Connector, host: &str) -> io::Result<Session> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            TlsFailure(format!("{host:?} is not a valid TLS server name")).into_io()
        })?;
        let mut conn =
            ClientConnection::new(Arc::clone(&connector.config), name).map_err(failure)?;
        conn.set_buffer_limit(Some(SEND_BUFFER));
        Ok(Session {
            conn,
            early: Vec::new(),
        })
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feeds bytes read from the socket (an empty slice: the socket reached
    /// EOF), appending the plaintext they carry to `plain`. An error is a TLS
    /// failure ([`TlsFailure`]): a certificate problem during the handshake,
    /// a bad record after it. The session may still have an alert to write.
    pub fn handle_read(
        &mut self,
        mut bytes: &[u8],
        plain: &mut Vec<u8>,
    ) -> io::Result<ReadOutcome> {
        plain.append(&mut self.early);
        let mut eof = false;
        loop {
            let at_end = bytes.is_empty();
            self.conn.read_tls(&mut bytes)?;
            self.conn.process_new_packets().map_err(failure)?;
            let mut buf = [0u8; 4096];
            loop {
                match self.conn.reader().read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The socket ended without close_notify.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        eof = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if bytes.is_empty() || at_end || eof {
                break;
            }
        }
        Ok(ReadOutcome {
            eof,
            wants_write: self.conn.wants_write(),
        })
    }

    /// Queues plaintext to send; [`Session::poll_transmit`] has it
    /// encrypted.
    pub fn send(&mut self, plain: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(plain)
    }

    /// Queues a close_notify alert, after what was sent before.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// Everything the socket must carry now (records, alerts), or `None`.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Runs the handshake over a blocking stream (its read and write
    /// timeouts bound it). Plaintext that arrives with the last flight is
    /// kept for the first [`Session::handle_read`].
    pub fn handshake_blocking<S: Read + Write>(&mut self, stream: &mut S) -> io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(out) = self.poll_transmit() {
                stream.write_all(&out)?;
            }
            if !self.is_handshaking() {
                return stream.flush();
            }
            let n = match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = self.handshake_read(&buf[..n]) {
                // Best effort: the alert that tells the server why.
                if let Some(out) = self.poll_transmit() {
                    let _ = stream.write_all(&out);
                }
                return Err(e);
            }
        }
    }

    /// One read of the handshake (for a driver that runs the handshake in
    /// its own runtime: write out [`Session::poll_transmit`], read, call
    /// this, until [`Session::is_handshaking`] is false). `bytes` empty: the
    /// socket ended, which is an error during the handshake.
    pub fn handshake_read(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the TLS handshake",
            ));
        }
        let mut early = std::mem::take(&mut self.early);
        let result = self.handle_read(bytes, &mut early);
        self.early = early;
        result.map(drop)
    }
}

/// A [`Session`] shared by a connection's reader and writer (threads or
/// tasks): the reader decrypts under its lock, the writer encrypts under it
/// and is the only one to write the socket, so records go out in order.
/// The lock is never held across a read, a write or an `.await`.
#[derive(Clone, Debug)]
pub struct SharedSession(Arc<Mutex<Session>>);

impl SharedSession {
    /// Shares a session whose handshake is done.
    pub fn new(session: Session) -> Self {
        SharedSession(Arc::new(Mutex::new(session)))
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        // A reader or writer that panicked left nothing half-done that
        // matters more than the socket it is about to lose.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes read from the socket (empty: EOF) as the client's socket input:
    /// the plaintext they carried, then [`SocketInput::Eof`] if the stream
    /// ended (a close_notify, or the socket's EOF); [`SocketInput::IoError`]
    /// for a TLS error. Nothing for a record without application data (a
    /// session ticket). The flag says the writer must flush (an answer or an
    /// alert is queued: call [`SharedSession::encrypt`] with `None`).
    pub fn read(&self, bytes: &[u8]) -> (Vec<SocketInput>, bool) {
        let mut plain = Vec::new();
        let outcome = self.lock().handle_read(bytes, &mut plain);
        let mut inputs = Vec::new();
        if !plain.is_empty() {
            inputs.push(SocketInput::Read(plain));
        }
        match outcome {
            Ok(o) => {
                if o.eof || bytes.is_empty() {
                    inputs.push(SocketInput::Eof);
                }
                (inputs, o.wants_write)
            }
            Err(_) => {
                inputs.push(SocketInput::IoError);
                (inputs, true)
            }
        }
    }

    /// Plaintext to send (or `None`: only what the session has queued) as
    /// the bytes to write. Fails only past the session's buffer limit (the
    /// socket is stuck).
    pub fn encrypt(&self, plain: Option<&[u8]>) -> io::Result<Option<Vec<u8>>> {
        let mut session = self.lock();
        if let Some(plain) = plain {
            session.send(plain)?;
        }
        Ok(session.poll_transmit())
    }

    /// The close_notify to write before shutting the socket down.
    pub fn close(&self) -> Option<Vec<u8>> {
        let mut session = self.lock();
        session.close();
        session.poll_transmit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::ServerConnection;

    /// A CA file, and a server config whose certificate for `names` it signed.
    fn pki(tag: &str, names: &[&str]) -> (std::path::PathBuf, Arc<rustls::ServerConfig>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let file = std::env::temp_dir().join(format!("wshub-tls-{tag}-{}.pem", std::process::id()));
        std::fs::write(&file, ca.pem()).unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        (file, Arc::new(config))
    }

    /// Moves bytes both ways until neither side has any; the client is fed
    /// one byte at a time. Returns the client's plaintext and whether it saw
    /// the end.
    fn pump(client: &mut Session, server: &mut ServerConnection) -> io::Result<(Vec<u8>, bool)> {
        let (mut plain, mut eof) = (Vec::new(), false);
        loop {
            let mut moved = false;
            if let Some(out) = client.poll_transmit() {
                server.read_tls(&mut &out[..]).unwrap();
                server.process_new_packets().map_err(io::Error::other)?;
                moved = true;
            }
            let mut out = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut out).unwrap();
            }
            for byte in out.chunks(1) {
                eof |= client.handle_read(byte, &mut plain)?.eof;
                moved = true;
            }
            if !moved {
                return Ok((plain, eof));
            }
        }
    }

    #[test]
    fn a_handshake_and_data_both_ways_fed_byte_by_byte() {
        let (file, server_config) = pki("ok", &["127.0.0.1", "hub.test"]);
        let connector = Connector::new(Some(&file)).unwrap();
        for host in ["127.0.0.1", "hub.test"] {
            let mut client = Session::new(&connector, host).unwrap();
            let mut server = ServerConnection::new(Arc::clone(&server_config)).unwrap();
            assert!(client.is_handshaking());
            pump(&mut client, &mut server).unwrap();
            assert!(!client.is_handshaking() && !server.is_handshaking());
            assert_eq!(
                server.server_name(),
                (host == "hub.test").then_some("hub.test")
            );
            client.send(b"GET /ws HTTP/1.1\r\n\r\n").unwrap();
            pump(&mut client, &mut server).unwrap();
            let mut got = vec![0u8; 64];
            let n = server.reader().read(&mut got).unwrap();
            assert_eq!(&got[..n], b"GET /ws HTTP/1.1\r\n\r\n");
            let big = vec![7u8; 40_000]; // several records
            server.writer().write_all(&big).unwrap();
            server.send_close_notify();
            let (plain, eof) = pump(&mut client, &mut server).unwrap();
            assert_eq!((plain.len(), eof), (big.len(), true));
        }
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_shared_session_reports_data_then_the_end_of_one_read() {
        let (file, config) = pki("shared", &["hub.test"]);
        let mut client = Session::new(&Connector::new(Some(&file)).unwrap(), "hub.test").unwrap();
        let mut server = ServerConnection::new(Arc::clone(&config)).unwrap();
        pump(&mut client, &mut server).unwrap();
        let shared = SharedSession::new(client);
        let out = shared.encrypt(Some(b"hello")).unwrap().unwrap();
        server.read_tls(&mut &out[..]).unwrap();
        server.process_new_packets().unwrap();
        server.writer().write_all(b"bye").unwrap();
        server.send_close_notify();
        let mut out = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut out).unwrap();
        }
        let (inputs, _) = shared.read(&out);
        assert_eq!(
            inputs,
            [SocketInput::Read(b"bye".to_vec()), SocketInput::Eof]
        );
        // Garbage after a handshake: an I/O error, and an alert to flush.
        let mut client = Session::new(&Connector::new(Some(&file)).unwrap(), "hub.test").unwrap();
        let mut server = ServerConnection::new(Arc::clone(&config)).unwrap();
        pump(&mut client, &mut server).unwrap();
        let shared = SharedSession::new(client);
        let (inputs, flush) = shared.read(b"\x17\x03\x03\x00\x05hello");
        assert_eq!(
            (inputs.as_slice(), flush),
            ([SocketInput::IoError].as_slice(), true)
        );
        assert!(shared.encrypt(None).unwrap().is_some(), "the alert");
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn certificate_problems_and_garbage_are_tls_failures() {
        let (file, server_config) = pki("bad", &["other.test"]);
        let wrong_host = |connector: &Connector| {
            let mut client = Session::new(connector, "127.0.0.1").unwrap();
            let mut server = ServerConnection::new(Arc::clone(&server_config)).unwrap();
            let e = pump(&mut client, &mut server).unwrap_err();
            let failure = TlsFailure::of(&e).expect("a TLS failure").clone();
            // The alert that tells the server why is queued.
            assert!(client.poll_transmit().is_some());
            failure.0
        };
        let why = wrong_host(&Connector::new(Some(&file)).unwrap());
        assert!(why.contains("not valid for name"), "{why}");
        let why = wrong_host(&Connector::new(None).unwrap());
        assert!(why.contains("UnknownIssuer"), "{why}");

        let mut client = Session::new(&Connector::new(None).unwrap(), "h.test").unwrap();
        let _ = client.poll_transmit();
        let e = client
            .handshake_read(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .unwrap_err();
        assert!(TlsFailure::of(&e).is_some(), "{e}");
        let e = client.handshake_read(b"").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn bad_ca_files_and_server_names_are_refused() {
        let e = Connector::new(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string().starts_with("CA file /nonexistent/ca.pem: "),
            "{e}"
        );
        let empty =
            std::env::temp_dir().join(format!("wshub-tls-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "hello\n").unwrap();
        let e = Connector::new(Some(&empty)).unwrap_err();
        assert!(e.to_string().ends_with("no certificate in it"), "{e}");
        std::fs::remove_file(empty).unwrap();
        let e = Session::new(&Connector::new(None).unwrap(), "not a name").unwrap_err();
        assert!(TlsFailure::of(&e).is_some(), "{e}");
    }
}
