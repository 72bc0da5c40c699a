//! Abusive HTTP clients: slowloris, thousands of connections from one
//! client, and a tight reconnect loop. In each the node must stay
//! responsive for others, answer its limits with 503 + `Retry-After` (a
//! soft refusal to requests that accept `text/event-stream`), and
//! keep memory bounded; peak RSS is printed (`hardening: …`).
//!
//! (A client that never reads is `tests/api/slow_client.rs`; a stream whose
//! token expires is `tests/api/expiry.rs`.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::helpers::*;
use crate::raw;

/// Lifts this process's soft descriptor limit to the hard one; children
/// (the server) inherit it.
fn raise_fd_limit(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    assert!(
        lim.rlim_cur >= need,
        "this test needs {need} descriptors; the hard limit is {}",
        lim.rlim_max
    );
}

/// Open descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .count()
}

/// MiB from KiB, for printing.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One round trip for an already open stream: publish to `user`, time until
/// its stream has it.
async fn round_trip(app: &TestApp, user: &str, s: &mut SseStream) -> Duration {
    let t0 = Instant::now();
    let id = app.publish_n(user, 0).await;
    let (got, _) = s.next_message().await;
    assert_eq!(got, id, "{user} received something else");
    t0.elapsed()
}

/// `GET /healthz`, timed.
async fn healthz(app: &TestApp) -> Duration {
    let t0 = Instant::now();
    let resp = tokio::time::timeout(DEADLINE, app.client.get(app.url("/healthz")).send())
        .await
        .expect("/healthz answered within the deadline")
        .expect("/healthz");
    assert_eq!(resp.status().as_u16(), 200);
    t0.elapsed()
}

/// What became of one slowloris connection.
struct SlowOutcome {
    /// From connecting until the server closed it.
    closed_after: Duration,
    /// Header bytes sent before that.
    sent: usize,
    /// What the server wrote.
    received: Vec<u8>,
}

/// Sends a request head one byte every 500 ms, never finishing it, until
/// the server closes the connection (or 15 s pass).
async fn slowloris(port: u16, connected: mpsc::Sender<()>) -> Result<SlowOutcome, String> {
    let t0 = Instant::now();
    let stream = raw::connect(port).await;
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "GET /api/notifications/subscribe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: slowloris\r\nX-Padding: {}\r\n",
        "a".repeat(200)
    );
    let sent = AtomicUsize::new(0);
    let writer = async {
        for b in head.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            if sent.fetch_add(1, Ordering::Relaxed) == 0 {
                let _ = connected.send(()).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The blank line that ends the head is never sent.
        std::future::pending::<()>().await
    };
    let reader = async {
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    let received = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(15), reader) => {
            r.map_err(|_| "still open after 15 s".to_string())?
        }
        _ = writer => unreachable!("the writer never finishes"),
    };
    Ok(SlowOutcome {
        closed_after: t0.elapsed(),
        sent: sent.load(Ordering::Relaxed),
        received,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_by_the_head_timeout_while_others_subscribe_and_receive() {
    let app = spawn_app().await;
    let rss_start = proc_status_kib(app.pid(), "VmRSS");
    const SLOW: usize = 50;

    let (tx, mut rx) = mpsc::channel(SLOW);
    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(slowloris(app.port, tx.clone())))
        .collect();
    drop(tx);
    for _ in 0..SLOW {
        tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("every slowloris client connected and sent a byte")
            .expect("slowloris task alive");
    }

    // Meanwhile, normal clients open a new stream and receive on it.
    let mut probes = Vec::new();
    while slow.iter().any(|t| !t.is_finished()) {
        let user = format!("probe{}", probes.len());
        let t0 = Instant::now();
        let mut s = app.subscribe(&user).await;
        let id = app.publish_n(&user, 1).await;
        assert_eq!(s.next_message().await.0, id);
        probes.push(t0.elapsed());
        drop(s);
        if probes.len() >= 2000 {
            break;
        }
    }
    let rss_peak = proc_status_kib(app.pid(), "VmHWM");

    let mut closed = Vec::new();
    for t in slow {
        let o = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("slowloris: {e}"));
        let text = String::from_utf8_lossy(&o.received).into_owned();
        assert!(
            o.received.is_empty() || text.starts_with("HTTP/1.1 408"),
            "a slow request head was answered with something else than 408: {text:?}"
        );
        assert!(
            o.closed_after <= Duration::from_millis(6500),
            "a slowloris connection stayed open {:?} (sent {} bytes); client_request_timeout is 5 s",
            o.closed_after,
            o.sent
        );
        closed.push((o.closed_after, o.sent, o.received.is_empty()));
    }
    let max_probe = probes.iter().max().copied().unwrap_or_default();
    let first = closed.iter().map(|c| c.0).min().unwrap();
    let last = closed.iter().map(|c| c.0).max().unwrap();
    let silent = closed.iter().filter(|c| c.2).count();
    eprintln!(
        "hardening: slowloris x{SLOW}: closed after {:.2}-{:.2} s ({} with 408, {silent} closed silently), \
         {} subscribe+publish probes meanwhile, slowest {:.0} ms; RSS start {:.1} MiB, peak {:.1} MiB",
        first.as_secs_f64(),
        last.as_secs_f64(),
        SLOW - silent,
        probes.len(),
        max_probe.as_secs_f64() * 1000.0,
        mib(rss_start),
        mib(rss_peak),
    );
    assert!(
        probes.len() >= 3,
        "only {} probes ran while the slow clients were connected",
        probes.len()
    );
    assert!(
        max_probe < Duration::from_secs(1),
        "a normal subscribe + publish + receive took {max_probe:?} during slowloris: {probes:?}"
    );
    // No slowloris request became a stream: the count falls to 0 once the
    // server has seen the last probe's stream close (it may not have yet).
    app.wait_metric("notify_connections_open", &[], |v| v == 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_from_one_client_fill_the_node_to_its_limit_and_the_rest_get_503()
{
    const FLOOD: usize = 2000;
    const LIMIT: usize = 1500;
    raise_fd_limit(4 * FLOOD as u64);
    // One slot for the probe client opened before the flood.
    let limit = (LIMIT + 1).to_string();
    let app = spawn_app_with(&[("NOTIFY_MAX_CONNECTIONS", &limit)]).await;
    let mut probe = app.subscribe("probe").await;
    round_trip(&app, "probe", &mut probe).await;
    let tokens: Vec<String> = (0..FLOOD)
        .map(|i| app.user_token(&format!("flood{i}")))
        .collect();
    let rss_start = proc_status_kib(app.pid(), "VmRSS");
    let fds_start = fd_count(app.pid());

    // The flood: one client, sequential, so "the first 1500" is exact.
    let port = app.port;
    let flood = tokio::spawn(async move {
        let mut open = Vec::new();
        let mut outcomes = Vec::new();
        for token in &tokens {
            let (mut stream, head) = raw::subscribe(port, token, DEADLINE).await;
            // A soft refusal has a length; a stream does not.
            let body = if head.header("content-length").is_none() {
                None
            } else {
                Some(raw::read_body(&mut stream, &head, DEADLINE).await)
            };
            let is_stream = body.is_none();
            outcomes.push((head, body));
            if is_stream {
                open.push(stream);
            }
        }
        (open, outcomes)
    });

    // Meanwhile: health checks and round trips for the probe client.
    let t_flood = Instant::now();
    let mut health = Vec::new();
    let mut trips = Vec::new();
    while !flood.is_finished() {
        health.push(healthz(&app).await);
        trips.push(round_trip(&app, "probe", &mut probe).await);
    }
    let flood_time = t_flood.elapsed();
    let (open, outcomes) = flood.await.unwrap();
    // And while the 1500 are held.
    for _ in 0..5 {
        health.push(healthz(&app).await);
        trips.push(round_trip(&app, "probe", &mut probe).await);
    }

    for (i, (head, body)) in outcomes.iter().enumerate() {
        if i < LIMIT {
            assert_eq!(
                head.status, 200,
                "connection #{i} of {FLOOD} was refused: {head:?}"
            );
            assert_eq!(head.header("content-type"), Some("text/event-stream"));
        } else {
            // These requests carry `Accept: text/event-stream`, as an
            // EventSource's do: past the limit they get a soft refusal
            // (a short 200 stream with `event: unavailable`, no slot held).
            assert_eq!(
                head.status, 200,
                "connection #{i} of {FLOOD} past the limit: {head:?}"
            );
            assert_eq!(head.header("content-type"), Some("text/event-stream"));
            let body = body
                .as_ref()
                .unwrap()
                .as_ref()
                .unwrap_or_else(|e| panic!("#{i}: {e}"));
            let body = String::from_utf8_lossy(body);
            assert!(
                body.starts_with("retry: ")
                    && body.ends_with(
                        "event: unavailable\ndata: {\"error\":\"node_full\",\"retryAfter\":2}\n\n"
                    ),
                "#{i}: {body:?}"
            );
        }
    }
    assert_eq!(open.len(), LIMIT);
    let m = app.metrics().await;
    assert_eq!(
        m.value("notify_connections_open", &[]),
        Some((LIMIT + 1) as f64)
    );
    assert_eq!(
        m.value("notify_users_online", &[]),
        Some((LIMIT + 1) as f64)
    );
    assert_eq!(
        m.value(
            "notify_connections_rejected_total",
            &[("reason", "node_limit")]
        ),
        Some((FLOOD - LIMIT) as f64)
    );
    // A normal client arriving now is told at once to come back later.
    let t0 = Instant::now();
    let resp = app.subscribe_response("latecomer").await;
    assert_error(resp, 503, "node_full").await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    let rss_full = proc_status_kib(app.pid(), "VmRSS");
    let fds_full = fd_count(app.pid());

    // The flood leaves: everything it held is freed.
    drop(open);
    app.wait_metric("notify_connections_open", &[], |v| v == 1.0)
        .await;
    app.wait_metric("notify_users_online", &[], |v| v == 1.0)
        .await;
    let fds_end = wait_until("the server's descriptors back to the start", || async {
        let n = fd_count(app.pid());
        (n <= fds_start).then_some(n)
    })
    .await;
    let mut again = app.subscribe("latecomer").await;
    round_trip(&app, "latecomer", &mut again).await;
    let rss_peak = proc_status_kib(app.pid(), "VmHWM");
    let rss_end = proc_status_kib(app.pid(), "VmRSS");

    let max_health = health.iter().max().copied().unwrap();
    let max_trip = trips.iter().max().copied().unwrap();
    eprintln!(
        "hardening: {FLOOD} connections from one client (limit {LIMIT}+1 probe) in {:.2} s: \
         {LIMIT} x 200, {} x 503 node_full; {} probes meanwhile, slowest /healthz {:.0} ms, \
         slowest publish->receive {:.0} ms; server fds {fds_start} -> {fds_full} -> {fds_end}; \
         RSS start {:.1} MiB, with {LIMIT} streams {:.1} MiB, peak {:.1} MiB, after they left {:.1} MiB",
        flood_time.as_secs_f64(),
        FLOOD - LIMIT,
        trips.len(),
        max_health.as_secs_f64() * 1000.0,
        max_trip.as_secs_f64() * 1000.0,
        mib(rss_start),
        mib(rss_full),
        mib(rss_peak),
        mib(rss_end),
    );
    assert!(
        max_health < Duration::from_secs(1) && max_trip < Duration::from_secs(1),
        "the node was slow for others during the flood: /healthz {health:?}, round trips {trips:?}"
    );
    assert!(
        rss_peak.saturating_sub(rss_start) < 128 * 1024,
        "RSS grew from {rss_start} KiB to a peak of {rss_peak} KiB for {LIMIT} streams"
    );
}

#[tokio::test]
async fn five_hundred_fast_reconnects_leak_no_stream_user_descriptor_or_memory() {
    const LOOPS: usize = 500;
    let app = spawn_app().await;
    let token = app.user_token("looper");
    // Warm-up: one full cycle so that lazily built state exists before the baseline.
    {
        let (mut s, head) = raw::subscribe(app.port, &token, DEADLINE).await;
        assert_eq!(head.status, 200);
        raw::read_start_frame(&mut s, &head, DEADLINE)
            .await
            .unwrap();
    }
    app.wait_metric("notify_connections_open", &[], |v| v == 0.0)
        .await;
    app.wait_metric("notify_users_online", &[], |v| v == 0.0)
        .await;
    let fds_start = fd_count(app.pid());
    let rss_start = proc_status_kib(app.pid(), "VmRSS");

    let t0 = Instant::now();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut refusals = Vec::new();
    for i in 0..LOOPS {
        let (mut s, head) = raw::subscribe(app.port, &token, DEADLINE).await;
        *statuses.entry(head.status).or_default() += 1;
        if head.status == 200 {
            raw::read_start_frame(&mut s, &head, DEADLINE)
                .await
                .unwrap_or_else(|e| panic!("reconnect #{i}: {e}"));
        } else {
            let body = raw::read_body(&mut s, &head, DEADLINE).await;
            refusals.push((
                i,
                head.status,
                head.header("retry-after").map(str::to_string),
                body,
            ));
        }
        // Dropping the socket closes it: the next loop reconnects at once.
    }
    let loop_time = t0.elapsed();

    app.wait_metric("notify_connections_open", &[], |v| v == 0.0)
        .await;
    app.wait_metric("notify_users_online", &[], |v| v == 0.0)
        .await;
    let fds_end = wait_until("the server's descriptors back to the start", || async {
        let n = fd_count(app.pid());
        (n <= fds_start).then_some(n)
    })
    .await;
    let rss_end = proc_status_kib(app.pid(), "VmRSS");
    let rss_peak = proc_status_kib(app.pid(), "VmHWM");
    let accepted = statuses.get(&200).copied().unwrap_or(0);
    eprintln!(
        "hardening: {LOOPS} reconnects of one user in {:.2} s ({:.1} ms each): statuses {statuses:?}; \
         server fds {fds_start} -> {fds_end}; RSS start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB",
        loop_time.as_secs_f64(),
        loop_time.as_secs_f64() * 1000.0 / LOOPS as f64,
        mib(rss_start),
        mib(rss_peak),
        mib(rss_end),
    );

    assert!(
        refusals.is_empty(),
        "a reconnect of a user with no other stream open was refused (the previous, closed \
         streams were still counted): {refusals:?}"
    );
    assert_eq!(accepted, LOOPS);
    assert_eq!(
        app.metrics().await.value("notify_connections_total", &[]),
        Some((LOOPS + 1) as f64)
    );
    assert!(
        rss_end <= rss_start + 20 * 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB over {LOOPS} reconnects"
    );
    // The user is not wedged: a new stream still receives.
    let mut s = app.subscribe("looper").await;
    app.publish_n_expecting(&mut s, "looper", 1).await;
}
