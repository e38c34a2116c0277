//! The hub's checks of a parsed request beyond the reader's: the `Origin`
//! allow-list and the required headers.

use crate::request::UpgradeRequest;

/// Whether the request's `Origin` is allowed by `allow`.
///
/// An empty list or a `*` entry allows every origin. A request without an
/// `Origin` header is allowed: only browsers send one, and the allow-list
/// exists to stop other sites' pages, not non-browser clients (authenticate
/// those). Origins compare case-insensitively on scheme, host and port;
/// a trailing `/` and a default port (`:80` for http/ws, `:443` for
/// https/wss) are ignored on both sides. With several `Origin` headers, all
/// must be allowed; a non-UTF-8 origin never is.
pub fn origin_allowed(req: &UpgradeRequest, allow: &[String]) -> bool {
    if allow.is_empty() || allow.iter().any(|a| a.trim() == "*") {
        return true;
    }
    let allowed: Vec<String> = allow.iter().map(|a| normalize_origin(a)).collect();
    req.header_values("origin").all(|value| {
        core::str::from_utf8(value)
            .map(normalize_origin)
            .is_ok_and(|origin| allowed.contains(&origin))
    })
}

/// Lower-cased `scheme://host[:port]`, without a trailing `/` or a default
/// port.
fn normalize_origin(origin: &str) -> String {
    let mut s = origin.trim().to_ascii_lowercase();
    if s.ends_with('/') {
        s.pop();
    }
    let Some((scheme, authority)) = s.split_once("://") else {
        return s;
    };
    let default_port = match scheme {
        "http" | "ws" => "80",
        "https" | "wss" => "443",
        _ => return s,
    };
    // The port follows the last ':', unless that ':' is inside an IPv6 literal.
    match authority.rsplit_once(':') {
        Some((host, port))
            if port == default_port && (!host.contains(':') || host.ends_with(']')) =>
        {
            format!("{scheme}://{host}")
        }
        _ => s,
    }
}

/// The first of `required` that the request lacks, or carries only empty or
/// whitespace-only values for. Names compare case-insensitively.
pub fn missing_required_header<'a>(
    req: &UpgradeRequest,
    required: &'a [String],
) -> Option<&'a str> {
    required
        .iter()
        .find(|name| !req.header_values(name).any(|v| !v.trim_ascii().is_empty()))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::PeerInfo;

    fn with_headers(headers: &[(&str, &str)]) -> UpgradeRequest {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        UpgradeRequest::new("/ws", headers, PeerInfo::default())
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn origin_allow_list() {
        let allow = strings(&["https://app.example.com", "http://localhost:3000"]);
        let origin = |o: &str| with_headers(&[("Origin", o)]);
        assert!(origin_allowed(&origin("https://app.example.com"), &allow));
        assert!(origin_allowed(&origin("HTTPS://App.Example.COM"), &allow));
        assert!(origin_allowed(
            &origin("https://app.example.com:443"),
            &allow
        ));
        assert!(origin_allowed(&origin("https://app.example.com/"), &allow));
        assert!(origin_allowed(&origin("http://localhost:3000"), &allow));
        assert!(!origin_allowed(&origin("http://localhost:3001"), &allow));
        assert!(!origin_allowed(&origin("http://localhost"), &allow));
        assert!(!origin_allowed(&origin("http://app.example.com"), &allow));
        assert!(!origin_allowed(
            &origin("https://app.example.com.evil.net"),
            &allow
        ));
        assert!(!origin_allowed(&origin("https://evil.net"), &allow));
        assert!(!origin_allowed(&origin("null"), &allow));
        assert!(!origin_allowed(&origin(""), &allow));
        // Every Origin line must pass.
        let two = with_headers(&[
            ("Origin", "https://app.example.com"),
            ("Origin", "https://evil.net"),
        ]);
        assert!(!origin_allowed(&two, &allow));
        // No Origin: a non-browser client, allowed.
        assert!(origin_allowed(&with_headers(&[]), &allow));
        // Empty list and `*` allow everything.
        assert!(origin_allowed(&origin("https://evil.net"), &[]));
        assert!(origin_allowed(
            &origin("https://evil.net"),
            &strings(&["https://a", "*"])
        ));
        // IPv6 literals keep their inner colons.
        let v6 = strings(&["http://[::1]:8080"]);
        assert!(origin_allowed(&origin("http://[::1]:8080"), &v6));
        assert!(!origin_allowed(&origin("http://[::1]"), &v6));
        assert!(origin_allowed(
            &origin("http://[::1]:80"),
            &strings(&["http://[::1]"])
        ));
    }

    #[test]
    fn required_headers() {
        let required = strings(&["X-Client", "X-Version"]);
        let req = with_headers(&[("x-client", "web"), ("X-Version", "2")]);
        assert_eq!(missing_required_header(&req, &required), None);
        let req = with_headers(&[("X-Client", "web")]);
        assert_eq!(missing_required_header(&req, &required), Some("X-Version"));
        let req = with_headers(&[("X-Client", "  \t"), ("X-Version", "2")]);
        assert_eq!(missing_required_header(&req, &required), Some("X-Client"));
        let req = with_headers(&[("X-Client", ""), ("X-Client", "web"), ("X-Version", "2")]);
        assert_eq!(missing_required_header(&req, &required), None);
        assert_eq!(missing_required_header(&with_headers(&[]), &[]), None);
    }
}
