//! The responses a handshake writes: the 101, refusals, and answers to plain
//! HTTP requests.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::http::{is_token, reserved_header};
use super::Refusal;
#[cfg(doc)]
use super::RequestReader;

/// The RFC 6455 GUID appended to the client's key before hashing.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a key (RFC 6455: base64(sha1(key + GUID))).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The full `101 Switching Protocols` response bytes.
///
/// `subprotocol` is written only when it is a valid HTTP token: anything
/// else could split the header block, and [`RequestReader`] never negotiates
/// such a name.
pub fn switching_protocols(key: &str, subprotocol: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(p) = subprotocol.filter(|p| is_token(p.as_bytes())) {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The standard reason phrase for the statuses a handshake may answer with.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ if status < 400 => "Status",
        _ => "Error",
    }
}

/// A refusal response: status line with the standard reason phrase,
/// `Connection: close`, `Content-Type: text/plain`, `Content-Length` and the
/// reason (plus a newline) as body. No WebSocket headers, except
/// `Sec-WebSocket-Version: 13` on a 426.
///
/// `extra_headers` (e.g. `Retry-After`) are appended after ours; an entry is
/// dropped if its name is not a token, its value holds a control character
/// other than tab (it could forge headers), or it names a header this
/// function owns (`Connection`, `Content-*`, `Transfer-Encoding`, `Upgrade`,
/// `Sec-WebSocket-*`). A status outside 300..=599 is answered as 500, since
/// anything else would not be a refusal.
pub fn refusal_response(refusal: &Refusal, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let status = if (300..=599).contains(&refusal.status) {
        refusal.status
    } else {
        500
    };
    let mut out = Vec::with_capacity(160 + refusal.reason.len());
    let head = format!(
        "HTTP/1.1 {status} {}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        reason_phrase(status),
        refusal.reason.len() + 1
    );
    out.extend_from_slice(head.as_bytes());
    if status == 426 {
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
    }
    for (name, value) in extra_headers {
        let safe_value = value.bytes().all(|b| b == b'\t' || !b.is_ascii_control());
        if is_token(name.as_bytes()) && safe_value && !reserved_header(name, Some("content-type")) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.trim().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(refusal.reason.as_bytes());
    out.push(b'\n');
    out
}

/// A complete HTTP/1.1 response to a plain request that ends the
/// connection: status, the given headers (unsafe names or values dropped,
/// as for [`refusal_response`]; a `Content-Type` may be given here),
/// `Content-Length` and `Connection: close`.
pub fn http_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    plain_response(status, headers, body, true)
}

/// [`http_response`] for a connection that stays open for the next request
/// (HTTP/1.1 keep-alive): the same bytes without `Connection: close`.
pub fn http_keep_alive_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    plain_response(status, headers, body, false)
}

fn plain_response(status: u16, headers: &[(&str, &str)], body: &[u8], close: bool) -> Vec<u8> {
    let status = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\n{connection}Content-Length: {}\r\n",
            reason_phrase(status),
            body.len()
        )
        .as_bytes(),
    );
    for (name, value) in headers {
        let safe_value = value.bytes().all(|b| b == b'\t' || !b.is_ascii_control());
        let owned = reserved_header(name, None);
        if is_token(name.as_bytes()) && safe_value && !owned {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.trim().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn accept_key_matches_rfc_6455_vector() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn accept_key_agrees_with_tungstenite() {
        for key in [KEY, "AQIDBAUGBwgJCgsMDQ4PEA==", "x"] {
            assert_eq!(
                accept_key(key),
                tungstenite::handshake::derive_accept_key(key.as_bytes())
            );
        }
    }
}
