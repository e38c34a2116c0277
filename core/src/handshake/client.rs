//! The client's half of the handshake: judging the server's answer to its
//! upgrade request.

use std::time::Duration;

use super::http::has_token;
use crate::backoff::MAX_FLOOR;
use crate::client::DisconnectReason;

/// Header slots for parsing the handshake response; more headers is a failure.
const MAX_RESPONSE_HEADERS: usize = 64;

/// The client's verdict on the server's answer to its upgrade request.
pub(crate) enum Verdict {
    Incomplete,
    Open {
        subprotocol: Option<String>,
        head_len: usize,
    },
    Auth(u16),
    Fail(DisconnectReason, Option<Duration>),
}

pub(crate) fn judge_response(
    buf: &[u8],
    expected_accept: &str,
    offered: &[String],
    limit: usize,
) -> Verdict {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Partial) => return Verdict::Incomplete,
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            return Verdict::Fail(DisconnectReason::BadResponse("too many headers"), None)
        }
        Err(_) => return Verdict::Fail(DisconnectReason::BadResponse("malformed HTTP"), None),
    };
    // Judged on the head alone, so the verdict does not depend on how many
    // frame bytes happened to arrive in the same read.
    if head_len > limit {
        return Verdict::Fail(DisconnectReason::ResponseTooLarge, None);
    }
    if resp.version != Some(1) {
        return Verdict::Fail(DisconnectReason::BadResponse("not HTTP/1.1"), None);
    }
    let headers: &[httparse::Header<'_>] = resp.headers;
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let status = resp.code.unwrap_or(0);
    match status {
        101 => {}
        401 | 403 => return Verdict::Auth(status),
        429 | 503 => {
            let floor = values("retry-after").next().and_then(retry_after);
            return Verdict::Fail(DisconnectReason::Status(status), floor);
        }
        _ => return Verdict::Fail(DisconnectReason::Status(status), None),
    }
    if !values("upgrade").any(|v| has_token(v, b"websocket")) {
        return Verdict::Fail(DisconnectReason::BadResponse("no Upgrade: websocket"), None);
    }
    if !values("connection").any(|v| has_token(v, b"upgrade")) {
        return Verdict::Fail(
            DisconnectReason::BadResponse("no Connection: upgrade"),
            None,
        );
    }
    let mut accepts = values("sec-websocket-accept");
    match (accepts.next(), accepts.next()) {
        (Some(a), None) if a.trim_ascii() == expected_accept.as_bytes() => {}
        _ => {
            return Verdict::Fail(
                DisconnectReason::BadResponse("Sec-WebSocket-Accept does not match the key"),
                None,
            )
        }
    }
    if values("sec-websocket-extensions").any(|v| !v.trim_ascii().is_empty()) {
        // We offered none (RFC 6455 §4.1: fail on one we did not ask for).
        return Verdict::Fail(DisconnectReason::BadResponse("extension not offered"), None);
    }
    let mut protocols = values("sec-websocket-protocol");
    let subprotocol = match (protocols.next(), protocols.next()) {
        (None, _) => None,
        (Some(p), None) => {
            let p = p.trim_ascii();
            match offered.iter().find(|o| o.as_bytes() == p) {
                Some(o) => Some(o.clone()),
                None => {
                    return Verdict::Fail(
                        DisconnectReason::BadResponse("subprotocol not offered"),
                        None,
                    )
                }
            }
        }
        (Some(_), Some(_)) => {
            return Verdict::Fail(DisconnectReason::BadResponse("several subprotocols"), None)
        }
    };
    Verdict::Open {
        subprotocol,
        head_len,
    }
}

/// `Retry-After` in delay-seconds. The HTTP-date form needs a wall clock the
/// core does not have, so it is ignored (the normal backoff applies).
pub(crate) fn retry_after(value: &[u8]) -> Option<Duration> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Too many digits for a u64 is "very long": Backoff caps floors anyway.
    let secs = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_FLOOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(retry_after(b" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(b"0"), Some(Duration::ZERO));
        assert_eq!(retry_after(b"99999999999999999999999"), Some(MAX_FLOOR));
        assert_eq!(retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after(b"-5"), None);
        assert_eq!(retry_after(b""), None);
    }
}
