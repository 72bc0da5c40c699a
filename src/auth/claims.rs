//! What a verified token says: whose stream it opens, or which publisher it is.

use serde_json::{Map, Value};

use super::{AuthError, PUBLISH_SCOPE};
use crate::user_id::UserId;

/// Longest publisher name (`sub` of a publisher token), in bytes.
const MAX_PUBLISHER_BYTES: usize = 256;

/// The claims of a token whose signature and time claims have been checked.
pub(super) struct Claims(pub(super) Map<String, Value>);

impl Claims {
    /// `exp`, unix seconds (the verifier has required it).
    pub(super) fn expires_at(&self) -> Result<u64, AuthError> {
        self.0
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| AuthError::MissingClaim("exp".into()))
    }

    /// Whether `scope` (a space-separated string, or a list as some identity
    /// providers send it) holds [`PUBLISH_SCOPE`].
    pub(super) fn may_publish(&self) -> bool {
        match self.0.get("scope") {
            Some(Value::String(list)) => list.split_whitespace().any(|s| s == PUBLISH_SCOPE),
            Some(Value::Array(list)) => list.iter().any(|s| s.as_str() == Some(PUBLISH_SCOPE)),
            _ => false,
        }
    }

    /// The user id in `claim`: a string, or an integer taken in decimal.
    pub(super) fn user(&self, claim: &str) -> Result<UserId, AuthError> {
        match self.0.get(claim) {
            None | Some(Value::Null) => Err(AuthError::MissingClaim(claim.to_owned())),
            Some(Value::String(id)) => Ok(UserId::parse(id)?),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                Ok(UserId::parse(&n.to_string())?)
            }
            Some(_) => Err(AuthError::UserClaimType(claim.to_owned())),
        }
    }

    /// The publisher's name: its `sub`, a short printable string.
    pub(super) fn publisher(&self) -> Result<String, AuthError> {
        match self.0.get("sub") {
            None | Some(Value::Null) => Err(AuthError::MissingClaim("sub".into())),
            Some(Value::String(name))
                if !name.is_empty()
                    && name.len() <= MAX_PUBLISHER_BYTES
                    && !name.chars().any(char::is_control) =>
            {
                Ok(name.clone())
            }
            Some(_) => Err(AuthError::InvalidPublisher),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        Claims(v.as_object().unwrap().clone())
    }

    #[test]
    fn a_user_id_is_a_string_or_an_integer_in_decimal() {
        let c = claims(json!({"sub": "u1", "uid": 42, "neg": -7, "f": 1.5, "o": {"a": 1}}));
        assert_eq!(c.user("sub").unwrap().as_str(), "u1");
        assert_eq!(c.user("uid").unwrap().as_str(), "42");
        assert_eq!(c.user("neg").unwrap().as_str(), "-7");
        assert_eq!(c.user("f").unwrap_err().reason(), "invalid_subject");
        assert_eq!(c.user("o").unwrap_err().reason(), "invalid_subject");
        assert_eq!(c.user("none").unwrap_err().reason(), "missing_claim");
    }

    #[test]
    fn the_publish_scope_is_a_whole_word_of_a_string_or_an_element_of_a_list() {
        assert!(claims(json!({"scope": "a notifications:publish"})).may_publish());
        assert!(claims(json!({"scope": ["a", "notifications:publish"]})).may_publish());
        assert!(!claims(json!({"scope": "notifications:publisher"})).may_publish());
        assert!(!claims(json!({"scope": ["notifications:publish b"]})).may_publish());
        assert!(!claims(json!({})).may_publish());
    }

    #[test]
    fn a_publisher_needs_a_printable_sub() {
        assert_eq!(
            claims(json!({"sub": "orders"})).publisher().unwrap(),
            "orders"
        );
        for bad in [json!(""), json!(3), json!("a\nb"), json!("x".repeat(257))] {
            assert_eq!(
                claims(json!({ "sub": bad }))
                    .publisher()
                    .unwrap_err()
                    .reason(),
                "invalid_subject"
            );
        }
        assert_eq!(
            claims(json!({})).publisher().unwrap_err().reason(),
            "missing_claim"
        );
    }
}
