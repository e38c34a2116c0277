//! Binding with a deep accept queue: std's `TcpListener::bind` asks for a
//! backlog of 128, so a burst of more connections than that while the accept
//! loop is busy makes the kernel drop SYNs, and clients only retry after a
//! second or more.

use std::io;
use std::net::{TcpListener, ToSocketAddrs};

/// Accept-queue length asked of the kernel (capped by `net.core.somaxconn`).
pub const BACKLOG: i32 = 4096;

/// Binds the first address that works, with [`BACKLOG`] and `SO_REUSEADDR`
/// (so a restarted server can take its port back from TIME_WAIT sockets).
pub fn bind_listener(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
    for a in addr.to_socket_addrs()? {
        let socket =
            socket2::Socket::new(socket2::Domain::for_address(a), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        match socket.bind(&a.into()).and_then(|()| socket.listen(BACKLOG)) {
            Ok(()) => return Ok(socket.into()),
            Err(e) => last = e,
        }
    }
    Err(last)
}
