//! Endpoints: the `ws://` / `wss://` URLs a client connects to.

use std::fmt;

#[cfg(doc)]
use super::ClientConfig;

/// A server to connect to: where to open the socket and what to ask for.
///
/// `Debug` shows query values as `<redacted>` (a URL may carry a credential).
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address, without brackets for IPv6.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The request target: a path starting with `/`, optionally `?query`.
    pub path_and_query: String,
    /// Whether the driver must speak TLS (`wss://`).
    pub tls: bool,
}

/// Why a URL is not a usable [`Endpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointError {
    /// The scheme is not `ws` or `wss`.
    Scheme,
    /// The host is missing or has characters a host name cannot have.
    Host,
    /// The port is not a number in 1..=65535.
    Port,
    /// User info (`user:pass@`) is not supported: it would be sent nowhere.
    UserInfo,
    /// WebSocket URLs must not have a fragment (RFC 6455 §3).
    Fragment,
    /// The path or query has spaces, control or non-ASCII characters
    /// (percent-encode them).
    Path,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointError::Scheme => "invalid endpoint: scheme must be ws or wss",
            EndpointError::Host => "invalid endpoint: bad or missing host",
            EndpointError::Port => "invalid endpoint: port must be in 1..=65535",
            EndpointError::UserInfo => "invalid endpoint: user info is not supported",
            EndpointError::Fragment => "invalid endpoint: a WebSocket URL has no fragment",
            EndpointError::Path => {
                "invalid endpoint: path or query has spaces, control or non-ASCII characters"
            }
        })
    }
}

impl std::error::Error for EndpointError {}

impl Endpoint {
    /// Parses `ws://host[:port][/path][?query]` or `wss://...`. IPv6 hosts go
    /// in brackets (`ws://[::1]:8080/ws`). The port defaults to 80 (ws) or
    /// 443 (wss), the path to `/`.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let (scheme, rest) = url.split_once("://").ok_or(EndpointError::Scheme)?;
        let tls = if scheme.eq_ignore_ascii_case("ws") {
            false
        } else if scheme.eq_ignore_ascii_case("wss") {
            true
        } else {
            return Err(EndpointError::Scheme);
        };
        if rest.contains('#') {
            return Err(EndpointError::Fragment);
        }
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(EndpointError::UserInfo);
        }
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (host, tail) = inner.split_once(']').ok_or(EndpointError::Host)?;
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or(EndpointError::Port)?),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => parse_port(p).ok_or(EndpointError::Port)?,
        };
        let path_and_query = match target {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        let endpoint = Endpoint {
            host: host.to_owned(),
            port,
            path_and_query,
            tls,
        };
        endpoint.validate()?;
        Ok(endpoint)
    }

    /// Checks the fields (they are public, so a hand-built endpoint is checked
    /// again by [`ClientConfig::validate`]): anything that could break the
    /// request line or the `Host` header is refused.
    pub fn validate(&self) -> Result<(), EndpointError> {
        let ipv6 = self.host.contains(':');
        let host_ok = !self.host.is_empty()
            && self.host.bytes().all(|b| {
                if ipv6 {
                    b.is_ascii_hexdigit() || b == b':' || b == b'.'
                } else {
                    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
                }
            });
        if !host_ok {
            return Err(EndpointError::Host);
        }
        if self.port == 0 {
            return Err(EndpointError::Port);
        }
        let path_ok = self.path_and_query.starts_with('/')
            && self
                .path_and_query
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'#');
        if !path_ok {
            return Err(EndpointError::Path);
        }
        Ok(())
    }

    /// The `Host` header value: the host (bracketed if IPv6) and the port
    /// unless it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn parse_port(p: &str) -> Option<u16> {
    // `u16::from_str` would take "+80"; a port is digits only.
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&p| p != 0)
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path_and_query", &redact_query(&self.path_and_query))
            .field("tls", &self.tls)
            .finish()
    }
}

/// `path?a=<redacted>&b=<redacted>`: parameter names stay, values go.
fn redact_query(target: &str) -> String {
    match target.split_once('?') {
        None => target.to_owned(),
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
                .map(|k| format!("{k}=<redacted>"))
                .collect();
            format!("{path}?{}", params.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parse_accepts_and_refuses() {
        let e = Endpoint::parse("ws://example.com:8080/ws?room=1").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path_and_query.as_str(), e.tls),
            ("example.com", 8080, "/ws?room=1", false)
        );
        assert_eq!(e.host_header(), "example.com:8080");
        let e = Endpoint::parse("WSS://example.com").unwrap();
        assert_eq!((e.port, e.path_and_query.as_str(), e.tls), (443, "/", true));
        assert_eq!(e.host_header(), "example.com");
        let e = Endpoint::parse("ws://[::1]:9000?x=1").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert_eq!(e.path_and_query, "/?x=1");
        assert_eq!(e.host_header(), "[::1]:9000");
        assert_eq!(
            Endpoint::parse("ws://[::1]").unwrap().host_header(),
            "[::1]"
        );

        let bad = [
            ("http://h/", EndpointError::Scheme),
            ("h/ws", EndpointError::Scheme),
            ("ws:///ws", EndpointError::Host),
            ("ws://h h/", EndpointError::Host),
            ("ws://h:0/", EndpointError::Port),
            ("ws://h:+80/", EndpointError::Port),
            ("ws://h:65536/", EndpointError::Port),
            ("ws://h:/", EndpointError::Port),
            ("ws://u:p@h/", EndpointError::UserInfo),
            ("ws://h/#f", EndpointError::Fragment),
            ("ws://h/a b", EndpointError::Path),
            ("ws://h/a\r\nX: y", EndpointError::Path),
            ("ws://h/é", EndpointError::Path),
            ("ws://[::1/", EndpointError::Host),
            ("ws://[::1]x/", EndpointError::Port),
        ];
        for (url, want) in bad {
            assert_eq!(Endpoint::parse(url), Err(want), "{url:?}");
        }
    }

    #[test]
    fn endpoint_debug_redacts_query_values() {
        let e = Endpoint::parse("ws://h/ws?token=s3cr3t&room=1").unwrap();
        let shown = format!("{e:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("token=<redacted>&room=<redacted>"),
            "{shown}"
        );
    }
}
