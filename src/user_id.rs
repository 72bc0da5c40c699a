//! User ids, parsed once at the edge.
//!
//! A user id becomes a NATS subject token (`<prefix>.user.<id>`), so any id
//! that could widen a subscription (`*`, `>`), split into two tokens (`.`),
//! or break the protocol line (white space, control characters) must never
//! get past this type. See docs/protocol.md §2.2 "User ids".

use std::fmt;
use std::sync::Arc;

/// Longest accepted user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;

/// A validated user id. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

/// Why a string is not a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    #[error("user id is empty")]
    Empty,
    #[error("user id is longer than {MAX_USER_ID_BYTES} bytes")]
    TooLong,
    #[error("user id contains '.', '*' or '>'")]
    SubjectWildcard,
    #[error("user id contains white space or a control character")]
    WhitespaceOrControl,
    #[error("user id starts with '$'")]
    LeadingDollar,
}

/// Lets maps keyed by user id be searched with a `&str` (the derived `Hash`
/// and `Eq` are those of the text).
impl std::borrow::Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl UserId {
    /// Parses `raw` as a user id, refusing anything that is not one subject token.
    pub fn parse(raw: &str) -> Result<Self, InvalidUserId> {
        if raw.is_empty() {
            return Err(InvalidUserId::Empty);
        }
        if raw.len() > MAX_USER_ID_BYTES {
            return Err(InvalidUserId::TooLong);
        }
        if raw.starts_with('$') {
            return Err(InvalidUserId::LeadingDollar);
        }
        for c in raw.chars() {
            match c {
                '.' | '*' | '>' => return Err(InvalidUserId::SubjectWildcard),
                c if c.is_whitespace() || c.is_control() => {
                    return Err(InvalidUserId::WhitespaceOrControl)
                }
                _ => {}
            }
        }
        Ok(Self(Arc::from(raw)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["507f1f77bcf86cd799439011", "u1", "ü-ok", "a$b", "user_42-x"] {
            assert_eq!(UserId::parse(ok).unwrap().as_str(), ok);
        }
        assert!(UserId::parse(&"a".repeat(256)).is_ok());
    }

    #[test]
    fn refuses_ids_that_are_not_one_subject_token() {
        use InvalidUserId::*;
        let cases: &[(&str, InvalidUserId)] = &[
            ("", Empty),
            ("a.b", SubjectWildcard),
            ("*", SubjectWildcard),
            (">", SubjectWildcard),
            ("a b", WhitespaceOrControl),
            ("a\tb", WhitespaceOrControl),
            ("a\r\nb", WhitespaceOrControl),
            ("a\0b", WhitespaceOrControl),
            ("a\u{7f}b", WhitespaceOrControl),
            ("a\u{a0}b", WhitespaceOrControl),
            ("$SYS", LeadingDollar),
        ];
        for (raw, why) in cases {
            assert_eq!(UserId::parse(raw), Err(*why), "{raw:?}");
        }
        assert_eq!(UserId::parse(&"a".repeat(257)), Err(TooLong));
    }
}
