//! A user who is offline gets, on connect with `lastEventId`, what was
//! published meanwhile (by HTTP or straight to NATS), in order; and
//! `lastEventId=0` replays everything retained.

use crate::helpers::note;
use crate::support::{messages, resume, two_nodes, Nats, NatsClient, TwoNodes, USER_SUBJECT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_gets_what_was_published_meanwhile_on_connect() {
    let TwoNodes { nats, a, b, .. } = two_nodes(Nats::cluster().await, &[]).await;
    let raw = NatsClient::connect(nats.servers[1].port).await;
    let subject = format!("{USER_SUBJECT}.u1");

    let mut online = a.subscribe("u1").await;
    let id1 = a.publish_n("u1", 1).await;
    assert_eq!(online.next_message().await.0, id1);
    drop(online);

    // Offline: HTTP on both nodes, a core publish, a JetStream publish, and
    // another user's notification in between.
    let id2 = b.publish_n("u1", 2).await;
    raw.publish(&subject, note(3).to_string().as_bytes()).await;
    let id4 = raw
        .js_publish_acked(&subject, "offline-4", note(4).to_string().as_bytes())
        .await;
    let other = a.publish_n("u2", 99).await;
    let id5 = a.publish_n("u1", 5).await;
    assert!(id2 < id4 && id4 < other && other < id5);

    let mut back = resume(&b, "u1", id1).await;
    assert_eq!(
        back.start_id,
        Some(id1),
        "the start frame carries the resume position"
    );
    let got = messages(&mut back, 4).await;
    let ns: Vec<usize> = got.iter().map(|g| g.1).collect();
    assert_eq!(
        ns,
        vec![2, 3, 4, 5],
        "missed notifications in publish order: {got:?}"
    );
    let id3 = got[1].0;
    assert_eq!(
        vec![got[0].0, got[2].0, got[3].0],
        vec![id2, id4, id5],
        "{got:?}"
    );
    assert!(
        id2 < id3 && id3 < id4,
        "the core publish sits between its neighbours: {got:?}"
    );
    // Then live, with nothing in between.
    let id6 = a.publish_n("u1", 6).await;
    assert_eq!(messages(&mut back, 1).await, vec![(id6, 6)]);

    // lastEventId=0: everything retained, then live.
    let mut all = resume(&a, "u1", 0).await;
    assert_eq!(all.start_id, Some(0));
    let got = messages(&mut all, 6).await;
    assert_eq!(
        got,
        vec![(id1, 1), (id2, 2), (id3, 3), (id4, 4), (id5, 5), (id6, 6)],
        "the full history, in order, without u2's"
    );
    let id7 = b.publish_n("u1", 7).await;
    assert_eq!(messages(&mut all, 1).await, vec![(id7, 7)]);
    assert_eq!(messages(&mut back, 1).await, vec![(id7, 7)]);
}
