//! What flows from the bus to the browsers: event ids, notification payloads
//! and the one-per-notification encoded SSE frame.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

/// The sequence number of one notification. It increases with every
/// notification of a user, cluster-wide (the JetStream stream sequence, or the
/// embedded bus' node sequence); it is the SSE `id:`.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct EventId(pub u64);

/// A `Last-Event-ID` / `lastEventId` that is not a decimal sequence number.
#[derive(Debug, thiserror::Error)]
#[error("last event id must be a decimal number")]
pub struct InvalidEventId;

impl EventId {
    /// Parses the decimal form that the server itself sends as `id:`.
    pub fn parse(raw: &str) -> Result<Self, InvalidEventId> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidEventId);
        }
        raw.parse().map(EventId).map_err(|_| InvalidEventId)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A notification as JSON text on one line, ready to follow `data: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload(Bytes);

/// Deepest nesting of arrays and objects accepted in a notification: the
/// same line as serde_json's own recursion limit (it parses 127 levels, not
/// 128). Deeper JSON would reach every subscriber's parser.
pub const MAX_JSON_DEPTH: usize = 127;

/// A notification body that is not acceptable JSON.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPayload {
    #[error("notification is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("notification nests arrays/objects deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
}

impl Payload {
    /// Validates `raw` as one JSON value. The text is kept exactly as sent,
    /// except that raw CR/LF (only legal as white space between JSON tokens)
    /// become spaces, so the payload always fits on one `data:` line and can
    /// never inject SSE fields.
    pub fn from_json(raw: &[u8]) -> Result<Self, InvalidPayload> {
        let value: &RawValue = serde_json::from_slice(raw)?;
        Self::from_raw(value)
    }

    /// Wraps an already-parsed JSON value (see [`Payload::from_json`]).
    pub fn from_raw(value: &RawValue) -> Result<Self, InvalidPayload> {
        let text = value.get();
        let found = scan(text.as_bytes());
        if found.deepest > MAX_JSON_DEPTH {
            return Err(InvalidPayload::TooDeep);
        }
        Ok(if found.line_break {
            let one_line: String = text
                .chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
                .collect();
            Self(Bytes::from(one_line))
        } else {
            Self(Bytes::copy_from_slice(text.as_bytes()))
        })
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text, shared.
    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }
}

/// What one pass over valid JSON text finds: the deepest nesting of
/// `[`/`{` (serde_json does not limit depth when it skips a value it keeps
/// raw) and whether raw CR/LF occur (only between tokens: inside a string
/// they are invalid). Allocates nothing.
struct Scan {
    deepest: usize,
    line_break: bool,
}

fn scan(json: &[u8]) -> Scan {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut found = Scan {
        deepest: 0,
        line_break: false,
    };
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                found.deepest = found.deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' | b'\r' => found.line_break = true,
            _ => {}
        }
    }
    found
}

/// One stored notification, as the bus hands it to a user's actor.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its sequence number.
    pub id: EventId,
    /// The id of this user's previous notification, when the bus knows it;
    /// lets the actor see a gap in the live feed and repair it from history.
    pub previous: Option<EventId>,
    /// `id: …\ndata: …\n\n`, encoded once and shared by every stream.
    pub frame: Bytes,
    /// When this node received it (the start of the delivery-latency clock).
    pub received_at: Instant,
}

impl Event {
    /// Notification `id` with its encoded frame (built by
    /// [`crate::sse::event`]), received now.
    pub fn with_frame(id: EventId, previous: Option<EventId>, frame: Bytes) -> Self {
        Self {
            id,
            previous,
            frame,
            received_at: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_plain_decimal_numbers() {
        assert_eq!(EventId::parse("42").unwrap(), EventId(42));
        assert_eq!(
            EventId::parse("18446744073709551615").unwrap(),
            EventId(u64::MAX)
        );
        for bad in [
            "",
            "-1",
            "1e3",
            "0x10",
            "abc",
            "18446744073709551616",
            "1 2",
        ] {
            assert!(EventId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn payload_keeps_compact_json_byte_for_byte() {
        let raw = r#"{"type":"order_update","message":"line1\nline2 data: x","otp":"123456"}"#;
        assert_eq!(
            Payload::from_json(raw.as_bytes()).unwrap().as_bytes(),
            raw.as_bytes()
        );
    }

    #[test]
    fn payload_puts_pretty_json_on_one_line() {
        let raw = "{\r\n  \"type\": \"x\",\n  \"data\": {\"a\": [1,\n2]}\n}";
        let payload = Payload::from_json(raw.as_bytes()).unwrap();
        assert!(!payload.as_bytes().contains(&b'\n') && !payload.as_bytes().contains(&b'\r'));
        let a: serde_json::Value = serde_json::from_slice(payload.as_bytes()).unwrap();
        let b: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn payload_refuses_json_nested_deeper_than_the_limit() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(Payload::from_json(
            format!(r#"{{"a":{}}}"#, nested(MAX_JSON_DEPTH - 1)).as_bytes()
        )
        .is_ok());
        assert!(matches!(
            Payload::from_json(format!(r#"{{"a":{}}}"#, nested(MAX_JSON_DEPTH)).as_bytes()),
            Err(InvalidPayload::TooDeep)
        ));
        // Brackets inside strings do not count.
        let text = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(Payload::from_json(text.as_bytes()).is_ok());
    }

    #[test]
    fn payload_refuses_what_is_not_json() {
        for bad in [&b"{"[..], b"", b"{\"a\":1} x", b"\xff\xfe"] {
            assert!(Payload::from_json(bad).is_err());
        }
    }
}
