//! Property tests (issue 6, "Fuzzing"):
//!
//! (a) the SSE encoder: any notification JSON, compact or pretty-printed,
//!     with any text in it, becomes a frame that an independent WHATWG
//!     `text/event-stream` parser reads as exactly one `message` event with
//!     the right id and data that parses back to the same JSON value;
//! (b) user ids: `UserId::parse` accepts exactly the contract's rule, and
//!     nothing it accepts can widen or split a NATS subject;
//! (c) the publish-body parser never panics, and whatever it accepts is
//!     valid users and one line of valid notification JSON.

use campusbite_notify::event::{EventId, Payload};
use campusbite_notify::http::{ApiError, PublishRequest};
use campusbite_notify::sse;
use campusbite_notify::user_id::UserId;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------
// An independent WHATWG `text/event-stream` parser
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Dispatched {
    event_type: String,
    data: String,
    last_event_id: String,
}

#[derive(Debug, Default)]
struct StreamResult {
    events: Vec<Dispatched>,
    /// The source's last event ID string after the stream.
    last_event_id: String,
    /// The reconnection time, if a valid `retry` was seen.
    retry: Option<u64>,
}

/// Interprets a whole stream: UTF-8 decode (with replacement), one leading
/// BOM stripped, lines ended by CRLF, LF or CR, fields processed and events
/// dispatched at blank lines; an unterminated last event is discarded.
fn whatwg_parse(bytes: &[u8]) -> StreamResult {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = StreamResult::default();
    let mut data = String::new();
    let mut event_type = String::new();
    let mut last_id_buffer = String::new();

    // Split into lines; the text after the last line terminator is an
    // incomplete line and is never processed.
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['\r', '\n']) {
        lines.push(&rest[..i]);
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }

    for line in lines {
        if line.is_empty() {
            // Dispatch.
            out.last_event_id = last_id_buffer.clone();
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            out.events.push(Dispatched {
                event_type: if event_type.is_empty() {
                    "message".into()
                } else {
                    std::mem::take(&mut event_type)
                },
                data: std::mem::take(&mut data),
                last_event_id: last_id_buffer.clone(),
            });
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => event_type = value.to_string(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_id_buffer = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                out.retry = value.parse().ok();
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_reference_parser_follows_the_spec_examples() {
    // The spec's own examples, plus its edge cases.
    let r = whatwg_parse(b"data: YHOO\ndata: +2\ndata: 10\n\n");
    assert_eq!(r.events[0].data, "YHOO\n+2\n10");
    let r = whatwg_parse(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n");
    assert_eq!(r.events.len(), 2, "the unterminated third event is dropped");
    assert_eq!(
        (
            r.events[0].data.as_str(),
            r.events[0].last_event_id.as_str()
        ),
        ("first event", "1")
    );
    assert_eq!(
        (
            r.events[1].data.as_str(),
            r.events[1].last_event_id.as_str()
        ),
        ("second event", "")
    );
    let r = whatwg_parse(b"data\n\ndata\ndata\n\ndata:\n");
    assert_eq!(
        r.events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["", "\n"]
    );
    let r = whatwg_parse(b"data:test\n\ndata: test\n\n");
    assert_eq!(r.events[0].data, r.events[1].data);
    let r = whatwg_parse(
        "\u{feff}event: x\r\ndata: a\rid: 7\0\r\nretry: 12x\n\nretry: 30\n\n".as_bytes(),
    );
    assert_eq!(r.events[0].event_type, "x");
    assert_eq!(r.events[0].last_event_id, "", "an id with NUL is ignored");
    assert_eq!(r.retry, Some(30));
    let r = whatwg_parse(b"id: 5\n\n");
    assert!(r.events.is_empty());
    assert_eq!(r.last_event_id, "5");
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// Text made of arbitrary characters and the pieces most likely to break an
/// SSE frame or a JSON string.
fn nasty_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => any::<char>().prop_map(String::from),
        2 => select(vec![
            "\n", "\r", "\r\n", "\n\n", "\r\r", "\u{2028}", "\u{2029}", "\u{85}", "\0", "\"", "\\",
            "data:", "data: x", "\ndata: {}\n\n", "id:", "id: 1", "\nid: 99\n", "event:",
            "event: reset", "retry: 1", ":", "\u{feff}", "\t", "\u{7f}", "\u{1b}", "\\n", "\\\"",
            "}", "{", "]", "😀", "é", "\u{fffd}", "\u{10ffff}", " ",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// Any JSON value without floats (these compare exactly after a round trip).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Any JSON value, floats included.
fn json_value_with_floats() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        json_value(),
        any::<f64>().prop_map(|f| json!(f)),
        (any::<i32>(), -30i32..30).prop_map(|(m, e)| json!(f64::from(m) * 10f64.powi(e))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A notification as producers send it, with arbitrary text everywhere.
fn notification() -> impl Strategy<Value = Value> {
    (
        nasty_string(),
        prop::option::of(nasty_string()),
        prop::option::of(nasty_string()),
        prop::option::of(prop::collection::vec((nasty_string(), json_value()), 0..6)),
    )
        .prop_map(|(kind, title, message, data)| {
            let mut n = Map::new();
            n.insert("type".into(), Value::String(kind));
            if let Some(t) = title {
                n.insert("title".into(), Value::String(t));
            }
            if let Some(m) = message {
                n.insert("message".into(), Value::String(m));
            }
            if let Some(d) = data {
                n.insert("data".into(), Value::Object(d.into_iter().collect()));
            }
            Value::Object(n)
        })
}

/// Event ids: anything, with the edges made likely.
fn event_id() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), Just(0), Just(u64::MAX), 0u64..1000]
}

// ---------------------------------------------------------------------------
// (a) The SSE encoder
// ---------------------------------------------------------------------------

/// Encodes `raw` as notification `id` and parses the frame back; checks it is
/// exactly one `message` event with that id and one line of data; returns
/// the data parsed as JSON.
fn round_trip(raw: &[u8], id: u64) -> Result<Value, TestCaseError> {
    let payload = Payload::from_json(raw)
        .map_err(|e| TestCaseError::fail(format!("valid JSON refused: {e}")))?;
    let frame = sse::notification(EventId(id), &payload);
    let parsed = whatwg_parse(&frame);
    prop_assert_eq!(
        parsed.events.len(),
        1,
        "frame {:?}",
        String::from_utf8_lossy(&frame)
    );
    let event = &parsed.events[0];
    prop_assert_eq!(&event.event_type, "message");
    prop_assert_eq!(&event.last_event_id, &id.to_string());
    prop_assert_eq!(&parsed.last_event_id, &id.to_string());
    prop_assert!(!event.data.contains('\n'), "data spans several lines");
    // In a stream: after the start frame and before another event, it is
    // still exactly this one event (nothing bleeds across frames).
    let mut stream = b"retry: 1000\n\nid: 0\n\n".to_vec();
    stream.extend_from_slice(&frame);
    stream.extend_from_slice(b"event: reset\ndata: {}\n\n");
    let in_stream = whatwg_parse(&stream);
    prop_assert_eq!(in_stream.events.len(), 2);
    prop_assert_eq!(&in_stream.events[0], event);
    prop_assert_eq!(&in_stream.events[1].event_type, "reset");
    serde_json::from_str(&event.data)
        .map_err(|e| TestCaseError::fail(format!("data is not JSON ({e}): {:?}", event.data)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_compact_notification_is_exactly_one_message_event_with_equal_data(
        n in notification(), id in event_id()
    ) {
        let raw = serde_json::to_string(&n).unwrap();
        let data = round_trip(raw.as_bytes(), id)?;
        prop_assert_eq!(data, n);
    }

    #[test]
    fn any_pretty_printed_notification_round_trips_as_an_equal_value(
        n in notification(), id in event_id(), ending in select(vec!["\n", "\r\n", "\r"])
    ) {
        let raw = serde_json::to_string_pretty(&n).unwrap().replace('\n', ending);
        let data = round_trip(raw.as_bytes(), id)?;
        prop_assert_eq!(data, n);
    }

    #[test]
    fn any_json_value_round_trips_compact_and_pretty(v in json_value(), id in event_id()) {
        let compact = serde_json::to_string(&v).unwrap();
        prop_assert_eq!(&round_trip(compact.as_bytes(), id)?, &v);
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        prop_assert_eq!(&round_trip(pretty.as_bytes(), id)?, &v);
    }

    #[test]
    fn json_with_floats_round_trips_to_what_the_input_text_means(
        v in json_value_with_floats(), id in event_id()
    ) {
        for raw in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
            let meant: Value = serde_json::from_str(&raw).unwrap();
            prop_assert_eq!(round_trip(raw.as_bytes(), id)?, meant);
        }
    }
}

/// JSON nested exactly `depth` levels (arrays and objects mixed), with
/// strings full of brackets, quotes and backslashes at every level.
fn nested_json() -> impl Strategy<Value = (usize, String)> {
    // Half the cases right around the limit, where an off-by-one would hide.
    prop_oneof![124usize..=131, 1usize..=200]
        .prop_flat_map(|depth| {
            (
                Just(depth),
                prop::collection::vec((any::<bool>(), nasty_string()), depth),
            )
        })
        .prop_map(|(depth, levels)| {
            let mut text = String::from("0");
            for (is_array, s) in levels.iter().rev() {
                let s = serde_json::to_string(&format!("[{{{s}\\")).unwrap();
                text = if *is_array {
                    format!("[{s},{text}]")
                } else {
                    format!("{{{s}:{text}}}")
                };
            }
            (depth, text)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn payloads_nested_up_to_the_limit_are_accepted_and_deeper_ones_refused(
        (depth, text) in nested_json()
    ) {
        let accepted = Payload::from_json(text.as_bytes()).is_ok();
        prop_assert_eq!(accepted, depth <= campusbite_notify::event::MAX_JSON_DEPTH, "depth {}", depth);
        // The same line as serde_json's own recursion limit.
        prop_assert_eq!(accepted, serde_json::from_str::<Value>(&text).is_ok());
    }
}

// ---------------------------------------------------------------------------
// (b) User ids
// ---------------------------------------------------------------------------

/// The contract's rule (docs/protocol.md §2.2), written from its text: 1–256 bytes
/// of UTF-8, no `.`, `*`, `>`, no white space, no control character, no
/// leading `$`.
fn contract_allows(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && !s.starts_with('$')
        && !s
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control())
}

/// Characters around every edge of the rule.
fn id_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => select(vec![
            'a', 'Z', '0', '-', '_', '$', '.', '*', '>', ' ', '\t', '\n', '\r', '\0', '\u{7f}',
            '\u{85}', '\u{a0}', '\u{1680}', '\u{2028}', '\u{3000}', '\u{feff}', '\u{200b}',
            '\u{9f}', 'é', '€', '😀', '@', '/', '#', '=', '+', '%', ':', '\u{fffd}',
        ]),
        1 => any::<char>(),
    ]
}

/// Strings of 0–300 arbitrary characters.
fn any_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect())
}

/// Short strings of edge characters.
fn edgy_text() -> impl Strategy<Value = String> {
    prop::collection::vec(id_char(), 0..12).prop_map(|c| c.into_iter().collect())
}

/// Strings of 1- to 4-byte characters whose length is near 256 bytes.
fn near_the_length_limit() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(select(vec!['a', 'é', '€', '😀']), 64..=260),
        250usize..=262,
        prop::option::of(select(vec!['a', 'é', '€', '😀', '.', ' ', '$'])),
    )
        .prop_map(|(chars, target, tail)| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > target {
                    break;
                }
                s.push(c);
            }
            if let Some(c) = tail {
                s.push(c);
            }
            s
        })
}

fn check_user_id(s: &str) -> Result<(), TestCaseError> {
    let parsed = UserId::parse(s);
    prop_assert_eq!(
        parsed.is_ok(),
        contract_allows(s),
        "{:?} ({} bytes): parse said {:?}",
        s,
        s.len(),
        parsed
    );
    if let Ok(id) = parsed {
        prop_assert_eq!(id.as_str(), s);
        prop_assert_eq!(id.to_string(), s);
        // One NATS subject token: no separator, no wildcard, nothing that
        // ends or splits a protocol line.
        prop_assert!(!id
            .as_str()
            .contains(['.', '*', '>', ' ', '\t', '\r', '\n', '\0']));
        let subject = format!("campusbite.notify.user.{id}");
        let tokens: Vec<&str> = subject.split('.').collect();
        prop_assert_eq!(tokens.len(), 4);
        prop_assert_eq!(tokens[3], s);
        prop_assert!(!tokens.iter().any(|t| *t == "*" || t.starts_with('>')));
        prop_assert!(!s.starts_with('$'), "could address a system subject");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn user_id_parse_matches_the_contract_rule_on_arbitrary_strings(s in any_text()) {
        check_user_id(&s)?;
    }

    #[test]
    fn user_id_parse_matches_the_contract_rule_on_edge_characters(s in edgy_text()) {
        check_user_id(&s)?;
    }

    #[test]
    fn user_id_parse_matches_the_contract_rule_near_256_bytes(s in near_the_length_limit()) {
        check_user_id(&s)?;
    }
}

#[test]
fn user_id_length_edges_with_multibyte_characters() {
    for (s, ok) in [
        ("a".repeat(255), true),
        ("a".repeat(256), true),
        ("a".repeat(257), false),
        ("é".repeat(128), true),
        ("é".repeat(128) + "a", false),
        ("a".repeat(255) + "é", false),
        ("€".repeat(85) + "a", true),
        ("€".repeat(85) + "é", false),
        ("😀".repeat(64), true),
        ("a".repeat(253) + "😀", false),
        ("a".repeat(252) + "😀", true),
        ("x$".into(), true),
        ("$x".into(), false),
        ("\u{a0}".into(), false),
        ("\u{200b}".into(), true), // zero-width space: not White_Space, not a control
    ] {
        assert_eq!(UserId::parse(&s).is_ok(), ok, "{s:?} ({} bytes)", s.len());
        assert_eq!(contract_allows(&s), ok, "{s:?}");
    }
}

// ---------------------------------------------------------------------------
// (c) The publish-body parser
// ---------------------------------------------------------------------------

const MAX_NOTIFICATION: usize = 65_536;
const MAX_BATCH: usize = 10_000;

/// What must hold for anything `PublishRequest::parse` accepts.
fn check_accepted(req: &PublishRequest) -> Result<Value, TestCaseError> {
    prop_assert!(!req.users.is_empty());
    if !req.batch {
        prop_assert_eq!(req.users.len(), 1);
    }
    let mut seen = std::collections::HashSet::new();
    for user in &req.users {
        prop_assert!(seen.insert(user.as_str()), "{:?} listed twice", user);
        let again = UserId::parse(user.as_str());
        prop_assert!(again.is_ok(), "{:?} does not re-parse", user);
        prop_assert!(contract_allows(user.as_str()));
    }
    let bytes = req.payload.as_bytes();
    prop_assert!(
        !bytes.contains(&b'\n') && !bytes.contains(&b'\r'),
        "payload is not one line"
    );
    prop_assert!(bytes.len() <= MAX_NOTIFICATION);
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| TestCaseError::fail(format!("payload is not JSON: {e}")))?;
    prop_assert!(
        v.get("type").is_some_and(Value::is_string),
        "no string type: {}",
        v
    );
    Ok(v)
}

/// Whether a notification value has the shape the server requires.
fn shape_ok(n: &Value) -> bool {
    let Some(o) = n.as_object() else { return false };
    let opt_string = |k: &str| o.get(k).is_none_or(|v| v.is_null() || v.is_string());
    o.get("type").is_some_and(Value::is_string)
        && opt_string("title")
        && opt_string("message")
        && o.get("data").is_none_or(|v| v.is_null() || v.is_object())
}

/// A user-id string: valid ones likely, invalid ones common.
fn user_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9]{1,8}",
        2 => edgy_text(),
        1 => near_the_length_limit(),
    ]
}

/// A notification, usually of the right shape.
fn any_notification() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => notification(),
        1 => json_value(),
        1 => (notification(), select(vec!["type", "title", "message", "data"]), json_value())
            .prop_map(|(mut n, k, v)| { n[k] = v; n }),
    ]
}

/// Which user fields a body has.
#[derive(Debug, Clone)]
enum Users {
    One(String),
    Many(Vec<String>),
    Both(String, Vec<String>),
    Neither,
}

fn users() -> impl Strategy<Value = Users> {
    prop_oneof![
        4 => user_string().prop_map(Users::One),
        4 => prop::collection::vec(user_string(), 0..6).prop_map(Users::Many),
        1 => (user_string(), prop::collection::vec(user_string(), 0..3))
            .prop_map(|(a, b)| Users::Both(a, b)),
        1 => Just(Users::Neither),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_publish_parser_never_panics_on_arbitrary_bytes(
        raw in prop::collection::vec(any::<u8>(), 0..512),
        max_n in 0usize..100_000,
        max_b in 0usize..20,
    ) {
        if let Ok(req) = PublishRequest::parse(&raw, max_n, max_b) {
            check_accepted(&req)?;
        }
    }

    #[test]
    fn the_publish_parser_never_panics_on_mutated_valid_bodies(
        users in users(),
        n in any_notification(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut raw = body(&users, &n, None).to_string().into_bytes();
        for (at, byte, op) in cuts {
            let i = at.index(raw.len() + 1);
            match op {
                0 => raw.truncate(i),
                1 => raw.insert(i, byte),
                _ => if i < raw.len() { raw[i] = byte },
            }
        }
        if let Ok(req) = PublishRequest::parse(&raw, MAX_NOTIFICATION, MAX_BATCH) {
            check_accepted(&req)?;
        }
    }

    #[test]
    fn the_publish_parser_accepts_exactly_the_valid_bodies(
        users in users(),
        n in any_notification(),
        extra in prop::option::weighted(0.1, nasty_string()),
        pretty in any::<bool>(),
        max_n in prop_oneof![Just(MAX_NOTIFICATION), 0usize..400],
        max_b in prop_oneof![Just(MAX_BATCH), 1usize..5],
    ) {
        let v = body(&users, &n, extra.as_deref());
        let raw = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
        // The size limit counts the member's raw text; only for compact
        // bodies is that simply the compact notification.
        let max_n = if pretty { MAX_NOTIFICATION } else { max_n };
        let notification_text_len = n.to_string().len();
        let listed: Option<Vec<&String>> = match &users {
            Users::One(u) => Some(vec![u]),
            Users::Many(us) => Some(us.iter().collect()),
            Users::Both(..) | Users::Neither => None,
        };
        let ids_ok = listed.as_ref().is_some_and(|l| {
            !l.is_empty() && l.iter().all(|u| contract_allows(u))
        });
        let count_ok = match &users { Users::Many(us) => us.len() <= max_b, _ => true };
        let result = PublishRequest::parse(raw.as_bytes(), max_n, max_b);

        let expect_ok = extra.is_none() && ids_ok && count_ok && shape_ok(&n);
        if !expect_ok {
            prop_assert!(result.is_err(), "accepted an invalid body: {}", raw);
            return Ok(());
        }
        if notification_text_len > max_n {
            prop_assert!(
                matches!(result, Err(ApiError::PayloadTooLarge(_))),
                "a {}-byte notification with limit {}: {:?}", notification_text_len, max_n, result
            );
            return Ok(());
        }
        let req = result.map_err(|e| TestCaseError::fail(format!("refused a valid body ({e}): {raw}")))?;
        let payload = check_accepted(&req)?;
        prop_assert_eq!(payload, n.clone());
        if !pretty {
            let compact = n.to_string();
            prop_assert_eq!(req.payload.as_bytes(), compact.as_bytes(), "compact JSON is kept byte for byte");
        }
        let mut want: Vec<&str> = Vec::new();
        for u in listed.unwrap() {
            if !want.contains(&u.as_str()) {
                want.push(u);
            }
        }
        let got: Vec<&str> = req.users.iter().map(UserId::as_str).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(req.batch, matches!(users, Users::Many(_)));
    }
}

/// A publish body with these users, this notification and maybe an unknown field.
fn body(users: &Users, n: &Value, extra: Option<&str>) -> Value {
    let mut b = Map::new();
    match users {
        Users::One(u) => {
            b.insert("userId".into(), json!(u));
        }
        Users::Many(us) => {
            b.insert("userIds".into(), json!(us));
        }
        Users::Both(u, us) => {
            b.insert("userId".into(), json!(u));
            b.insert("userIds".into(), json!(us));
        }
        Users::Neither => {}
    }
    b.insert("notification".into(), n.clone());
    if let Some(k) = extra {
        // Any key other than the three known ones is unknown.
        let k = format!("x-{k}");
        b.insert(k, json!(1));
    }
    Value::Object(b)
}
