//! Fuzzes `PublishRequest::parse`, the parser of `POST /api/notifications/publish`
//! bodies: it must never panic, and whatever it accepts must be valid users
//! and one line of JSON with a string `type`.

#![no_main]

use campusbite_notify::http::PublishRequest;
use campusbite_notify::user_id::UserId;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The one field every accepted notification has.
#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    _kind: String,
}

/// The deepest nesting of arrays and objects in valid JSON text.
fn depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    deepest
}

fn check(data: &[u8], max_notification_bytes: usize, max_batch_users: usize) {
    let Ok(req) = PublishRequest::parse(data, max_notification_bytes, max_batch_users) else {
        return;
    };
    assert!(!req.users.is_empty(), "accepted with no users");
    assert!(
        req.batch || req.users.len() == 1,
        "a single publish with several users"
    );
    assert!(
        req.users.len() <= max_batch_users.max(1),
        "more users than the batch limit"
    );
    let mut seen = std::collections::HashSet::new();
    for user in &req.users {
        assert!(seen.insert(user.as_str()), "{user:?} listed twice");
        assert!(
            UserId::parse(user.as_str()).is_ok(),
            "{user:?} does not re-parse"
        );
    }
    let payload = req.payload.as_bytes();
    assert!(
        payload.len() <= max_notification_bytes,
        "payload over the limit"
    );
    assert!(
        !payload.contains(&b'\n') && !payload.contains(&b'\r'),
        "payload spans several lines"
    );
    // Valid JSON, nested at most 128 levels (the server's limit, as
    // serde_json's), with a string `type`. (Not parsed into a `Value`: a
    // number beyond f64, such as 1e999, is valid JSON that `Value` refuses.)
    assert!(
        serde_json::from_slice::<&RawValue>(payload).is_ok(),
        "payload is not JSON"
    );
    assert!(
        depth(payload) <= 128,
        "payload nests deeper than 128 levels"
    );
    assert!(
        serde_json::from_slice::<Typed>(payload).is_ok(),
        "payload has no string type"
    );
}

fuzz_target!(|data: &[u8]| {
    // The server's defaults, and small limits that reach the 413 branches.
    check(data, 65_536, 10_000);
    check(data, 64, 2);
});
