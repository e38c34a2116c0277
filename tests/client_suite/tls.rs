//! TLS for the client tests: a CA and server certificates generated with
//! rcgen, and a small TLS terminator (a thread per connection, rustls with
//! ring) that accepts `wss://` on loopback and proxies the plaintext to a
//! plain hub server. No production server TLS is involved.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A test CA, its PEM written to a file of its own.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate as a PEM file (for `ca_file` / `--ca-file`).
    pub file: PathBuf,
}

static FILES: AtomicU64 = AtomicU64::new(0);

impl Ca {
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: another test CA is an unknown issuer, not a
        // bad signature.
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("wshub test CA {} {n}", std::process::id()),
        );
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let file =
            std::env::temp_dir().join(format!("wshub-test-ca-{}-{n}.pem", std::process::id()));
        std::fs::write(&file, issuer.pem()).unwrap();
        Ca { issuer, file }
    }

    /// A server config with a certificate for `names` (DNS names or IP
    /// addresses) signed by this CA.
    pub fn server(&self, names: &[&str]) -> Arc<ServerConfig> {
        self.server_with(names, |_| {})
    }

    /// [`Ca::server`] with the certificate's parameters adjusted (validity).
    pub fn server_with(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Arc<ServerConfig> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        #[allow(deprecated)] // ring: see wshub-tls
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Accepts TLS on a loopback port and proxies each connection's plaintext to
/// `backend`. Returns the TLS port's address. Its threads end with their
/// connections; the listener's with the test process.
pub fn terminator(config: Arc<ServerConfig>, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let _ = proxy(config, tcp, backend);
            });
        }
    });
    addr
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One connection: handshake, then copy both ways in one thread, each read
/// with a short timeout, for at most a minute.
fn proxy(config: Arc<ServerConfig>, tcp: TcpStream, backend: SocketAddr) -> io::Result<()> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    tls.sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    while tls.conn.is_handshaking() {
        // Fails on the client's alert (a refused certificate): done.
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let mut plain = TcpStream::connect(backend)?;
    let tick = Some(Duration::from_millis(5));
    tls.sock.set_read_timeout(tick)?;
    plain.set_read_timeout(tick)?;
    let end = Instant::now() + Duration::from_secs(60);
    let mut buf = vec![0u8; 16 * 1024];
    while Instant::now() < end {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => plain.write_all(&buf[..n])?,
            Err(e) if would_block(&e) => {}
            Err(_) => break,
        }
        match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tls.write_all(&buf[..n])?;
                tls.flush()?;
            }
            Err(e) if would_block(&e) => {}
            Err(_) => break,
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let _ = tls.sock.shutdown(Shutdown::Both);
    let _ = plain.shutdown(Shutdown::Both);
    Ok(())
}
