//! JWT authentication for `wshub serve`: `--jwt-secret` (HS256) and
//! `--jwt-public-key FILE` (RS256 or ES256).
//!
//! The token comes from `Authorization: Bearer` or `?token=` (as for API
//! keys); its `sub` claim becomes the user id. Each authenticator accepts the
//! one algorithm its key is for, never the token header's choice: an HS256
//! token checked against an RSA public key (the classic key-confusion attack)
//! or `alg: none` is refused. `exp` is required and checked with 60 s of
//! leeway for clock skew; `nbf` is checked when present.
//!
//! Audience and issuer (`--jwt-audience`, `--jwt-issuer`, both repeatable):
//! with audiences set, `aud` (a string or an array) is required and must hold
//! one of them; with none set, a token carrying any `aud` is refused, since it
//! was meant for someone else. With issuers set, `iss` is required and must be
//! a string equal to one of them; with none set, `iss` is ignored.
//!
//! Rejections are `401` with a fixed reason: never the token or any part of
//! its claims, since the reason ends up in logs.

use core::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::IgnoredAny;
use serde::Deserialize;
use wshub_core::auth::{ApiKeyAuth, AuthDecision, AuthFailure, Authenticator, TokenSource};
use wshub_core::{Identity, Secret, UpgradeRequest};

/// Validates JWTs signed with one key and one algorithm.
///
/// `Debug` shows the algorithm only, never the key.
pub struct JwtAuth {
    key: DecodingKey,
    validation: Validation,
    source: TokenSource,
    /// The claim naming the user (`sub` unless configured).
    user_claim: String,
    /// Claims that must hold these values (a string equal to it, or an
    /// array containing it).
    required: Vec<(String, String)>,
}

/// Why a public key file cannot be used; names no key material.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// The claims the hub checks itself; all of them (`rest`) go into the
/// identity.
#[derive(Deserialize)]
struct Claims {
    /// Checked by jsonwebtoken when audiences are set; read here too so that
    /// an `aud` jsonwebtoken cannot parse (a number, a mixed array) is still
    /// refused when none are.
    #[serde(default)]
    aud: Option<IgnoredAny>,
    /// jsonwebtoken also accepts an array `iss` sharing one member with the
    /// issuers; the hub wants one string, as RFC 7519 has it.
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl JwtAuth {
    fn with(key: DecodingKey, alg: Algorithm) -> JwtAuth {
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        JwtAuth {
            key,
            validation,
            source: TokenSource::BearerOrQuery("token".into()),
            user_claim: "sub".into(),
            required: Vec::new(),
        }
    }

    /// Takes the user id from `claim` instead of `sub` (Keycloak:
    /// `preferred_username`); it must be a non-empty string.
    pub fn user_claim(mut self, claim: &str) -> JwtAuth {
        self.user_claim = claim.to_owned();
        self.require_claims();
        self
    }

    /// Accepts only tokens whose claim `name` is `value` (or an array
    /// holding it), for each pair (`azp=web-app`).
    pub fn require(mut self, claims: &[(String, String)]) -> JwtAuth {
        self.required = claims.to_vec();
        self
    }

    /// HS256 with a shared secret.
    pub fn hs256(secret: &Secret) -> JwtAuth {
        JwtAuth::with(
            DecodingKey::from_secret(secret.expose().as_bytes()),
            Algorithm::HS256,
        )
    }

    /// RS256 for an RSA public key, ES256 for an EC P-256 public key, in PEM
    /// (`-----BEGIN PUBLIC KEY-----`, or `RSA PUBLIC KEY` for PKCS#1).
    pub fn from_public_key_pem(pem: &[u8]) -> Result<JwtAuth, KeyError> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY-----") {
            // jsonwebtoken would take the private key's first bit string as
            // a public key and then fail every token: say so up front instead.
            return Err(KeyError(
                "holds a private key; give the public key (openssl pkey -in KEY -pubout)".into(),
            ));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(JwtAuth::with(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // The EC verifier parses the point when built: a P-384 key or a
            // broken point fails here, at start, rather than on every token.
            if jsonwebtoken::crypto::verify("AA", b"probe", &key, Algorithm::ES256).is_err() {
                return Err(KeyError("is not an EC P-256 public key (ES256)".into()));
            }
            return Ok(JwtAuth::with(key, Algorithm::ES256));
        }
        Err(KeyError(
            "is not a PEM RSA (RS256) or EC P-256 (ES256) public key".into(),
        ))
    }

    /// Accepts only tokens whose `aud` holds one of `audiences` (then `aud`
    /// is required). With none, a token carrying `aud` is refused.
    pub fn audiences(mut self, audiences: &[String]) -> JwtAuth {
        if audiences.is_empty() {
            self.validation.aud = None;
        } else {
            self.validation.set_audience(audiences);
        }
        self.require_claims();
        self
    }

    /// Accepts only tokens whose `iss` is one of `issuers` (then `iss` is
    /// required). With none, `iss` is ignored.
    pub fn issuers(mut self, issuers: &[String]) -> JwtAuth {
        if issuers.is_empty() {
            self.validation.iss = None;
        } else {
            self.validation.set_issuer(issuers);
        }
        self.require_claims();
        self
    }

    fn require_claims(&mut self) {
        let mut required = vec!["exp"];
        if self.user_claim == "sub" {
            required.push("sub");
        }
        if self.validation.aud.is_some() {
            required.push("aud");
        }
        if self.validation.iss.is_some() {
            required.push("iss");
        }
        self.validation.set_required_spec_claims(&required);
    }

    /// The algorithm accepted.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Checks one token: the identity named by its `sub`, or why not.
    pub fn verify(&self, token: &Secret) -> Result<Identity, AuthFailure> {
        let has_audiences = self.validation.aud.is_some();
        let data = jsonwebtoken::decode::<Claims>(token.expose(), &self.key, &self.validation)
            .map_err(|e| failure(e.kind(), has_audiences))?;
        let claims = data.claims;
        if claims.aud.is_some() && !has_audiences {
            return Err(failure(&ErrorKind::InvalidAudience, false));
        }
        if let Some(issuers) = &self.validation.iss {
            let one_of_them = matches!(&claims.iss, Some(serde_json::Value::String(iss)) if issuers.contains(iss));
            if !one_of_them {
                return Err(failure(&ErrorKind::InvalidIssuer, has_audiences));
            }
        }
        let mut rest = claims.rest;
        for (name, want) in &self.required {
            let holds = match rest.get(name) {
                Some(serde_json::Value::String(v)) => v == want,
                Some(serde_json::Value::Array(vs)) => vs.iter().any(|v| v.as_str() == Some(want)),
                _ => false,
            };
            if !holds {
                // Neither the claim's value nor the wanted one is repeated.
                return Err(AuthFailure::Other(
                    "jwt: a required claim does not match".into(),
                ));
            }
        }
        let user = match rest.get(&self.user_claim) {
            Some(serde_json::Value::String(u)) if !u.is_empty() => u.clone(),
            _ if self.user_claim == "sub" => {
                return Err(AuthFailure::Other("jwt: no sub claim".into()))
            }
            _ => return Err(AuthFailure::Other("jwt: no user claim".into())),
        };
        rest.remove("exp");
        let mut identity = Identity::user(user);
        identity.claims = rest;
        Ok(identity)
    }
}

/// A fixed reason per failure. jsonwebtoken's own messages can quote parts of
/// the claims (JSON errors do), so none of them is passed on; neither are the
/// configured audiences or issuers, nor the token's.
fn failure(kind: &ErrorKind, has_audiences: bool) -> AuthFailure {
    let reason = match kind {
        ErrorKind::InvalidSignature => "jwt: bad signature",
        ErrorKind::ExpiredSignature => "jwt: expired",
        ErrorKind::ImmatureSignature => "jwt: not valid yet (nbf)",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "jwt: wrong algorithm",
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "sub" => "jwt: no sub claim",
            // Also an `aud` or `iss` that is not a string (or, for `aud`, an
            // array of strings): jsonwebtoken counts it as absent.
            "aud" => "jwt: no audience (aud) claim",
            "iss" => "jwt: no issuer (iss) claim",
            _ => "jwt: no exp claim",
        },
        ErrorKind::InvalidAudience if has_audiences => "jwt: wrong audience",
        ErrorKind::InvalidAudience => "jwt: has an audience (aud) this hub does not accept",
        ErrorKind::InvalidIssuer => "jwt: wrong issuer",
        ErrorKind::InvalidClaimFormat(_) => "jwt: malformed claims",
        _ => "jwt: malformed token",
    };
    AuthFailure::Other(reason.into())
}

impl Authenticator for JwtAuth {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        AuthDecision::from_result(self.source.extract(req).and_then(|t| self.verify(&t)))
    }
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithm", &self.algorithm())
            .field("key", &"<redacted>")
            .field("audiences", &self.validation.aud)
            .field("issuers", &self.validation.iss)
            .field("source", &self.source)
            .field("user_claim", &self.user_claim)
            .field("required", &self.required)
            .finish()
    }
}

/// API keys and JWT verifiers over one token: `--api-key` with `--jwt-*`,
/// where either is accepted.
///
/// Unlike a [`wshub_core::auth::Chain`], a refusal says why in the terms of
/// what was sent: a JWT-shaped token gets its JWT reason (expired, bad
/// signature...) rather than "invalid credentials" from the key table.
#[derive(Debug)]
pub struct KeysOrJwt {
    keys: Option<ApiKeyAuth>,
    jwts: Vec<JwtAuth>,
    source: TokenSource,
}

impl KeysOrJwt {
    /// Either a key of `keys` (if any) or a JWT one of `jwts` accepts.
    pub fn new(keys: Option<ApiKeyAuth>, jwts: Vec<JwtAuth>) -> KeysOrJwt {
        KeysOrJwt {
            keys,
            jwts,
            source: TokenSource::BearerOrQuery("token".into()),
        }
    }

    /// Checks one token.
    pub fn verify(&self, token: &Secret) -> Result<Identity, AuthFailure> {
        let mut failure = AuthFailure::InvalidCredentials;
        if let Some(keys) = &self.keys {
            match keys.verify(token) {
                Ok(id) => return Ok(id),
                Err(f) => failure = f,
            }
        }
        let jwt_shaped = token.expose().split('.').count() == 3;
        let mut jwt_failure = None;
        for jwt in &self.jwts {
            match jwt.verify(token) {
                Ok(id) => return Ok(id),
                // "wrong algorithm" only says another verifier's key was
                // meant; keep the verifier's reason that did try.
                Err(f) if jwt_failure.is_none() || f != wrong_algorithm() => jwt_failure = Some(f),
                Err(_) => {}
            }
        }
        match jwt_failure {
            Some(f) if jwt_shaped || self.keys.is_none() => Err(f),
            _ => Err(failure),
        }
    }
}

fn wrong_algorithm() -> AuthFailure {
    failure(&ErrorKind::InvalidAlgorithm, false)
}

impl Authenticator for KeysOrJwt {
    fn authenticate(&self, req: &UpgradeRequest) -> AuthDecision {
        AuthDecision::from_result(self.source.extract(req).and_then(|t| self.verify(&t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::{json, Value};
    use wshub_core::auth::Rejection;
    use wshub_core::PeerInfo;

    const RSA_PRIVATE: &str = include_str!("../tests/fixtures/jwt-rs256-private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/fixtures/jwt-rs256-public.pem");
    const EC_PRIVATE: &str = include_str!("../tests/fixtures/jwt-es256-private.pem");
    const EC_PUBLIC: &str = include_str!("../tests/fixtures/jwt-es256-public.pem");
    const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(sub: &str) -> Value {
        json!({ "sub": sub, "exp": now() + 600 })
    }

    fn hs256(claims: &Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn req(target: &str, headers: &[(&str, &str)]) -> UpgradeRequest {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        UpgradeRequest::new(target, headers, PeerInfo::default())
    }

    fn secret_auth() -> JwtAuth {
        JwtAuth::hs256(&Secret::new(SECRET))
    }

    fn rejected(auth: &JwtAuth, token: &str) -> Rejection {
        match auth.authenticate(&req(&format!("/ws?token={token}"), &[])) {
            AuthDecision::Reject(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn reason(r: &Rejection) -> String {
        r.failure.to_string()
    }

    #[test]
    fn hs256_bearer_and_query_accepted_with_the_sub_as_user() {
        let auth = secret_auth();
        let token = hs256(&claims("alice"), SECRET.as_bytes());
        let bearer = format!("Bearer {token}");
        for r in [
            req("/ws", &[("Authorization", &bearer)]),
            req(&format!("/ws?token={token}"), &[]),
        ] {
            match auth.authenticate(&r) {
                AuthDecision::Accept(id) => assert_eq!(id.user_id, "alice"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Keycloak's shape: the user in `preferred_username`, the client in
    /// `azp`, roles in an array; every claim but `exp` reaches the identity.
    #[test]
    fn the_user_claim_and_required_claims_are_configurable() {
        let auth = secret_auth().user_claim("preferred_username").require(&[
            ("azp".into(), "web-app".into()),
            ("roles".into(), "chat".into()),
        ]);
        let keycloak = |azp: &str, roles: Value| {
            json!({ "sub": "f3a9-uuid", "preferred_username": "alice", "azp": azp,
                    "roles": roles, "exp": now() + 600 })
        };
        let token = hs256(
            &keycloak("web-app", json!(["chat", "admin"])),
            SECRET.as_bytes(),
        );
        let id = match auth.authenticate(&req(&format!("/ws?token={token}"), &[])) {
            AuthDecision::Accept(id) => id,
            other => panic!("refused: {other:?}"),
        };
        assert_eq!(id.user_id, "alice");
        assert_eq!(id.claims["azp"], "web-app");
        assert_eq!(id.claims["sub"], "f3a9-uuid");
        assert!(!id.claims.contains_key("exp"));
        for bad in [
            keycloak("other-app", json!(["chat"])),
            keycloak("web-app", json!(["admin"])),
            keycloak("web-app", json!("chatter")),
            json!({ "preferred_username": "alice", "exp": now() + 600 }),
        ] {
            let r = rejected(&auth, &hs256(&bad, SECRET.as_bytes()));
            assert_eq!(reason(&r), "jwt: a required claim does not match", "{bad}");
            assert!(!reason(&r).contains("other-app") && !reason(&r).contains("web-app"));
        }
        let no_user =
            json!({ "sub": "x", "azp": "web-app", "roles": ["chat"], "exp": now() + 600 });
        let r = rejected(&auth, &hs256(&no_user, SECRET.as_bytes()));
        assert_eq!(reason(&r), "jwt: no user claim");
        // With another user claim, `sub` is no longer required.
        let plain = secret_auth().user_claim("email");
        let token = hs256(
            &json!({ "email": "a@x", "exp": now() + 600 }),
            SECRET.as_bytes(),
        );
        assert!(matches!(
            plain.authenticate(&req(&format!("/ws?token={token}"), &[])),
            AuthDecision::Accept(id) if id.user_id == "a@x"
        ));
    }

    #[test]
    fn wrong_secret_is_a_401_bad_signature() {
        let token = hs256(&claims("alice"), b"another-secret-entirely-32-bytes!!");
        let r = rejected(&secret_auth(), &token);
        assert_eq!(r.status, 401);
        assert_eq!(reason(&r), "jwt: bad signature");
    }

    #[test]
    fn expired_is_refused_beyond_the_leeway() {
        let token = hs256(
            &json!({ "sub": "alice", "exp": now() - 3600 }),
            SECRET.as_bytes(),
        );
        let r = rejected(&secret_auth(), &token);
        assert_eq!((r.status, reason(&r).as_str()), (401, "jwt: expired"));
        // No exp at all is refused too: a token must not live forever.
        let token = hs256(&json!({ "sub": "alice" }), SECRET.as_bytes());
        assert_eq!(
            reason(&rejected(&secret_auth(), &token)),
            "jwt: no exp claim"
        );
    }

    #[test]
    fn missing_or_empty_sub_is_refused() {
        for c in [json!({ "exp": now() + 600 }), claims("")] {
            let token = hs256(&c, SECRET.as_bytes());
            let r = rejected(&secret_auth(), &token);
            assert_eq!((r.status, reason(&r).as_str()), (401, "jwt: no sub claim"));
        }
        // A sub that is not a string is malformed, not a user.
        let token = hs256(&json!({ "sub": 7, "exp": now() + 600 }), SECRET.as_bytes());
        assert_eq!(rejected(&secret_auth(), &token).status, 401);
    }

    #[test]
    fn an_audience_or_a_future_nbf_is_refused() {
        let c = json!({ "sub": "a", "exp": now() + 600, "aud": "elsewhere" });
        let token = hs256(&c, SECRET.as_bytes());
        assert_eq!(rejected(&secret_auth(), &token).status, 401);
        let c = json!({ "sub": "a", "exp": now() + 6000, "nbf": now() + 3000 });
        let token = hs256(&c, SECRET.as_bytes());
        assert_eq!(
            reason(&rejected(&secret_auth(), &token)),
            "jwt: not valid yet (nbf)"
        );
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// HS256 for audiences `aud` and issuers `iss`.
    fn scoped(aud: &[&str], iss: &[&str]) -> JwtAuth {
        secret_auth()
            .audiences(&strings(aud))
            .issuers(&strings(iss))
    }

    /// A token for `alice` with `extra` claims merged in.
    fn token_with(extra: Value) -> String {
        let mut c = claims("alice");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        hs256(&c, SECRET.as_bytes())
    }

    fn user_of(auth: &JwtAuth, token: &str) -> Result<String, String> {
        auth.verify(&Secret::new(token))
            .map(|id| id.user_id)
            .map_err(|f| f.to_string())
    }

    #[test]
    fn a_configured_audience_matches_a_string_or_an_array_member() {
        let auth = scoped(&["hub", "hub-staging"], &[]);
        for aud in [
            json!("hub"),
            json!("hub-staging"),
            json!(["other", "hub"]),
            json!(["hub-staging"]),
        ] {
            let token = token_with(json!({ "aud": aud }));
            assert_eq!(user_of(&auth, &token), Ok("alice".into()), "aud {aud}");
        }
    }

    #[test]
    fn a_wrong_or_missing_audience_is_refused_when_one_is_configured() {
        let auth = scoped(&["hub"], &[]);
        for aud in [
            json!("elsewhere"),
            json!(["a", "b"]),
            json!([]),
            json!("Hub"),
        ] {
            let token = token_with(json!({ "aud": aud }));
            let r = rejected(&auth, &token);
            assert_eq!(
                (r.status, reason(&r).as_str()),
                (401, "jwt: wrong audience"),
                "aud {aud}"
            );
        }
        // No aud, or one that is not a string or strings, is not "ours".
        for extra in [json!({}), json!({ "aud": null }), json!({ "aud": 7 })] {
            let token = token_with(extra.clone());
            let r = rejected(&auth, &token);
            assert_eq!(
                (r.status, reason(&r).as_str()),
                (401, "jwt: no audience (aud) claim"),
                "{extra}"
            );
        }
    }

    #[test]
    fn any_audience_is_refused_when_none_is_configured() {
        // Explicitly empty is the same as never set: today's behaviour.
        for auth in [secret_auth(), scoped(&[], &[])] {
            for aud in [
                json!("hub"),
                json!(["hub"]),
                json!([]),
                json!(7),
                json!(["a", 1]),
            ] {
                let token = token_with(json!({ "aud": aud }));
                let r = rejected(&auth, &token);
                assert_eq!(
                    (r.status, reason(&r).as_str()),
                    (401, "jwt: has an audience (aud) this hub does not accept"),
                    "aud {aud}"
                );
            }
            // No aud (or a null one) is fine.
            assert_eq!(user_of(&auth, &token_with(json!({}))), Ok("alice".into()));
            let token = token_with(json!({ "aud": null }));
            assert_eq!(user_of(&auth, &token), Ok("alice".into()));
        }
    }

    #[test]
    fn a_configured_issuer_must_be_there_and_match() {
        let auth = scoped(&[], &["https://idp.example", "backup-idp"]);
        for iss in ["https://idp.example", "backup-idp"] {
            let token = token_with(json!({ "iss": iss }));
            assert_eq!(user_of(&auth, &token), Ok("alice".into()), "iss {iss}");
        }
        // A mismatch, including an array holding a right one (iss is one
        // string in RFC 7519) and a case difference.
        for iss in [
            json!("https://evil.example"),
            json!("HTTPS://IDP.EXAMPLE"),
            json!(["https://evil.example", "https://idp.example"]),
        ] {
            let token = token_with(json!({ "iss": iss }));
            let r = rejected(&auth, &token);
            assert_eq!(
                (r.status, reason(&r).as_str()),
                (401, "jwt: wrong issuer"),
                "iss {iss}"
            );
        }
        for extra in [json!({}), json!({ "iss": 7 })] {
            let token = token_with(extra.clone());
            let r = rejected(&auth, &token);
            assert_eq!(
                (r.status, reason(&r).as_str()),
                (401, "jwt: no issuer (iss) claim"),
                "{extra}"
            );
        }
    }

    #[test]
    fn iss_is_ignored_when_no_issuer_is_configured() {
        for extra in [json!({ "iss": "anyone" }), json!({ "iss": 7 }), json!({})] {
            let token = token_with(extra.clone());
            assert_eq!(
                user_of(&secret_auth(), &token),
                Ok("alice".into()),
                "{extra}"
            );
        }
    }

    #[test]
    fn audience_and_issuer_together_and_refusals_never_quote_them() {
        let auth = scoped(&["hub"], &["idp"]);
        let token = token_with(json!({ "aud": "hub", "iss": "idp" }));
        assert_eq!(user_of(&auth, &token), Ok("alice".into()));
        for (extra, want) in [
            (
                json!({ "aud": "s3cr3t-aud", "iss": "idp" }),
                "jwt: wrong audience",
            ),
            (
                json!({ "aud": "hub", "iss": "s3cr3t-iss" }),
                "jwt: wrong issuer",
            ),
        ] {
            let r = rejected(&auth, &token_with(extra));
            let shown = reason(&r);
            assert_eq!(shown, want);
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
        // The expiry is still checked with an audience and issuer set.
        let c = json!({ "sub": "a", "exp": now() - 3600, "aud": "hub", "iss": "idp" });
        let r = rejected(&auth, &hs256(&c, SECRET.as_bytes()));
        assert_eq!(reason(&r), "jwt: expired");
        // The RS256 verifier takes the same settings.
        let rsa = JwtAuth::from_public_key_pem(RSA_PUBLIC.as_bytes())
            .unwrap()
            .audiences(&strings(&["hub"]))
            .issuers(&strings(&["idp"]));
        let rs = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let mut c = claims("bob");
        c["aud"] = json!("hub");
        c["iss"] = json!("idp");
        let token = encode(&Header::new(Algorithm::RS256), &c, &rs).unwrap();
        assert_eq!(user_of(&rsa, &token), Ok("bob".into()));
        c["aud"] = json!("elsewhere");
        let token = encode(&Header::new(Algorithm::RS256), &c, &rs).unwrap();
        assert_eq!(user_of(&rsa, &token), Err("jwt: wrong audience".into()));
    }

    #[test]
    fn rs256_and_es256_accepted_with_their_keys() {
        for (private, public, alg) in [
            (
                EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
                RSA_PUBLIC,
                Algorithm::RS256,
            ),
            (
                EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
                EC_PUBLIC,
                Algorithm::ES256,
            ),
        ] {
            let auth = JwtAuth::from_public_key_pem(public.as_bytes()).unwrap();
            assert_eq!(auth.algorithm(), alg);
            let token = encode(&Header::new(alg), &claims("bob"), &private).unwrap();
            match auth.verify(&Secret::new(token)) {
                Ok(id) => assert_eq!(id.user_id, "bob"),
                Err(e) => panic!("{alg:?}: {e}"),
            }
        }
    }

    #[test]
    fn an_hs256_token_is_refused_by_an_rs256_key() {
        let auth = JwtAuth::from_public_key_pem(RSA_PUBLIC.as_bytes()).unwrap();
        // Key confusion: HMAC keyed with the public key, which anyone has.
        let token = hs256(&claims("mallory"), RSA_PUBLIC.as_bytes());
        let r = rejected(&auth, &token);
        assert_eq!(
            (r.status, reason(&r).as_str()),
            (401, "jwt: wrong algorithm")
        );
        // An ES256 token is not an RS256 one either.
        let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::ES256), &claims("m"), &ec).unwrap();
        assert_eq!(reason(&rejected(&auth, &token)), "jwt: wrong algorithm");
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine;
        let b64 = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let unsigned = format!(
            "{}.{}.",
            b64(json!({ "alg": "none", "typ": "JWT" })),
            b64(claims("mallory"))
        );
        for auth in [
            secret_auth(),
            JwtAuth::from_public_key_pem(RSA_PUBLIC.as_bytes()).unwrap(),
        ] {
            assert_eq!(rejected(&auth, &unsigned).status, 401);
        }
        // Garbage is malformed, and the reason never quotes it.
        let r = rejected(&secret_auth(), "not-a-jwt-s3cr3t");
        assert_eq!(reason(&r), "jwt: malformed token");
    }

    #[test]
    fn unusable_key_files_are_refused_at_start() {
        for (pem, says) in [
            (RSA_PRIVATE, "private key"),
            (EC_PRIVATE, "private key"),
            ("hello", "is not a PEM"),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "",
            ),
        ] {
            let e = JwtAuth::from_public_key_pem(pem.as_bytes()).unwrap_err();
            assert!(e.0.contains(says), "{e}");
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let auth = secret_auth();
        let shown = format!("{auth:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("HS256"), "{shown}");
    }

    #[test]
    fn keys_or_jwt_accepts_either_and_says_why_not() {
        let keys = ApiKeyAuth::new([("k3y".to_owned(), "keyuser".to_owned())]);
        let rsa = JwtAuth::from_public_key_pem(RSA_PUBLIC.as_bytes()).unwrap();
        let both = KeysOrJwt::new(Some(keys), vec![secret_auth(), rsa]);
        let user = |t: &str| both.verify(&Secret::new(t)).map(|id| id.user_id);
        assert_eq!(user("k3y"), Ok("keyuser".into()));
        assert_eq!(
            user(&hs256(&claims("alice"), SECRET.as_bytes())),
            Ok("alice".into())
        );
        let rs = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::RS256), &claims("bob"), &rs).unwrap();
        assert_eq!(user(&token), Ok("bob".into()));
        // A wrong key is a wrong key; a bad JWT says what is wrong with it,
        // whichever verifier's algorithm it names.
        assert_eq!(user("nope"), Err(AuthFailure::InvalidCredentials));
        let expired = json!({ "sub": "a", "exp": now() - 3600 });
        let token = hs256(&expired, SECRET.as_bytes());
        assert_eq!(
            user(&token),
            Err(failure(&ErrorKind::ExpiredSignature, false))
        );
        let token = encode(&Header::new(Algorithm::RS256), &expired, &rs).unwrap();
        assert_eq!(
            user(&token),
            Err(failure(&ErrorKind::ExpiredSignature, false))
        );
    }
}
