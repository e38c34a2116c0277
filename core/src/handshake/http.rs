//! HTTP syntax both halves of the handshake share.

/// Whether a comma-separated header value holds `token` (case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// An HTTP token (RFC 9110 `tchar`s, at least one).
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `name` is a header the handshake writes itself, so that a
/// caller's copy is dropped (responses) or refused (the client's request):
/// the message framing (`Connection`, `Content-Length`, `Transfer-Encoding`)
/// and the upgrade (`Upgrade`, `Sec-WebSocket-*`), which a second copy could
/// contradict or use to smuggle a message, plus `also`, the one header that
/// differs by side: `Host` in the client's request, `Content-Type` in a
/// refusal (a plain HTTP response lets the caller choose it).
pub(crate) fn reserved_header(name: &str, also: Option<&str>) -> bool {
    [
        "connection",
        "content-length",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .chain(&also)
    .any(|r| name.eq_ignore_ascii_case(r))
        || name
            .get(..14)
            .is_some_and(|p| p.eq_ignore_ascii_case("sec-websocket-"))
}
