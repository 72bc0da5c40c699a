//! Token checking: user tokens open streams and sessions, publisher tokens
//! publish, and neither passes for the other.
//!
//! Keys come from the settings ([`keys`]: an HS256 secret or a PEM public
//! key) or from an identity provider's JWK set ([`jwks`]: the header's
//! `kid` picks the key). Either way the key alone fixes the algorithm.
//! Verification happens in the HTTP handler, before any actor is touched, so
//! a flood of bad tokens costs a signature check each and nothing more.

mod claims;
pub mod jwks;
pub mod keys;
mod publisher_cache;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use self::claims::Claims;
use self::jwks::Jwks;
use self::keys::VerifyKey;
use self::publisher_cache::PublisherCache;
use crate::config::{ConfigError, ServeConfig};
use crate::user_id::{InvalidUserId, UserId};

/// The scope a publisher token must hold.
pub const PUBLISH_SCOPE: &str = "notifications:publish";

/// Longest token accepted; real ones are a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Checks tokens against the configured keys, issuer and audience.
pub struct Authenticator {
    /// Keys for user tokens (and publisher tokens when `publisher` is unset).
    users: Keys,
    /// Keys for publisher tokens only, when configured.
    publishers: Option<Keys>,
    /// One validation per algorithm a key can fix.
    validations: HashMap<Algorithm, Validation>,
    /// The claim holding the user id.
    user_claim: String,
    leeway: u64,
    /// Publisher tokens verified recently.
    verified_publishers: PublisherCache,
}

/// Where the keys for one kind of token come from.
enum Keys {
    Static(Arc<VerifyKey>),
    Jwks(Arc<Jwks>),
}

/// A browser's credential, checked.
#[derive(Debug, Clone)]
pub struct UserToken {
    /// Whose notifications this token may read.
    pub user: UserId,
    /// `exp`, unix seconds: the stream ends then.
    pub expires_at: u64,
}

/// A producer's credential, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// The token's `sub`: what publisher-scoped state (idempotency keys) is keyed by.
    pub name: String,
    /// `exp`, unix seconds.
    pub expires_at: u64,
}

/// Why a token was refused. The `reason` label of `notify_auth_failures_total`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token given")]
    Missing,
    #[error("token is malformed")]
    Malformed,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm is not accepted")]
    WrongAlgorithm,
    #[error("token issuer or audience is not accepted")]
    WrongIssuerOrAudience,
    #[error("token lacks a required claim: {0}")]
    MissingClaim(String),
    #[error("token subject is not a valid user id: {0}")]
    InvalidSubject(#[from] InvalidUserId),
    #[error("token claim {0} is neither a string nor an integer")]
    UserClaimType(String),
    #[error("token subject is not a valid publisher name")]
    InvalidPublisher,
    #[error("token lacks the {PUBLISH_SCOPE} scope")]
    MissingScope,
    #[error("a publisher token cannot open a stream or a session")]
    PublisherToken,
    #[error("token header has no kid")]
    MissingKeyId,
    #[error("token kid is not in the identity provider's key set")]
    UnknownKeyId,
    #[error("the identity provider's keys are not loaded yet")]
    KeysUnavailable,
}

impl AuthError {
    /// Every reason, so that the metric can start at zero for each.
    pub const REASONS: &'static [&'static str] = &[
        "missing",
        "malformed",
        "expired",
        "not_yet_valid",
        "bad_signature",
        "wrong_algorithm",
        "wrong_issuer_or_audience",
        "missing_claim",
        "invalid_subject",
        "missing_scope",
        "publisher_token",
        "missing_kid",
        "unknown_kid",
        "keys_unavailable",
    ];

    /// A short label for metrics and logs (never the token itself).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::WrongIssuerOrAudience => "wrong_issuer_or_audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidSubject(_) | Self::UserClaimType(_) | Self::InvalidPublisher => {
                "invalid_subject"
            }
            Self::MissingScope => "missing_scope",
            Self::PublisherToken => "publisher_token",
            Self::MissingKeyId => "missing_kid",
            Self::UnknownKeyId => "unknown_kid",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

impl Authenticator {
    /// Builds the checker from `serve` settings; a JWK set is not fetched
    /// until [`Authenticator::start`].
    pub fn from_config(config: &ServeConfig) -> Result<Self, ConfigError> {
        let users = match (
            &config.jwt_jwks_url,
            &config.jwt_public_key_file,
            &config.jwt_secret,
        ) {
            (Some(url), _, _) => Keys::Jwks(Arc::new(Jwks::new(url, config.jwt_jwks_refresh)?)),
            (None, Some(path), _) => Keys::Static(Arc::new(VerifyKey::pem_file(
                "NOTIFY_JWT_PUBLIC_KEY_FILE",
                path,
            )?)),
            (None, None, Some(secret)) => Keys::Static(Arc::new(VerifyKey::secret(secret))),
            (None, None, None) => return Err(ConfigError::new("NOTIFY_JWT_SECRET", "required")),
        };
        let publishers = match (
            &config.publisher_jwt_public_key_file,
            &config.publisher_jwt_secret,
        ) {
            (Some(path), _) => Some(VerifyKey::pem_file(
                "NOTIFY_PUBLISHER_JWT_PUBLIC_KEY_FILE",
                path,
            )?),
            (None, Some(secret)) => Some(VerifyKey::secret(secret)),
            (None, None) => None,
        }
        .map(|key| Keys::Static(Arc::new(key)));
        let validations = [
            Algorithm::HS256,
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ]
        .into_iter()
        .map(|alg| (alg, validation(config, alg)))
        .collect();
        Ok(Self {
            users,
            publishers,
            validations,
            user_claim: config.jwt_user_claim.clone(),
            leeway: config.jwt_leeway.as_secs(),
            verified_publishers: PublisherCache::default(),
        })
    }

    /// Builds the checker and, with a JWK set, makes the first fetch and
    /// starts refreshing it in the background (needs a Tokio runtime).
    pub async fn start(config: &ServeConfig) -> Result<Self, ConfigError> {
        let auth = Self::from_config(config)?;
        if let Keys::Jwks(jwks) = &auth.users {
            jwks.start().await?;
        }
        Ok(auth)
    }

    /// Whether user tokens can be checked: false until a JWK set, when one
    /// is configured, has been loaded once.
    pub fn is_ready(&self) -> bool {
        match &self.users {
            Keys::Static(_) => true,
            Keys::Jwks(jwks) => jwks.is_loaded(),
        }
    }

    /// Checks a browser's token: a user key signed it, the configured user
    /// claim is a valid user id, and it is not a publisher token.
    pub async fn user(&self, token: &str) -> Result<UserToken, AuthError> {
        let claims = self.decode(token, &self.users).await?;
        if claims.may_publish() {
            return Err(AuthError::PublisherToken);
        }
        Ok(UserToken {
            user: claims.user(&self.user_claim)?,
            expires_at: claims.expires_at()?,
        })
    }

    /// Checks a producer's token: a publisher key signed it (a user key when
    /// no publisher key is configured), its `scope` holds [`PUBLISH_SCOPE`],
    /// and its `sub` names the publisher.
    /// A token verified within the last minute is not verified again until
    /// it expires ([`publisher_cache`]).
    pub async fn publisher(&self, token: &str) -> Result<Publisher, AuthError> {
        if let Some(publisher) = self.verified_publishers.get(token, now_unix(), self.leeway) {
            return Ok(publisher);
        }
        let keys = self.publishers.as_ref().unwrap_or(&self.users);
        let claims = self.decode(token, keys).await?;
        if !claims.may_publish() {
            return Err(AuthError::MissingScope);
        }
        let publisher = Publisher {
            name: claims.publisher()?,
            expires_at: claims.expires_at()?,
        };
        self.verified_publishers.insert(token, &publisher);
        Ok(publisher)
    }

    async fn decode(&self, token: &str, keys: &Keys) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let key = match keys {
            Keys::Static(key) => key.clone(),
            Keys::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token).map_err(refusal)?;
                let kid = header.kid.ok_or(AuthError::MissingKeyId)?;
                jwks.key(&kid).await?
            }
        };
        let validation = self
            .validations
            .get(&key.algorithm)
            .ok_or(AuthError::WrongAlgorithm)?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map(|data| Claims(data.claims))
            .map_err(refusal)?;
        // RFC 7519: the current time must be *before* exp. jsonwebtoken
        // accepts the whole second of exp itself.
        if expired(claims.expires_at()?, self.leeway, now_unix()) {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

/// The checks for tokens signed with `algorithm`: only it, `exp` always,
/// `nbf` when present, `iss` and `aud` when configured.
fn validation(config: &ServeConfig, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = config.jwt_leeway.as_secs();
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    match &config.jwt_issuer {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &config.jwt_audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// The reason for a jsonwebtoken refusal.
fn refusal(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.into_kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidKeyFormat => AuthError::WrongAlgorithm,
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => AuthError::WrongIssuerOrAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
        _ => AuthError::Malformed,
    }
}

/// Whether a token with `exp` = `expires_at` is expired at unix second
/// `now`, allowing `leeway` seconds (RFC 7519: the current time must be
/// before exp).
fn expired(expires_at: u64, leeway: u64, now: u64) -> bool {
    expires_at.saturating_add(leeway) <= now
}

/// Seconds since the Unix epoch by this node's clock.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        config: ServeConfig,
    }

    fn config(extra: &[&str]) -> ServeConfig {
        let mut args = vec![
            "x",
            "--jwt-secret",
            "unit-test-secret-0123456789",
            "--jwt-leeway",
            "0s",
        ];
        args.extend_from_slice(extra);
        Wrapper::parse_from(args).config
    }

    fn token(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(b"unit-test-secret-0123456789");
        encode(&Header::default(), &claims, &key).unwrap()
    }

    fn in_an_hour() -> u64 {
        now_unix() + 3600
    }

    #[tokio::test]
    async fn accepts_a_valid_user_token() {
        let auth = Authenticator::from_config(&config(&[])).unwrap();
        let got = auth
            .user(&token(json!({"sub":"u1","exp":in_an_hour()})))
            .await
            .unwrap();
        assert_eq!(got.user.as_str(), "u1");
    }

    #[tokio::test]
    async fn refuses_bad_tokens_with_a_reason() {
        let auth = Authenticator::from_config(&config(&["--jwt-issuer", "campusbite"])).unwrap();
        let cases = [
            (String::new(), "missing"),
            ("abc".into(), "malformed"),
            (
                token(json!({"sub":"u1","exp":now_unix()-10,"iss":"campusbite"})),
                "expired",
            ),
            (
                token(json!({"sub":"u1","exp":in_an_hour(),"iss":"other"})),
                "wrong_issuer_or_audience",
            ),
            (
                token(json!({"sub":"u1","exp":in_an_hour()})),
                "missing_claim",
            ),
            (
                token(json!({"sub":"a.b","exp":in_an_hour(),"iss":"campusbite"})),
                "invalid_subject",
            ),
            (
                token(json!({"exp":in_an_hour(),"iss":"campusbite"})),
                "missing_claim",
            ),
            (
                token(json!({"sub":"u1","exp":in_an_hour(),"nbf":in_an_hour(),"iss":"campusbite"})),
                "not_yet_valid",
            ),
        ];
        for (tok, reason) in cases {
            assert_eq!(auth.user(&tok).await.unwrap_err().reason(), reason, "{tok}");
        }
        let mut forged = token(json!({"sub":"u1","exp":in_an_hour(),"iss":"campusbite"}));
        forged.push('x');
        assert_eq!(
            auth.user(&forged).await.unwrap_err().reason(),
            "bad_signature"
        );
    }

    #[tokio::test]
    async fn publisher_needs_the_scope_and_names_itself() {
        let auth = Authenticator::from_config(&config(&[])).unwrap();
        let ok =
            token(json!({"sub":"orders","exp":in_an_hour(),"scope":"a notifications:publish"}));
        assert_eq!(auth.publisher(&ok).await.unwrap().name, "orders");
        let no = token(json!({"sub":"orders","exp":in_an_hour(),"scope":"notifications:read"}));
        assert_eq!(
            auth.publisher(&no).await.unwrap_err().reason(),
            "missing_scope"
        );
        let anonymous = token(json!({"exp":in_an_hour(),"scope":PUBLISH_SCOPE}));
        assert_eq!(
            auth.publisher(&anonymous).await.unwrap_err().reason(),
            "missing_claim"
        );
    }

    #[tokio::test]
    async fn a_publisher_token_opens_no_stream() {
        let auth = Authenticator::from_config(&config(&[])).unwrap();
        let publisher = token(json!({"sub":"orders","exp":in_an_hour(),"scope":PUBLISH_SCOPE}));
        assert_eq!(
            auth.user(&publisher).await.unwrap_err().reason(),
            "publisher_token"
        );
    }

    #[tokio::test]
    async fn a_publisher_key_verifies_publisher_tokens_only() {
        let publisher_secret = "unit-test-publisher-secret-0123";
        let auth =
            Authenticator::from_config(&config(&["--publisher-jwt-secret", publisher_secret]))
                .unwrap();
        let claims = json!({"sub":"orders","exp":in_an_hour(),"scope":PUBLISH_SCOPE});
        let by_user_key = token(claims.clone());
        let by_publisher_key = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(publisher_secret.as_bytes()),
        )
        .unwrap();
        assert!(auth.publisher(&by_publisher_key).await.is_ok());
        assert_eq!(
            auth.publisher(&by_user_key).await.unwrap_err().reason(),
            "bad_signature"
        );
        let user = encode(
            &Header::default(),
            &json!({"sub":"u1","exp":in_an_hour()}),
            &EncodingKey::from_secret(publisher_secret.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            auth.user(&user).await.unwrap_err().reason(),
            "bad_signature"
        );
    }

    #[tokio::test]
    async fn the_user_id_comes_from_the_configured_claim() {
        let auth = Authenticator::from_config(&config(&["--jwt-user-claim", "uid"])).unwrap();
        let got = auth
            .user(&token(
                json!({"sub":"ignored","uid":1234,"exp":in_an_hour()}),
            ))
            .await
            .unwrap();
        assert_eq!(got.user.as_str(), "1234");
        let missing = token(json!({"sub":"u1","exp":in_an_hour()}));
        assert_eq!(
            auth.user(&missing).await.unwrap_err().reason(),
            "missing_claim"
        );
    }

    #[test]
    fn every_reason_is_listed() {
        let all = [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::BadSignature,
            AuthError::WrongAlgorithm,
            AuthError::WrongIssuerOrAudience,
            AuthError::MissingClaim("x".into()),
            AuthError::InvalidSubject(InvalidUserId::Empty),
            AuthError::UserClaimType("x".into()),
            AuthError::InvalidPublisher,
            AuthError::MissingScope,
            AuthError::PublisherToken,
            AuthError::MissingKeyId,
            AuthError::UnknownKeyId,
            AuthError::KeysUnavailable,
        ];
        for e in all {
            assert!(AuthError::REASONS.contains(&e.reason()), "{e:?}");
        }
    }
}
