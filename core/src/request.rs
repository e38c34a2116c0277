//! The upgrade request as authenticators and policies see it.

use core::fmt;
use core::net::SocketAddr;

/// Where a connection came from, as the adapter knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The remote address, when the transport has one.
    pub addr: Option<SocketAddr>,
}

/// A parsed HTTP/1.1 WebSocket upgrade request.
///
/// Header names keep their case as sent; look-ups are case-insensitive. `Debug`
/// redacts credentials (`Authorization`, `Cookie`, `Sec-WebSocket-Protocol` values
/// and every query value), so a request can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    path: String,
    query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    peer: PeerInfo,
}

impl UpgradeRequest {
    /// Builds a request by hand (tests, custom transports). `target` is the
    /// request-target: a path with an optional `?query`.
    pub fn new(target: &str, headers: Vec<(String, Vec<u8>)>, peer: PeerInfo) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        UpgradeRequest {
            path,
            query,
            headers,
            peer,
        }
    }

    /// The path, without the query string.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The peer the adapter reported.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Every header in order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The first header with this name (case-insensitive) whose value is UTF-8,
    /// with surrounding whitespace trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| core::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// All values of a header (case-insensitive name), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first query parameter with this name, percent-decoded (`+` is a space).
    /// `None` when absent or when the value does not decode to UTF-8.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(k).as_deref() == Some(name) {
                return percent_decode(v);
            }
        }
        None
    }
}

/// Decodes `%XX` escapes and `+`; `None` on a bad escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "sec-websocket-protocol",
    "proxy-authorization",
];

impl fmt::Debug for UpgradeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Headers<'a>(&'a [(String, Vec<u8>)]);
        impl fmt::Debug for Headers<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for (name, value) in self.0 {
                    if SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s)) {
                        list.entry(&(name, "<redacted>"));
                    } else {
                        list.entry(&(name, String::from_utf8_lossy(value)));
                    }
                }
                list.finish()
            }
        }
        // Query values may carry `?token=`; keep only the parameter names.
        let query = self.query.as_deref().map(|q| {
            q.split('&')
                .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
                .map(|k| format!("{k}=<redacted>"))
                .collect::<Vec<_>>()
                .join("&")
        });
        f.debug_struct("UpgradeRequest")
            .field("path", &self.path)
            .field("query", &query)
            .field("headers", &Headers(&self.headers))
            .field("peer", &self.peer)
            .finish()
    }
}

/// A credential that must never be shown: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for comparison or validation only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Who a connection belongs to, decided by the authenticator.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    /// The application's user id (empty when auth is off).
    pub user_id: String,
    /// Arbitrary metadata (roles, scopes).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Identity {
    /// An identity with a user id and no claims.
    pub fn user(user_id: impl Into<String>) -> Self {
        Identity {
            user_id: user_id.into(),
            claims: serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)]) -> UpgradeRequest {
        UpgradeRequest::new(
            target,
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            PeerInfo::default(),
        )
    }

    #[test]
    fn query_param_decodes_and_finds_first() {
        let r = req("/ws?a=1&token=ab%2Bc+d&token=second", &[]);
        assert_eq!(r.path(), "/ws");
        assert_eq!(r.query_param("token").as_deref(), Some("ab+c d"));
        assert_eq!(r.query_param("a").as_deref(), Some("1"));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(req("/ws?token=%zz", &[]).query_param("token"), None);
        assert_eq!(
            req("/ws?token", &[]).query_param("token").as_deref(),
            Some("")
        );
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_trimmed() {
        let r = req("/", &[("X-Api", "  v1 "), ("x-api", "v2")]);
        assert_eq!(r.header("X-API"), Some("v1"));
        assert_eq!(r.header_values("x-api").count(), 2);
    }

    #[test]
    fn debug_redacts_credentials() {
        let r = req(
            "/ws?token=s3cr3t-query&room=x",
            &[
                ("Authorization", "Bearer s3cr3t-header"),
                ("Cookie", "sid=s3cr3t-cookie"),
                ("Host", "example"),
            ],
        );
        let shown = format!("{r:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("example"));
        assert!(shown.contains("token=<redacted>"));
        let s = Secret::new("s3cr3t");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
    }
}
