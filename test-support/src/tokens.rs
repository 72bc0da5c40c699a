//! Minting JWTs the way an identity service or a producer would.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::{now_secs, PUBLISH_SCOPE};

/// Signs `claims` with HS256 and `secret`.
pub fn sign_hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign token")
}

/// A user token for `sub` signed with `secret`, valid for an hour.
pub fn user_token(secret: &str, sub: &str) -> String {
    sign_hs256(secret, &json!({"sub": sub, "exp": now_secs() + 3600}))
}

/// A publisher token signed with `secret`, valid for an hour.
pub fn publisher_token(secret: &str) -> String {
    sign_hs256(
        secret,
        &json!({"sub": "order-service", "exp": now_secs() + 3600, "scope": PUBLISH_SCOPE}),
    )
}
