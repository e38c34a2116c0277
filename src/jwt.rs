//! JWT authentication for `wshub serve`: `--jwt-secret` (HS256) and
//! `--jwt-public-key FILE` (RS256 or ES256).
//!
//! The token comes from `Authorization: Bearer` or `?token=` (as for API
//! keys); its `sub` claim becomes the user id. Each authenticator accepts the
//! one algorithm its key is for, never the token header's choice: an HS256
//! token checked against an RSA public key (the classic key-confusion attack)
//! or `alg: none` is refused. `exp` is required and checked with 60 s of
//! leeway for clock skew; `nbf` is checked when present; a token with an
//! `aud` claim is refused, since the hub has no audience of its own.
//!
//! Rejections are `401` with a fixed reason: never the token or any part of
//! its claims, since the reason ends up in logs.

use core::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
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

/// The claims the hub reads; the rest of the token is ignored.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
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
        }
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

    /// The algorithm accepted.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Checks one token: the identity named by its `sub`, or why not.
    pub fn verify(&self, token: &Secret) -> Result<Identity, AuthFailure> {
        let data = jsonwebtoken::decode::<Claims>(token.expose(), &self.key, &self.validation)
            .map_err(|e| failure(e.kind()))?;
        match data.claims.sub {
            Some(sub) if !sub.is_empty() => Ok(Identity::user(sub)),
            _ => Err(AuthFailure::Other("jwt: no sub claim".into())),
        }
    }
}

/// A fixed reason per failure. jsonwebtoken's own messages can quote parts of
/// the claims (JSON errors do), so none of them is passed on.
fn failure(kind: &ErrorKind) -> AuthFailure {
    let reason = match kind {
        ErrorKind::InvalidSignature => "jwt: bad signature",
        ErrorKind::ExpiredSignature => "jwt: expired",
        ErrorKind::ImmatureSignature => "jwt: not valid yet (nbf)",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "jwt: wrong algorithm",
        ErrorKind::MissingRequiredClaim(c) if c == "sub" => "jwt: no sub claim",
        ErrorKind::MissingRequiredClaim(_) => "jwt: no exp claim",
        ErrorKind::InvalidAudience => "jwt: has an audience (aud) this hub does not accept",
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
            .field("source", &self.source)
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
    failure(&ErrorKind::InvalidAlgorithm)
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
        assert_eq!(user(&token), Err(failure(&ErrorKind::ExpiredSignature)));
        let token = encode(&Header::new(Algorithm::RS256), &expired, &rs).unwrap();
        assert_eq!(user(&token), Err(failure(&ErrorKind::ExpiredSignature)));
    }
}
