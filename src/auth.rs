//! Token checking: one algorithm family, pinned by configuration.
//!
//! Verification happens in the HTTP handler, before any actor is touched, so
//! a flood of bad tokens costs a signature check each and nothing more.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{ConfigError, ServeConfig};
use crate::user_id::{InvalidUserId, UserId};

/// The scope a publisher token must hold.
pub const PUBLISH_SCOPE: &str = "notifications:publish";

/// Longest token accepted; real ones are a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Checks tokens against the configured key, algorithm, issuer and audience.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    leeway: u64,
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
#[derive(Debug, Clone)]
pub struct Publisher {
    /// The token's `sub`: whose Idempotency-Keys these are.
    pub name: String,
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
    #[error("token lacks the {PUBLISH_SCOPE} scope")]
    MissingScope,
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
            Self::InvalidSubject(_) => "invalid_subject",
            Self::MissingScope => "missing_scope",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: u64,
    #[serde(default)]
    scope: Option<String>,
}

impl Authenticator {
    /// Builds the checker from `serve` settings.
    pub fn from_config(config: &ServeConfig) -> Result<Self, ConfigError> {
        let (key, algorithm) = match (&config.jwt_public_key_file, &config.jwt_secret) {
            (Some(path), _) => public_key(path)?,
            (None, Some(secret)) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, None) => return Err(ConfigError::new("NOTIFY_JWT_SECRET", "required")),
        };
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
        Ok(Self {
            key,
            validation,
            leeway: config.jwt_leeway.as_secs(),
        })
    }

    /// Checks a browser's token; its `sub` must be a valid user id.
    pub fn user(&self, token: &str) -> Result<UserToken, AuthError> {
        let claims = self.decode(token)?;
        let sub = claims
            .sub
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        Ok(UserToken {
            user: UserId::parse(&sub)?,
            expires_at: claims.exp,
        })
    }

    /// Checks a producer's token; its `scope` must hold [`PUBLISH_SCOPE`]
    /// and its `sub` names the publisher.
    pub fn publisher(&self, token: &str) -> Result<Publisher, AuthError> {
        let claims = self.decode(token)?;
        let allowed = claims
            .scope
            .as_deref()
            .is_some_and(|s| s.split_whitespace().any(|s| s == PUBLISH_SCOPE));
        if !allowed {
            return Err(AuthError::MissingScope);
        }
        let name = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        Ok(Publisher { name })
    }

    fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.into_kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::UnsupportedAlgorithm
                | ErrorKind::InvalidKeyFormat => AuthError::WrongAlgorithm,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    AuthError::WrongIssuerOrAudience
                }
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
                _ => AuthError::Malformed,
            })?;
        // RFC 7519: the current time must be *before* exp. jsonwebtoken
        // accepts the whole second of exp itself.
        if claims.exp.saturating_add(self.leeway) <= now_unix() {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

fn public_key(path: &std::path::Path) -> Result<(DecodingKey, Algorithm), ConfigError> {
    const NAME: &str = "NOTIFY_JWT_PUBLIC_KEY_FILE";
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::new(NAME, format!("cannot read {}: {e}", path.display())))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(ConfigError::new(
        NAME,
        "not a PEM RSA or EC (P-256) public key",
    ))
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

    #[test]
    fn accepts_a_valid_user_token() {
        let auth = Authenticator::from_config(&config(&[])).unwrap();
        let got = auth
            .user(&token(json!({"sub":"u1","exp":in_an_hour()})))
            .unwrap();
        assert_eq!(got.user.as_str(), "u1");
    }

    #[test]
    fn refuses_bad_tokens_with_a_reason() {
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
            assert_eq!(auth.user(&tok).unwrap_err().reason(), reason, "{tok}");
        }
        let mut forged = token(json!({"sub":"u1","exp":in_an_hour(),"iss":"campusbite"}));
        forged.push('x');
        assert_eq!(auth.user(&forged).unwrap_err().reason(), "bad_signature");
    }

    #[test]
    fn publisher_needs_the_scope() {
        let auth = Authenticator::from_config(&config(&[])).unwrap();
        let ok =
            token(json!({"sub":"orders","exp":in_an_hour(),"scope":"a notifications:publish"}));
        assert!(auth.publisher(&ok).is_ok());
        let no = token(json!({"sub":"orders","exp":in_an_hour(),"scope":"notifications:read"}));
        assert_eq!(auth.publisher(&no).unwrap_err().reason(), "missing_scope");
    }
}
