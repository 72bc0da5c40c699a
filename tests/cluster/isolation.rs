//! A `sub` or user id that is not a single valid subject token can never
//! subscribe, and a wildcard subject published straight to NATS never
//! reaches a user's stream or history.

use serde_json::json;

use crate::helpers::{assert_error, note, SseStream, TestApp};
use crate::support::{note_n, two_nodes, Nats, NatsClient, TwoNodes, USER_SUBJECT};

const INVALID: &[&str] = &[
    "*", ">", "a.b", "u1.x", " ", "$SYS", "u1*", "u1>", "u1 ", "\t", "",
];

async fn next(stream: &mut SseStream) -> (u64, usize) {
    let (id, data) = stream.next_message().await;
    (
        id,
        note_n(&data).unwrap_or_else(|| panic!("foreign payload delivered: {data}")),
    )
}

async fn from_zero(app: &TestApp, user: &str) -> SseStream {
    let req = app
        .subscribe_request(&app.user_token(user))
        .query(&[("lastEventId", "0")]);
    app.subscribe_with(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_are_not_one_subject_token_never_reach_another_users_notifications() {
    let TwoNodes { nats, a, b, .. } = two_nodes(Nats::cluster().await, &[]).await;

    for sub in INVALID {
        let resp = a.subscribe_response(sub).await;
        assert_error(resp, 401, "unauthorized").await;
        let resp = a
            .publish_request(json!({"userId": sub, "notification": note(0)}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            400,
            "publish to user id {sub:?} must be refused"
        );
    }

    let id1 = a.publish_n("u1", 1).await;
    let mut u1 = a.subscribe("u1").await;
    let mut u2 = b.subscribe("u2").await;

    // Straight to NATS: wildcard and multi-token subjects, core and JetStream.
    let raw = NatsClient::connect(nats.servers[0].port).await;
    let foreign = note(666).to_string();
    for subject in ["*", ">", "u1.x", "u1.>", "u2.*", "$SYS"] {
        raw.publish(&format!("{USER_SUBJECT}.{subject}"), foreign.as_bytes())
            .await;
    }
    let mut stored = Vec::new();
    for (i, subject) in ["*", ">"].iter().enumerate() {
        if let Ok(seq) = raw
            .js_publish(
                &format!("{USER_SUBJECT}.{subject}"),
                &format!("wild-{i}"),
                foreign.as_bytes(),
            )
            .await
        {
            stored.push(seq);
        }
    }
    // Acked after everything above on the same connection: those are settled.
    let barrier = raw
        .js_publish_acked(
            &format!("{USER_SUBJECT}.zz"),
            "barrier",
            note(0).to_string().as_bytes(),
        )
        .await;

    // Each stream's next notification is its own next valid one.
    let id2 = a.publish_n("u1", 2).await;
    let id3 = b.publish_n("u2", 3).await;
    assert!(id2 > barrier && id3 > barrier);
    assert_eq!(next(&mut u1).await, (id2, 2), "u1 got something else first");
    assert_eq!(next(&mut u2).await, (id3, 3), "u2 got something else first");
    let id4 = b.publish_n("u1", 4).await;
    let id5 = a.publish_n("u2", 5).await;
    assert_eq!(next(&mut u1).await, (id4, 4));
    assert_eq!(next(&mut u2).await, (id5, 5));

    // Nor does the history hold anything but their own, on either node.
    let mut h1 = from_zero(&b, "u1").await;
    let mut h2 = from_zero(&a, "u2").await;
    for want in [(id1, 1), (id2, 2), (id4, 4)] {
        assert_eq!(next(&mut h1).await, want, "u1's history");
    }
    for want in [(id3, 3), (id5, 5)] {
        assert_eq!(next(&mut h2).await, want, "u2's history");
    }
    let id6 = a.publish_n("u1", 6).await;
    let id7 = b.publish_n("u2", 7).await;
    assert_eq!(next(&mut h1).await, (id6, 6));
    assert_eq!(next(&mut h2).await, (id7, 7));
    assert_eq!(next(&mut u1).await, (id6, 6));
    assert_eq!(next(&mut u2).await, (id7, 7));
    eprintln!("[isolation] wildcard-subject JetStream publishes stored by NATS at {stored:?}; none delivered");
}
