//! JSON type checks that keep nothing: a field deserialized as [`AString`]
//! or [`AnObject`] must have that type, and nothing is copied out of the
//! request to learn it (a `String` or a `Map` would allocate for every
//! key and value of a notification that is forwarded untouched anyway).
//! Their errors read like those of `String` and `serde_json::Map`.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// Any JSON string.
pub(super) struct AString;

/// Any JSON object.
pub(super) struct AnObject;

impl<'de> Deserialize<'de> for AString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Checker;
        impl Visitor<'_> for Checker {
            type Value = AString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AString, E> {
                Ok(AString)
            }
        }
        deserializer.deserialize_str(Checker)
    }
}

impl<'de> Deserialize<'de> for AnObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Checker;
        impl<'de> Visitor<'de> for Checker {
            type Value = AnObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<AnObject, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnObject)
            }
        }
        deserializer.deserialize_map(Checker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    /// Accepts what `String` and `Map` accept, with their error messages.
    #[test]
    fn the_checks_accept_and_refuse_what_string_and_map_do_with_the_same_errors() {
        let cases = [
            r#""plain""#,
            r#""esc\"aped \u00e9""#,
            "null",
            "1",
            "[1]",
            r#"{"a":1,"b":{"c":[null]}}"#,
            "{}",
            r#"{"a":}"#,
            r#""unterminated"#,
        ];
        for case in cases {
            let ours = serde_json::from_str::<AString>(case)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<String>(case)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "string check of {case}");
            let ours = serde_json::from_str::<AnObject>(case)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<Map<String, Value>>(case)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "object check of {case}");
        }
    }
}
