//! Authentication of upgrade requests, decided before the `101`.
//!
//! An [`Authenticator`] looks at the [`UpgradeRequest`] and answers
//! [`AuthDecision::Accept`] with an [`Identity`], [`AuthDecision::Reject`] with a
//! [`Rejection`] (which the hub turns into `401`, or `403` when forbidden), or
//! [`AuthDecision::Defer`] when the answer needs I/O the core must not do.
//!
//! Built in: [`BearerAuth`] (`Authorization: Bearer <t>`), [`QueryTokenAuth`]
//! (`?token=<t>`, for browsers), [`ApiKeyAuth`] (a static key table compared in
//! constant time), [`FnAuth`] and plain closures, [`Chain`] and [`AllowAll`].
//!
//! Credentials never leave this module in readable form: tokens travel as
//! [`Secret`], failures carry no credential, and every type's `Debug` prints
//! validators as `<fn>` and key tables as a count.

use core::fmt;
use std::sync::Arc;

use crate::request::{percent_decode, Identity, Secret, UpgradeRequest};

/// Why authentication failed; never carries the credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential where one was looked for (header or parameter absent).
    MissingCredentials,
    /// A credential was sent but cannot be read (wrong scheme, empty, extra parts,
    /// duplicated, not UTF-8).
    MalformedCredentials,
    /// A well-formed credential that does not authenticate anyone.
    InvalidCredentials,
    /// Authenticated or not, this client may not connect (`403`).
    Forbidden,
    /// An application-specific reason. It is shown as is, so it must not contain
    /// the credential either.
    Other(String),
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFailure::MissingCredentials => f.write_str("missing credentials"),
            AuthFailure::MalformedCredentials => f.write_str("malformed credentials"),
            AuthFailure::InvalidCredentials => f.write_str("invalid credentials"),
            AuthFailure::Forbidden => f.write_str("forbidden"),
            AuthFailure::Other(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for AuthFailure {}

/// A refusal the hub turns into an HTTP status: 401 by default, 403 for Forbidden.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status of the refusal.
    pub status: u16,
    /// Why; shown in logs, never echoes the credential.
    pub failure: AuthFailure,
}

impl Rejection {
    /// A `401` refusal. [`AuthFailure::Forbidden`] still yields `403`, so the
    /// status never contradicts the failure.
    pub fn unauthorized(failure: AuthFailure) -> Self {
        Rejection::from(failure)
    }

    /// A `403` refusal.
    pub fn forbidden() -> Self {
        Rejection {
            status: 403,
            failure: AuthFailure::Forbidden,
        }
    }
}

impl From<AuthFailure> for Rejection {
    fn from(failure: AuthFailure) -> Self {
        let status = if failure == AuthFailure::Forbidden {
            403
        } else {
            401
        };
        Rejection { status, failure }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.failure)
    }
}

/// An authenticator's answer.
#[derive(Debug)]
pub enum AuthDecision {
    /// Upgrade the connection on behalf of this identity.
    Accept(Identity),
    /// Refuse the upgrade with this status.
    Reject(Rejection),
    /// The application answers later through the hub (I/O-bound checks); the
    /// handshake timeout keeps running meanwhile.
    Defer,
}

impl AuthDecision {
    /// Rejects with the status that fits `failure` (403 for Forbidden, else 401).
    pub fn reject(failure: AuthFailure) -> Self {
        AuthDecision::Reject(Rejection::from(failure))
    }

    /// Turns a validator's result into a decision.
    pub fn from_result(result: Result<Identity, AuthFailure>) -> Self {
        match result {
            Ok(identity) => AuthDecision::Accept(identity),
            Err(failure) => AuthDecision::reject(failure),
        }
    }
}

/// Decides on an upgrade request before the 101. Must not block: do I/O by
/// returning [`AuthDecision::Defer`].
pub trait Authenticator: Send + Sync {
    /// Accepts, rejects or defers `req`.
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision;
}

/// Any function of the request is an authenticator.
impl<F> Authenticator for F
where
    F: Fn(&UpgradeRequest) -> AuthDecision + Send + Sync,
{
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        self(req)
    }
}

/// So boxed authenticators (a [`Chain`]'s members, a hub's configured one) nest.
impl Authenticator for Box<dyn Authenticator> {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        (**self).authenticate(req)
    }
}

/// So one authenticator can be shared between hubs or listeners.
impl Authenticator for Arc<dyn Authenticator> {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        (**self).authenticate(req)
    }
}

// ---------------------------------------------------------------------------
// Token extraction
// ---------------------------------------------------------------------------

/// Optional whitespace around a header value (RFC 9110 OWS) is not part of it.
fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// The one value of header `name`, trimmed.
///
/// Several headers of the same name are refused rather than picking one: an
/// intermediary that checked the last one and a hub that reads the first would
/// disagree about who the client is.
fn single_header<'a>(req: &'a UpgradeRequest, name: &'a str) -> Result<&'a str, AuthFailure> {
    let mut values = req.header_values(name);
    let first = values.next().ok_or(AuthFailure::MissingCredentials)?;
    if values.next().is_some() {
        return Err(AuthFailure::MalformedCredentials);
    }
    let text = core::str::from_utf8(first).map_err(|_| AuthFailure::MalformedCredentials)?;
    Ok(trim_ows(text))
}

/// Extracts the token from `Authorization: Bearer <t>`.
///
/// The scheme is case-insensitive and must be followed by exactly one space and
/// one token with no whitespace or control characters in it; surrounding
/// whitespace of the header value is not part of it (HTTP semantics).
///
/// - header absent -> [`AuthFailure::MissingCredentials`];
/// - `Bearer`, `Bearer ` (no or empty token), `Basic abc` (wrong scheme),
///   `Bearer a b` (extra parts), `Bearerabc` (no space), an empty value, a value
///   that is not UTF-8, or more than one `Authorization` header ->
///   [`AuthFailure::MalformedCredentials`].
///
/// Several spaces between scheme and token (`Bearer  abc`) are refused as
/// malformed. RFC 6750 allows them, but go-ws splits on the first space and
/// would validate `" abc"`, which fails; refusing keeps a whitespace-padded
/// token a near miss instead of silently stripping the padding.
pub fn bearer_token(req: &UpgradeRequest) -> Result<Secret, AuthFailure> {
    let value = single_header(req, "authorization")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthFailure::MalformedCredentials)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::MalformedCredentials);
    }
    let bad = |c: char| c.is_whitespace() || c.is_control();
    if token.is_empty() || token.contains(bad) {
        return Err(AuthFailure::MalformedCredentials);
    }
    Ok(Secret::new(token))
}

/// Extracts the `?<param>=` value, percent-decoded (`+` is a space).
///
/// - parameter absent (or no query) -> [`AuthFailure::MissingCredentials`];
/// - empty value (`?token=` or `?token`), a bad escape or non-UTF-8 result, or the
///   parameter given more than once -> [`AuthFailure::MalformedCredentials`].
///
/// Duplicates are refused for the same reason as duplicate headers: two parsers
/// picking different copies must not disagree about the credential.
pub fn query_token(req: &UpgradeRequest, param: &str) -> Result<Secret, AuthFailure> {
    let query = req.query().ok_or(AuthFailure::MissingCredentials)?;
    let mut found: Option<&str> = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // A key that does not decode cannot be ours; it is someone else's problem.
        if percent_decode(key).as_deref() != Some(param) {
            continue;
        }
        if found.is_some() {
            return Err(AuthFailure::MalformedCredentials);
        }
        found = Some(value);
    }
    let raw = found.ok_or(AuthFailure::MissingCredentials)?;
    let token = percent_decode(raw).ok_or(AuthFailure::MalformedCredentials)?;
    if token.is_empty() {
        return Err(AuthFailure::MalformedCredentials);
    }
    Ok(Secret::new(token))
}

/// Extracts a token carried as the whole value of header `name` (say
/// `X-API-Key`). Absent -> missing; empty, duplicated or not UTF-8 -> malformed.
pub fn header_token(req: &UpgradeRequest, name: &str) -> Result<Secret, AuthFailure> {
    let value = single_header(req, name)?;
    if value.is_empty() {
        return Err(AuthFailure::MalformedCredentials);
    }
    Ok(Secret::new(value))
}

/// Where a token is looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <t>` (see [`bearer_token`]).
    Bearer,
    /// `?<param>=<t>` (see [`query_token`]).
    Query(String),
    /// The whole value of this header (see [`header_token`]).
    Header(String),
    /// Bearer first, then `?<param>=`.
    ///
    /// The first source that yields a token is the one checked: a present but
    /// invalid bearer is not rescued by a valid query token. When the bearer is
    /// absent or malformed the query is tried, so a browser behind a proxy that
    /// adds `Authorization: Basic ...` can still use `?token=`; when neither gives
    /// a token the failure is the most specific of the two (malformed beats
    /// missing).
    BearerOrQuery(String),
}

impl TokenSource {
    /// Extracts the token from `req` according to this source.
    pub fn extract(&self, req: &UpgradeRequest) -> Result<Secret, AuthFailure> {
        match self {
            TokenSource::Bearer => bearer_token(req),
            TokenSource::Query(param) => query_token(req, param),
            TokenSource::Header(name) => header_token(req, name),
            TokenSource::BearerOrQuery(param) => match bearer_token(req) {
                Ok(token) => Ok(token),
                Err(bearer_failure) => match query_token(req, param) {
                    Ok(token) => Ok(token),
                    Err(AuthFailure::MissingCredentials) => Err(bearer_failure),
                    Err(query_failure) => Err(query_failure),
                },
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Constant-time comparison
// ---------------------------------------------------------------------------

/// 1 when equal, 0 otherwise, without branching on the contents.
fn ct_eq_mask(a: &[u8], b: &[u8]) -> u8 {
    // Lengths are not secret-dependent in a way this can hide (the caller's token
    // length is the attacker's choice); contents are.
    if a.len() != b.len() {
        return 0;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box stops the optimiser from turning the fold into an early exit.
    let diff = core::hint::black_box(diff);
    // diff == 0 -> 1, else 0, arithmetically rather than with a branch.
    (((diff as u16).wrapping_sub(1) >> 8) & 1) as u8
}

/// Constant-time equality: the time taken depends only on the lengths, never on
/// where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    ct_eq_mask(a, b) == 1
}

// ---------------------------------------------------------------------------
// Validators and authenticators
// ---------------------------------------------------------------------------

/// A token validator: `Ok(identity)` accepts, `Err(failure)` rejects.
type Validator = Box<dyn Fn(&Secret) -> Result<Identity, AuthFailure> + Send + Sync>;

/// A token from a [`TokenSource`] checked by a validator; the general form of
/// [`BearerAuth`] and [`QueryTokenAuth`].
pub struct TokenAuth {
    source: TokenSource,
    validator: Validator,
}

impl TokenAuth {
    /// Looks for the token in `source` and hands it to `validator`.
    pub fn new(
        source: TokenSource,
        validator: impl Fn(&Secret) -> Result<Identity, AuthFailure> + Send + Sync + 'static,
    ) -> Self {
        TokenAuth {
            source,
            validator: Box::new(validator),
        }
    }

    /// Where the token is looked for.
    pub fn source(&self) -> &TokenSource {
        &self.source
    }
}

impl Authenticator for TokenAuth {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        // The validator only runs on a well-formed token, so it never has to
        // tell "absent" from "wrong".
        AuthDecision::from_result(self.source.extract(req).and_then(|t| (self.validator)(&t)))
    }
}

impl fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuth")
            .field("source", &self.source)
            .field("validator", &format_args!("<fn>"))
            .finish()
    }
}

/// `Authorization: Bearer <t>` checked by a validator: `Ok(Identity)` accepts,
/// `Err(AuthFailure)` rejects (go-ws `BearerTokenAuth`).
pub struct BearerAuth(TokenAuth);

impl BearerAuth {
    /// Checks bearer tokens with `validator` (a JWT verifier, a session lookup).
    pub fn new(
        validator: impl Fn(&Secret) -> Result<Identity, AuthFailure> + Send + Sync + 'static,
    ) -> Self {
        BearerAuth(TokenAuth::new(TokenSource::Bearer, validator))
    }
}

impl Authenticator for BearerAuth {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        self.0.authenticate(req)
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("validator", &format_args!("<fn>"))
            .finish()
    }
}

/// `?token=<t>` (parameter name configurable) checked by a validator, for
/// browsers, whose `WebSocket` cannot set headers (go-ws `QueryTokenAuth`).
pub struct QueryTokenAuth(TokenAuth);

impl QueryTokenAuth {
    /// Checks the `param` query parameter with `validator`.
    pub fn new(
        param: impl Into<String>,
        validator: impl Fn(&Secret) -> Result<Identity, AuthFailure> + Send + Sync + 'static,
    ) -> Self {
        QueryTokenAuth(TokenAuth::new(TokenSource::Query(param.into()), validator))
    }
}

impl Authenticator for QueryTokenAuth {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        self.0.authenticate(req)
    }
}

impl fmt::Debug for QueryTokenAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let param = match &self.0.source {
            TokenSource::Query(p) => p.as_str(),
            _ => "",
        };
        f.debug_struct("QueryTokenAuth")
            .field("param", &param)
            .field("validator", &format_args!("<fn>"))
            .finish()
    }
}

/// A static key table, key -> user id (go-ws `APIKeyAuthenticator`). The token
/// comes from `Authorization: Bearer` unless [`ApiKeyAuth::source`] says
/// otherwise.
///
/// A presented token is compared against every key in constant time, without
/// stopping at a match, so timing does not tell which key matched or how many
/// keys share a prefix with it. `Debug` prints the number of keys only.
pub struct ApiKeyAuth {
    keys: Vec<(Secret, String)>,
    source: TokenSource,
}

impl ApiKeyAuth {
    /// Builds the table. A key given twice maps to its last user id (as a map
    /// insert would); empty keys are dropped, since no extractor yields an empty
    /// token.
    pub fn new(keys: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut table: Vec<(Secret, String)> = Vec::new();
        for (key, user) in keys {
            if key.is_empty() {
                continue;
            }
            // Dedup at build time so at most one entry can match at check time,
            // which keeps the branch-free selection below unambiguous.
            match table.iter_mut().find(|(k, _)| k.expose() == key) {
                Some(entry) => entry.1 = user,
                None => table.push((Secret::new(key), user)),
            }
        }
        ApiKeyAuth {
            keys: table,
            source: TokenSource::Bearer,
        }
    }

    /// Looks for the key in `source` instead of the bearer token.
    pub fn source(mut self, source: TokenSource) -> Self {
        self.source = source;
        self
    }

    /// The number of keys in the table.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the table is empty (then every request is rejected).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a token against the table: the identity of the matching key, or
    /// [`AuthFailure::InvalidCredentials`].
    pub fn verify(&self, token: &Secret) -> Result<Identity, AuthFailure> {
        let presented = token.expose().as_bytes();
        let mut found = 0usize;
        let mut any = 0u8;
        for (i, (key, _)) in self.keys.iter().enumerate() {
            let hit = ct_eq_mask(presented, key.expose().as_bytes());
            // All ones on a hit, zero otherwise: select the index without a branch.
            let mask = (hit as usize).wrapping_neg();
            found = (found & !mask) | (i & mask);
            any |= hit;
        }
        if core::hint::black_box(any) == 1 {
            if let Some((_, user)) = self.keys.get(found) {
                return Ok(Identity::user(user.clone()));
            }
        }
        Err(AuthFailure::InvalidCredentials)
    }
}

impl Authenticator for ApiKeyAuth {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        AuthDecision::from_result(self.source.extract(req).and_then(|t| self.verify(&t)))
    }
}

impl fmt::Debug for ApiKeyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyAuth")
            .field("keys", &self.keys.len())
            .field("source", &self.source)
            .finish()
    }
}

/// Any function of the request: the same as using a closure directly, but named
/// and with `Debug`.
pub struct FnAuth(Box<dyn Fn(&UpgradeRequest) -> AuthDecision + Send + Sync>);

impl FnAuth {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&UpgradeRequest) -> AuthDecision + Send + Sync + 'static) -> Self {
        FnAuth(Box::new(f))
    }
}

impl Authenticator for FnAuth {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        (self.0)(req)
    }
}

impl fmt::Debug for FnAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnAuth(<fn>)")
    }
}

/// Tries its members in order.
///
/// The rule:
/// - the first member that accepts or defers decides, and later members are not
///   asked; a rejection from an earlier member does not veto a later accept (put
///   vetoes such as ban checks inside a validator instead);
/// - if every member rejects, the most specific rejection is returned: a `403`
///   from any member beats every `401`; otherwise a failure other than
///   [`AuthFailure::MissingCredentials`] beats a missing one (a bearer that was
///   present but invalid says more than a query token that was absent); among
///   equals the earliest member wins;
/// - an empty chain rejects with `401` missing credentials.
pub struct Chain {
    members: Vec<Box<dyn Authenticator>>,
}

impl Chain {
    /// A chain of `members`, tried in order.
    pub fn new(members: Vec<Box<dyn Authenticator>>) -> Self {
        Chain { members }
    }

    /// Appends a member.
    pub fn with(mut self, member: impl Authenticator + 'static) -> Self {
        self.members.push(Box::new(member));
        self
    }
}

/// How much a rejection tells; higher wins in a [`Chain`].
fn specificity(r: &Rejection) -> u8 {
    if r.status == 403 || r.failure == AuthFailure::Forbidden {
        2
    } else if r.failure == AuthFailure::MissingCredentials {
        0
    } else {
        1
    }
}

impl Authenticator for Chain {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        let mut best: Option<Rejection> = None;
        for member in &self.members {
            match member.authenticate(req) {
                AuthDecision::Reject(r) => {
                    // Strictly greater, so the earliest of equals is kept.
                    let better = match &best {
                        None => true,
                        Some(b) => specificity(&r) > specificity(b),
                    };
                    if better {
                        best = Some(r);
                    }
                }
                decided => return decided,
            }
        }
        AuthDecision::Reject(
            best.unwrap_or_else(|| Rejection::unauthorized(AuthFailure::MissingCredentials)),
        )
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("members", &self.members.len())
            .finish()
    }
}

/// Allows everyone with an empty [`Identity`] (auth off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _req: &UpgradeRequest) -> AuthDecision {
        AuthDecision::Accept(Identity::default())
    }
}

#[cfg(test)]
mod tests;
