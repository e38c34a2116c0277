//! The authenticators' unit tests.

use super::*;
use crate::request::PeerInfo;
use quickcheck::quickcheck;

/// Distinctive, so its absence from any output is meaningful.
const TOKEN: &str = "zq-S3CRET-tok-7731";
const KEY: &str = "wsk_live_9f8e7d6c5b4a3210";
const USER: &str = "user-alice-42";

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

fn bearer(value: &str) -> UpgradeRequest {
    req("/ws", &[("Authorization", value)])
}

/// Accepts exactly TOKEN, as USER.
fn validator(t: &Secret) -> Result<Identity, AuthFailure> {
    if constant_time_eq(t.expose().as_bytes(), TOKEN.as_bytes()) {
        Ok(Identity::user(USER))
    } else {
        Err(AuthFailure::InvalidCredentials)
    }
}

fn accepted(d: AuthDecision) -> Option<String> {
    match d {
        AuthDecision::Accept(id) => Some(id.user_id),
        _ => None,
    }
}

fn rejection(d: AuthDecision) -> Rejection {
    match d {
        AuthDecision::Reject(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Percent-encodes every byte, so padding and case survive the query string.
fn pct(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

// --- bearer -----------------------------------------------------------

#[test]
fn bearer_valid_token_is_extracted_and_accepted() {
    let r = bearer(&format!("Bearer {TOKEN}"));
    assert_eq!(bearer_token(&r).unwrap().expose(), TOKEN);
    let auth = BearerAuth::new(validator);
    assert_eq!(accepted(auth.authenticate(&r)).as_deref(), Some(USER));
}

#[test]
fn bearer_invalid_token_is_rejected_401() {
    let auth = BearerAuth::new(validator);
    let r = rejection(auth.authenticate(&bearer("Bearer not-the-token")));
    assert_eq!(r, Rejection::unauthorized(AuthFailure::InvalidCredentials));
    assert_eq!(r.status, 401);
}

#[test]
fn bearer_missing_header() {
    let r = req("/ws", &[("Host", "x")]);
    assert_eq!(bearer_token(&r), Err(AuthFailure::MissingCredentials));
    let auth = BearerAuth::new(validator);
    assert_eq!(
        rejection(auth.authenticate(&r)).failure,
        AuthFailure::MissingCredentials
    );
}

#[test]
fn bearer_malformed_headers_are_rejected() {
    let cases = [
        "Bearer",                  // no token
        "Bearer ",                 // empty token
        "Basic abc",               // wrong scheme
        "Bearer a b",              // extra parts
        "Bearerabc",               // no space
        "",                        // empty header
        "Bearer  abc",             // two spaces (documented choice)
        "Bearer\tabc",             // tab is not the separator
        &format!("Token {TOKEN}"), // wrong scheme, right token
        &format!("Bearer {TOKEN}x y"),
    ];
    let auth = BearerAuth::new(validator);
    for case in cases {
        let r = bearer(case);
        assert_eq!(
            bearer_token(&r),
            Err(AuthFailure::MalformedCredentials),
            "{case:?}"
        );
        let rej = rejection(auth.authenticate(&r));
        assert_eq!(rej.failure, AuthFailure::MalformedCredentials, "{case:?}");
        assert_eq!(rej.status, 401);
    }
}

#[test]
fn bearer_duplicate_or_non_utf8_header_is_malformed() {
    let dup = req(
        "/ws",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("authorization", "Bearer other"),
        ],
    );
    assert_eq!(bearer_token(&dup), Err(AuthFailure::MalformedCredentials));
    let bin = UpgradeRequest::new(
        "/ws",
        vec![("Authorization".into(), b"Bearer \xff\xfe".to_vec())],
        PeerInfo::default(),
    );
    assert_eq!(bearer_token(&bin), Err(AuthFailure::MalformedCredentials));
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        let r = req("/ws", &[("aUtHoRiZaTiOn", &format!("{scheme} {TOKEN}"))]);
        assert_eq!(bearer_token(&r).unwrap().expose(), TOKEN, "{scheme}");
    }
}

#[test]
fn bearer_surrounding_whitespace_is_not_part_of_the_value() {
    let r = bearer(&format!("  Bearer {TOKEN}\t "));
    assert_eq!(bearer_token(&r).unwrap().expose(), TOKEN);
}

// --- query token --------------------------------------------------------

#[test]
fn query_token_valid_and_invalid() {
    let auth = QueryTokenAuth::new("token", validator);
    let ok = req(&format!("/ws?room=1&token={TOKEN}"), &[]);
    assert_eq!(accepted(auth.authenticate(&ok)).as_deref(), Some(USER));
    let bad = req("/ws?token=wrong", &[]);
    assert_eq!(
        rejection(auth.authenticate(&bad)),
        Rejection::unauthorized(AuthFailure::InvalidCredentials)
    );
}

#[test]
fn query_token_missing_and_empty() {
    for target in ["/ws", "/ws?", "/ws?room=1", "/ws?tokens=x", "/ws?xtoken=x"] {
        assert_eq!(
            query_token(&req(target, &[]), "token"),
            Err(AuthFailure::MissingCredentials),
            "{target}"
        );
    }
    for target in [
        "/ws?token=",
        "/ws?token",
        "/ws?a=1&token=&b=2",
        "/ws?token=%zz",
    ] {
        assert_eq!(
            query_token(&req(target, &[]), "token"),
            Err(AuthFailure::MalformedCredentials),
            "{target}"
        );
    }
}

#[test]
fn query_token_duplicate_is_malformed() {
    let r = req(&format!("/ws?token={TOKEN}&token=other"), &[]);
    assert_eq!(
        query_token(&r, "token"),
        Err(AuthFailure::MalformedCredentials)
    );
}

#[test]
fn query_token_is_percent_decoded_with_custom_param() {
    let r = req("/ws?access%5Ftoken=a%2Bb%2Fc%3D+d", &[]);
    assert_eq!(
        query_token(&r, "access_token").unwrap().expose(),
        "a+b/c= d"
    );
    let auth = QueryTokenAuth::new("access_token", |t: &Secret| {
        if t.expose() == "a+b/c= d" {
            Ok(Identity::user("u"))
        } else {
            Err(AuthFailure::InvalidCredentials)
        }
    });
    assert_eq!(accepted(auth.authenticate(&r)).as_deref(), Some("u"));
    let encoded = req(&format!("/ws?access_token={}", pct(TOKEN)), &[]);
    assert_eq!(
        query_token(&encoded, "access_token").unwrap().expose(),
        TOKEN
    );
}

#[test]
fn header_token_source() {
    let r = req("/ws", &[("X-Api-Key", KEY)]);
    assert_eq!(header_token(&r, "x-api-key").unwrap().expose(), KEY);
    assert_eq!(
        header_token(&req("/ws", &[]), "x-api-key"),
        Err(AuthFailure::MissingCredentials)
    );
    assert_eq!(
        header_token(&req("/ws", &[("X-Api-Key", "  ")]), "x-api-key"),
        Err(AuthFailure::MalformedCredentials)
    );
}

#[test]
fn bearer_or_query_prefers_bearer_and_reports_the_specific_failure() {
    let src = TokenSource::BearerOrQuery("token".into());
    let both = req(
        "/ws?token=from-query",
        &[("Authorization", "Bearer from-header")],
    );
    assert_eq!(src.extract(&both).unwrap().expose(), "from-header");
    let query_only = req("/ws?token=from-query", &[]);
    assert_eq!(src.extract(&query_only).unwrap().expose(), "from-query");
    let basic_and_query = req("/ws?token=from-query", &[("Authorization", "Basic x")]);
    assert_eq!(
        src.extract(&basic_and_query).unwrap().expose(),
        "from-query"
    );
    assert_eq!(
        src.extract(&req("/ws", &[])),
        Err(AuthFailure::MissingCredentials)
    );
    assert_eq!(
        src.extract(&req("/ws", &[("Authorization", "Basic x")])),
        Err(AuthFailure::MalformedCredentials)
    );
    assert_eq!(
        src.extract(&req("/ws?token=", &[])),
        Err(AuthFailure::MalformedCredentials)
    );
}

// --- API keys -------------------------------------------------------------

fn keys() -> ApiKeyAuth {
    ApiKeyAuth::new([
        ("wsk_live_0000aaaa".to_string(), "user-zero".to_string()),
        (KEY.to_string(), USER.to_string()),
        ("wsk_live_ffffzzzz".to_string(), "user-last".to_string()),
    ])
}

fn near_misses() -> Vec<(&'static str, String)> {
    let mut first = KEY.as_bytes().to_vec();
    first[0] ^= 1;
    let mut middle = KEY.as_bytes().to_vec();
    middle[KEY.len() / 2] ^= 1;
    let mut last = KEY.as_bytes().to_vec();
    last[KEY.len() - 1] ^= 1;
    let s = |v: Vec<u8>| String::from_utf8(v).unwrap();
    vec![
        ("empty", String::new()),
        ("first byte", s(first)),
        ("middle byte", s(middle)),
        ("last byte", s(last)),
        ("prefix only", KEY[..KEY.len() - 1].to_string()),
        ("extra suffix", format!("{KEY}x")),
        ("case-shifted", KEY.to_uppercase()),
        ("leading space", format!(" {KEY}")),
        ("trailing space", format!("{KEY} ")),
        ("all different", "X".repeat(KEY.len())),
    ]
}

#[test]
fn api_key_valid_key_accepted_with_its_user() {
    let auth = keys();
    assert_eq!(
        accepted(auth.authenticate(&bearer(&format!("Bearer {KEY}")))).as_deref(),
        Some(USER)
    );
    assert_eq!(auth.verify(&Secret::new(KEY)).unwrap().user_id, USER);
}

#[test]
fn api_key_near_misses_are_all_rejected_without_leaking_the_user() {
    let auth = keys().source(TokenSource::Query("key".into()));
    for (what, miss) in near_misses() {
        assert_ne!(miss, KEY, "{what}: not a near miss");
        // Directly, so padding and emptiness reach the comparison untouched.
        assert_eq!(
            auth.verify(&Secret::new(miss.clone())),
            Err(AuthFailure::InvalidCredentials),
            "{what}"
        );
        // Through the request; percent-encoded so every byte survives.
        let d = auth.authenticate(&req(&format!("/ws?key={}", pct(&miss)), &[]));
        let shown = format!("{d:?}");
        let r = rejection(d);
        assert_eq!(r.status, 401, "{what}");
        let expected = if miss.is_empty() {
            AuthFailure::MalformedCredentials
        } else {
            AuthFailure::InvalidCredentials
        };
        assert_eq!(r.failure, expected, "{what}");
        for out in [shown, format!("{r:?}"), r.to_string()] {
            assert!(!out.contains(USER) && !out.contains(KEY), "{what}: {out}");
        }
    }
}

#[test]
fn api_key_near_misses_via_bearer_are_rejected() {
    let auth = keys();
    for (what, miss) in near_misses() {
        let d = auth.authenticate(&bearer(&format!("Bearer {miss}")));
        // HTTP strips trailing whitespace from a header value, so "key " is
        // the key itself once on the wire; only the query form can carry it.
        if what == "trailing space" {
            assert_eq!(accepted(d).as_deref(), Some(USER));
            continue;
        }
        assert!(accepted(d).is_none(), "{what}");
    }
}

#[test]
fn api_key_several_keys_map_to_their_users() {
    let auth = keys();
    for (key, user) in [
        ("wsk_live_0000aaaa", "user-zero"),
        (KEY, USER),
        ("wsk_live_ffffzzzz", "user-last"),
    ] {
        assert_eq!(auth.verify(&Secret::new(key)).unwrap().user_id, user);
    }
    assert_eq!(auth.len(), 3);
}

#[test]
fn api_key_duplicates_take_the_last_user_and_empty_keys_are_dropped() {
    let auth = ApiKeyAuth::new([
        ("k".to_string(), "old".to_string()),
        ("".to_string(), "nobody".to_string()),
        ("k".to_string(), "new".to_string()),
    ]);
    assert_eq!(auth.len(), 1);
    assert_eq!(auth.verify(&Secret::new("k")).unwrap().user_id, "new");
    assert!(auth.verify(&Secret::new("")).is_err());
    let empty = ApiKeyAuth::new(Vec::new());
    assert!(empty.is_empty());
    assert!(empty.verify(&Secret::new("k")).is_err());
}

#[test]
fn api_key_header_source() {
    let auth = keys().source(TokenSource::Header("X-Api-Key".into()));
    let ok = req("/ws", &[("x-api-key", KEY)]);
    assert_eq!(accepted(auth.authenticate(&ok)).as_deref(), Some(USER));
    // The bearer is not looked at once the source is a header.
    let bearer_only = bearer(&format!("Bearer {KEY}"));
    assert_eq!(
        rejection(auth.authenticate(&bearer_only)).failure,
        AuthFailure::MissingCredentials
    );
}

// --- constant-time equality ----------------------------------------------

quickcheck! {
    fn ct_eq_matches_eq(a: Vec<u8>, b: Vec<u8>) -> bool {
        constant_time_eq(&a, &b) == (a == b)
    }

    fn ct_eq_is_reflexive(a: Vec<u8>) -> bool {
        constant_time_eq(&a, &a.clone())
    }

    fn ct_eq_sees_any_single_byte_change(a: Vec<u8>, at: usize, flip: u8) -> bool {
        if a.is_empty() || flip == 0 {
            return true;
        }
        let mut b = a.clone();
        let i = at % b.len();
        b[i] ^= flip;
        !constant_time_eq(&a, &b)
    }
}

#[test]
fn ct_eq_edges() {
    assert!(constant_time_eq(b"", b""));
    assert!(!constant_time_eq(b"", b"\0"));
    assert!(!constant_time_eq(b"\0", b""));
    assert!(!constant_time_eq(b"ab", b"abc"));
    assert!(!constant_time_eq(&[0x80], &[0x00]));
    assert!(constant_time_eq(&[0xff; 300], &[0xff; 300]));
}

// --- chain ----------------------------------------------------------------

fn fixed(d: fn() -> AuthDecision) -> impl Authenticator {
    move |_: &UpgradeRequest| d()
}

#[test]
fn chain_first_accept_wins_and_later_members_are_not_asked() {
    let chain = Chain::new(vec![])
        .with(fixed(|| {
            AuthDecision::reject(AuthFailure::InvalidCredentials)
        }))
        .with(fixed(|| AuthDecision::Accept(Identity::user("second"))))
        .with(fixed(|| AuthDecision::Accept(Identity::user("third"))));
    assert_eq!(
        accepted(chain.authenticate(&req("/", &[]))).as_deref(),
        Some("second")
    );
}

#[test]
fn chain_bearer_then_query() {
    let chain = Chain::new(vec![
        Box::new(BearerAuth::new(validator)),
        Box::new(QueryTokenAuth::new("token", validator)),
    ]);
    let by_query = req(&format!("/ws?token={TOKEN}"), &[]);
    assert_eq!(
        accepted(chain.authenticate(&by_query)).as_deref(),
        Some(USER)
    );
    let by_header = bearer(&format!("Bearer {TOKEN}"));
    assert_eq!(
        accepted(chain.authenticate(&by_header)).as_deref(),
        Some(USER)
    );
    // Present-but-invalid bearer beats the absent query token.
    let bad_bearer = bearer("Bearer wrong");
    assert_eq!(
        rejection(chain.authenticate(&bad_bearer)).failure,
        AuthFailure::InvalidCredentials
    );
    // And the other way round: the order of members does not matter for this.
    let bad_query = req("/ws?token=", &[]);
    assert_eq!(
        rejection(chain.authenticate(&bad_query)).failure,
        AuthFailure::MalformedCredentials
    );
    assert_eq!(
        rejection(chain.authenticate(&req("/ws", &[]))),
        Rejection::unauthorized(AuthFailure::MissingCredentials)
    );
}

#[test]
fn chain_forbidden_beats_every_401_and_earliest_of_equals_wins() {
    let chain = Chain::new(vec![])
        .with(fixed(|| {
            AuthDecision::reject(AuthFailure::MissingCredentials)
        }))
        .with(fixed(|| {
            AuthDecision::reject(AuthFailure::InvalidCredentials)
        }))
        .with(fixed(|| AuthDecision::Reject(Rejection::forbidden())))
        .with(fixed(|| {
            AuthDecision::reject(AuthFailure::Other("late".into()))
        }));
    let r = rejection(chain.authenticate(&req("/", &[])));
    assert_eq!(r, Rejection::forbidden());
    assert_eq!(r.status, 403);

    let equals = Chain::new(vec![])
        .with(fixed(|| {
            AuthDecision::reject(AuthFailure::MissingCredentials)
        }))
        .with(fixed(|| {
            AuthDecision::reject(AuthFailure::Other("first".into()))
        }))
        .with(fixed(|| {
            AuthDecision::reject(AuthFailure::InvalidCredentials)
        }));
    assert_eq!(
        rejection(equals.authenticate(&req("/", &[]))).failure,
        AuthFailure::Other("first".into())
    );
}

#[test]
fn chain_forbidden_does_not_veto_a_later_accept() {
    let chain = Chain::new(vec![])
        .with(fixed(|| AuthDecision::Reject(Rejection::forbidden())))
        .with(AllowAll);
    assert_eq!(
        accepted(chain.authenticate(&req("/", &[]))).as_deref(),
        Some("")
    );
}

#[test]
fn chain_passes_defer_through() {
    let chain = Chain::new(vec![])
        .with(fixed(|| {
            AuthDecision::reject(AuthFailure::InvalidCredentials)
        }))
        .with(fixed(|| AuthDecision::Defer))
        .with(AllowAll);
    assert!(matches!(
        chain.authenticate(&req("/", &[])),
        AuthDecision::Defer
    ));
}

#[test]
fn empty_chain_rejects_401() {
    assert_eq!(
        rejection(Chain::new(vec![]).authenticate(&req("/", &[]))),
        Rejection::unauthorized(AuthFailure::MissingCredentials)
    );
}

// --- closures, FnAuth, AllowAll ---------------------------------------------

#[test]
fn closure_is_an_authenticator() {
    fn run(a: &dyn Authenticator, r: &UpgradeRequest) -> AuthDecision {
        a.authenticate(r)
    }
    let by_path = |r: &UpgradeRequest| {
        if r.path() == "/admin" {
            AuthDecision::Reject(Rejection::forbidden())
        } else {
            AuthDecision::Accept(Identity::user(r.path()))
        }
    };
    assert_eq!(
        accepted(run(&by_path, &req("/u1", &[]))).as_deref(),
        Some("/u1")
    );
    assert_eq!(rejection(run(&by_path, &req("/admin", &[]))).status, 403);
    let boxed: Box<dyn Authenticator> = Box::new(by_path);
    assert!(accepted(run(&boxed, &req("/u2", &[]))).is_some());
    let shared: Arc<dyn Authenticator> = Arc::new(FnAuth::new(by_path));
    assert!(accepted(run(&shared, &req("/u3", &[]))).is_some());
}

#[test]
fn allow_all_accepts_with_empty_identity() {
    match AllowAll.authenticate(&req("/", &[])) {
        AuthDecision::Accept(id) => assert_eq!(id, Identity::default()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejection_statuses() {
    assert_eq!(
        Rejection::unauthorized(AuthFailure::InvalidCredentials).status,
        401
    );
    assert_eq!(Rejection::forbidden().status, 403);
    assert_eq!(Rejection::unauthorized(AuthFailure::Forbidden).status, 403);
    assert_eq!(Rejection::from(AuthFailure::MissingCredentials).status, 401);
    // A validator's Forbidden becomes a 403 through the built-ins too.
    let auth = BearerAuth::new(|_: &Secret| Err(AuthFailure::Forbidden));
    assert_eq!(
        rejection(auth.authenticate(&bearer("Bearer x"))),
        Rejection::forbidden()
    );
}

// --- nothing leaks --------------------------------------------------------

#[test]
fn debug_of_authenticators_shows_no_secret() {
    let chain = Chain::new(vec![Box::new(keys())]).with(BearerAuth::new(validator));
    let key_table = ApiKeyAuth::new([(TOKEN.to_string(), USER.to_string())]);
    let outputs = [
        format!("{:?}", BearerAuth::new(validator)),
        format!("{:?}", QueryTokenAuth::new("token", validator)),
        format!("{:?}", TokenAuth::new(TokenSource::Bearer, validator)),
        format!("{key_table:?}"),
        format!("{:?}", keys()),
        format!(
            "{:?}",
            FnAuth::new(|_: &UpgradeRequest| AuthDecision::Defer)
        ),
        format!("{chain:?}"),
        format!("{AllowAll:?}"),
    ];
    for out in &outputs {
        assert!(!out.contains(TOKEN) && !out.contains(KEY), "{out}");
        assert!(!out.contains(USER), "user ids are not shown either: {out}");
    }
    assert!(outputs[0].contains("<fn>"));
    assert!(outputs[3].contains("keys: 1"), "{}", outputs[3]);
    assert!(outputs[4].contains("keys: 3"), "{}", outputs[4]);
}

#[test]
fn rejections_and_failures_show_no_token() {
    let auth = Chain::new(vec![])
        .with(BearerAuth::new(validator))
        .with(QueryTokenAuth::new("token", validator))
        .with(keys());
    let near = format!("{TOKEN}x");
    let requests = [
        bearer(&format!("Bearer {near}")),
        bearer(&format!("Basic {TOKEN}")),
        bearer(&format!("Bearer {TOKEN} {TOKEN}")),
        req(&format!("/ws?token={near}"), &[]),
        req(&format!("/ws?token={TOKEN}&token={TOKEN}"), &[]),
    ];
    for r in &requests {
        let d = auth.authenticate(r);
        let shown = format!("{d:?}");
        let rej = rejection(d);
        for out in [
            shown,
            format!("{rej:?}"),
            rej.to_string(),
            rej.failure.to_string(),
        ] {
            assert!(!out.contains(TOKEN), "{out}");
        }
    }
    for f in [
        AuthFailure::MissingCredentials,
        AuthFailure::MalformedCredentials,
        AuthFailure::InvalidCredentials,
        AuthFailure::Forbidden,
    ] {
        let text = f.to_string();
        assert!(!text.is_empty() && !text.contains(TOKEN), "{text}");
    }
    // The extracted secret itself prints redacted.
    let s = bearer_token(&bearer(&format!("Bearer {TOKEN}"))).unwrap();
    assert!(!format!("{s:?} {s}").contains(TOKEN));
}
