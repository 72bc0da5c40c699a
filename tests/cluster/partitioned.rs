//! Partitioned mode (`NOTIFY_STREAM_PARTITIONS` > 1, docs/capacity.md): the
//! NATS servers map `campusbite.notify.user.<id>` onto N streams with
//! `partition(N, 1)`; producers' subjects do not change; the gateway reads
//! each user's history from the stream the server chose.

use std::time::Duration;

use campusbite_notify::bus::nats::partition_of;

use crate::helpers::{note, spawn_process};
use crate::support::{
    gateway_envs, messages, new_secret, next_msg, partition_mapping, report, resume, start_node,
    two_nodes, Nats, NatsClient, TwoNodes, STREAM, USER_SUBJECT,
};

const PARTITIONS: u32 = 4;

/// A JetStream publish by a producer; returns (stream, sequence) from the ack.
async fn js_publish(raw: &NatsClient, user: &str, msg_id: &str, n: usize) -> (String, u64) {
    let subject = format!("{USER_SUBJECT}.{user}");
    raw.js_publish_to(&subject, msg_id, note(n).to_string().as_bytes())
        .await
        .unwrap_or_else(|e| panic!("JetStream publish to {subject} refused: {e}"))
}

/// Two users that live in different partitions.
fn users_in_two_partitions() -> (String, String) {
    let first = "u1".to_string();
    let p = partition_of(&first, PARTITIONS);
    let other = (2..)
        .map(|i| format!("u{i}"))
        .find(|u| partition_of(u, PARTITIONS) != p)
        .expect("some user in another partition");
    (first, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_mode_delivers_across_nodes_and_resumes_from_the_users_partition() {
    let parts = PARTITIONS.to_string();
    let extra = [("NOTIFY_STREAM_PARTITIONS", parts.as_str())];
    let TwoNodes { nats, a, b, .. } =
        two_nodes(Nats::cluster_partitioned(PARTITIONS).await, &extra).await;
    let raw = NatsClient::connect(nats.servers[2].port).await;
    let (u1, u2) = users_in_two_partitions();
    let stream_of = |u: &str| format!("{STREAM}_{}", partition_of(u, PARTITIONS));

    // Live, cross-node: HTTP publish on A, a producer's core and JetStream
    // publishes to the unchanged subject, all reach u1's stream on B.
    let mut live = b.subscribe(&u1).await;
    let id1 = a.publish_n(&u1, 1).await;
    raw.publish(
        &format!("{USER_SUBJECT}.{u1}"),
        note(2).to_string().as_bytes(),
    )
    .await;
    let (stream, id3) = js_publish(&raw, &u1, "part-u1-3", 3).await;
    assert_eq!(
        stream,
        stream_of(&u1),
        "the server stored u1's notification in the partition the gateway computes"
    );
    let got = messages(&mut live, 3).await;
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{got:?}"
    );
    assert_eq!((got[0].0, got[2].0), (id1, id3), "{got:?}");
    assert!(id1 < got[1].0 && got[1].0 < id3, "ids increase: {got:?}");
    drop(live);

    // Offline: u1's notifications on both nodes and by a producer, u2's
    // (another partition, another stream and sequence) in between.
    let id4 = b.publish_n(&u1, 4).await;
    let (stream2, _) = js_publish(&raw, &u2, "part-u2-1", 90).await;
    assert_eq!(stream2, stream_of(&u2));
    assert_ne!(stream2, stream_of(&u1));
    let other = a.publish_n(&u2, 91).await;
    let (_, id5) = js_publish(&raw, &u1, "part-u1-5", 5).await;
    let id6 = a.publish_n(&u1, 6).await;
    assert!(id3 < id4 && id4 < id5 && id5 < id6);

    let mut back = resume(&a, &u1, id3).await;
    assert_eq!(back.start_id, Some(id3));
    assert_eq!(
        messages(&mut back, 3).await,
        vec![(id4, 4), (id5, 5), (id6, 6)],
        "resume replays u1's missed notifications from u1's partition, in order"
    );
    let id7 = b.publish_n(&u1, 7).await;
    assert_eq!(messages(&mut back, 1).await, vec![(id7, 7)], "then live");

    // lastEventId=0: u1's whole history, nothing of u2's.
    let mut all = resume(&b, &u1, 0).await;
    let got = messages(&mut all, 7).await;
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6, 7],
        "{got:?}"
    );
    // u2 gets its own two, with its own partition's ids.
    let mut u2s = resume(&b, &u2, 0).await;
    let got = messages(&mut u2s, 2).await;
    assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), vec![90, 91]);
    assert_eq!(got[1].0, other);
}

/// User ids of every shape the contract allows (1–256 bytes of UTF-8, no
/// `.`, `*`, `>`, white space or control characters).
fn many_user_ids(n: usize) -> Vec<String> {
    const ALPHABET: &[char] = &[
        'a', 'b', 'z', 'A', 'Q', '0', '7', '9', '-', '_', ':', '@', '+', '=', '~', '#', 'ü', 'é',
        'ß', '字', '🛍', '$', '%', '!',
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut ids = vec![
        "u1".to_string(),
        "507f1f77bcf86cd799439011".to_string(),
        "a".repeat(256),
    ];
    while ids.len() < n {
        let len = 1 + (next() % 40) as usize;
        let mut id: String = (0..len)
            .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
            .collect();
        if id.starts_with('$') {
            id.insert(0, 'x');
        }
        while id.len() > 256 {
            id.pop();
        }
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_partition_function_agrees_with_the_nats_servers() {
    // One mapping per partition count, on a real cluster. Publisher and
    // subscriber share a server: the mapping is applied where a message is
    // published, and a flushed SUB is in place there (no propagation wait).
    let counts = [2_u32, 3, 4, 7, 16, 64, 1000];
    let mut conf = String::from("mappings {\n");
    for n in counts {
        conf.push_str(&format!(
            "  \"probe.n{n}.*\": \"mapped.{n}.{{{{partition({n},1)}}}}.{{{{wildcard(1)}}}}\"\n"
        ));
    }
    conf.push_str("}\n");
    let nats = Nats::cluster_with(&conf).await;
    // Probe subjects outside the model: the test-only admin user.
    let mut sub = NatsClient::connect_admin(nats.servers[1].port)
        .await
        .subscribe("mapped.>")
        .await;
    let publisher = NatsClient::connect_admin(nats.servers[1].port).await;

    let ids = many_user_ids(3000);
    let mut checked = 0;
    let mut hits = vec![Vec::new(); counts.len()];
    for (ci, &n) in counts.iter().enumerate() {
        hits[ci] = vec![0_u32; n as usize];
    }
    for (ci, &n) in counts.iter().enumerate() {
        publisher
            .publish_many(ids.iter().map(|id| (format!("probe.n{n}.{id}"), &b""[..])))
            .await;
        for _ in 0..ids.len() {
            let subject = next_msg(&mut sub).await.subject.to_string();
            let tokens: Vec<&str> = subject.splitn(4, '.').collect();
            assert_eq!(tokens.len(), 4, "mapped subject {subject}");
            assert_eq!(tokens[1], n.to_string(), "{subject}");
            let id = tokens[3];
            let server: u32 = tokens[2].parse().expect("partition number");
            assert_eq!(
                partition_of(id, n),
                server,
                "user id {id:?}: gateway and nats-server disagree for N = {n}"
            );
            hits[ci][server as usize] += 1;
            checked += 1;
        }
    }
    // The hash spreads users: no partition of the small counts is empty.
    for (ci, &n) in counts.iter().enumerate().filter(|(_, &n)| n <= 16) {
        assert!(
            hits[ci].iter().all(|&h| h > 0),
            "N = {n}: some partition got no user: {:?}",
            hits[ci]
        );
    }
    report(
        "partition_agreement",
        &format!("{checked} (user id, N) pairs agree; N in {counts:?}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_partition_count_the_servers_do_not_map() {
    // Servers map 4 partitions; nodes configured for 3, and for 4 against a
    // server without the mapping, must stop with an error naming the setting.
    let mapped = Nats::cluster_partitioned(PARTITIONS).await;
    // The model of 4 streams, but no mapping.
    let plain = Nats::single_for(PARTITIONS).await;
    let secret = new_secret();
    for (urls, partitions, replicas) in [(mapped.urls(), "3", "3"), (plain.urls(), "4", "1")] {
        let envs: Vec<(&str, &str)> = vec![
            ("NOTIFY_JWT_SECRET", &secret),
            ("NOTIFY_NATS_URL", &urls),
            ("NOTIFY_STREAM_REPLICAS", replicas),
            ("NOTIFY_STREAM_PARTITIONS", partitions),
            gateway_envs()[0],
            gateway_envs()[1],
        ];
        let (status, stderr) = spawn_process(&envs)
            .expect_failure(Duration::from_secs(30), &format!("partitions={partitions}"))
            .await;
        let line = stderr
            .lines()
            .find(|l| l.contains("NOTIFY_STREAM_PARTITIONS"))
            .unwrap_or_else(|| panic!("the error must name the setting; stderr:\n{stderr}"));
        assert!(
            line.contains(&format!("{{{{partition({partitions},1)}}}}")),
            "the error shows the mapping the node needs: {line}"
        );
        report(
            "partition_mismatch",
            &format!("partitions={partitions}: {status}: {line}"),
        );
    }
    // The mapping text the tests use is the one documented for operators.
    assert!(partition_mapping(4).contains("{{partition(4,1)}}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_from_one_stream_to_partitions_keeps_every_users_ids_increasing() {
    let mut nats = Nats::cluster().await;
    let secret = new_secret();
    let urls = nats.urls();
    // Before: one stream. u9's notifications push its sequence past u1's.
    let single = start_node(&secret, &urls, 3, &[]).await;
    let mut seen = 0;
    for n in 1..=3 {
        seen = single.publish_n("u1", n).await;
    }
    for n in 0..20 {
        single.publish_n("u9", n).await;
    }
    drop(single);

    // The servers get the mapping: a restart with the new configuration and
    // the same stores (what a rolling config change of the NATS pods does).
    let conf = nats.conf.clone().expect("a cluster has a config file");
    let mut text = std::fs::read_to_string(&conf).expect("read the NATS config");
    text.push_str(&partition_mapping(PARTITIONS));
    std::fs::write(&conf, text).expect("write the NATS config");
    nats.use_model(PARTITIONS);
    for s in &mut nats.servers {
        s.kill9();
    }
    for s in &mut nats.servers {
        s.start();
    }
    for s in &nats.servers {
        s.wait_js_ready(true, Duration::from_secs(30)).await;
    }

    let parts = PARTITIONS.to_string();
    let node = start_node(
        &secret,
        &urls,
        3,
        &[("NOTIFY_STREAM_PARTITIONS", parts.as_str())],
    )
    .await;
    let next = node.publish_n("u1", 4).await;
    assert!(
        next > seen + 20,
        "u1's first id in its partition ({next}) is above every id of the single stream (u1 saw {seen}, then 20 more for u9)"
    );

    // A browser that saw u1's last id of the single stream resumes: that
    // history stays behind in the old stream, so it is told to refetch
    // (reset) and then gets the new notification, with a larger id.
    let mut back = resume(&node, "u1", seen).await;
    let first = back.next_event().await;
    assert_eq!(
        first.event, "reset",
        "expected a reset first, got {first:?}"
    );
    assert_eq!(messages(&mut back, 1).await, vec![(next, 4)]);
    let later = node.publish_n("u1", 5).await;
    assert_eq!(messages(&mut back, 1).await, vec![(later, 5)]);
}
