//! The open-files limit (docs/protocol.md §3 "Open files"): the node raises
//! its soft `RLIMIT_NOFILE` to the hard limit at start-up, and when
//! `NOTIFY_MAX_CONNECTIONS` does not fit under it (256 descriptors kept
//! for everything but streams) it lowers its maximum, says so once, and
//! shows it in `notify_connections_max`. The binary is started through
//! `prlimit` (util-linux) with a soft limit of 1024, a container runtime's
//! usual default.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Descriptors the node keeps for everything but streams.
const RESERVED: u64 = 256;

/// Raises this test process's own soft open-files limit to its hard limit:
/// it holds one socket per stream too.
fn raise_own_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= needed,
        "this test needs {needed} open files; the hard limit is {}",
        limit.rlim_cur
    );
}

/// Opens one stream with a bare socket and reads its response head; the
/// socket is returned open (the stream stays held). `Err` carries the head.
async fn open_stream(port: u16, token: &str) -> Result<TcpStream, String> {
    let mut socket = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request =
        format!("GET {SUBSCRIBE}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    socket
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 || head.len() > 16 * 1024 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(socket)
    } else {
        Err(head)
    }
}

/// Opens `n` streams of `user`, 200 at a time, within a minute.
async fn open_streams(app: &TestApp, user: &str, n: usize) -> Vec<TcpStream> {
    let token = app.user_token(user);
    let opening = async {
        let mut streams = Vec::with_capacity(n);
        while streams.len() < n {
            let batch = (n - streams.len()).min(200);
            for result in join_all((0..batch).map(|_| open_stream(app.port, &token))).await {
                streams.push(result.unwrap_or_else(|head| panic!("stream refused: {head}")));
            }
        }
        streams
    };
    tokio::time::timeout(Duration::from_secs(60), opening)
        .await
        .expect("the streams opened within a minute")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_soft_limit_of_1024_the_node_raises_it_and_holds_5000_streams() {
    raise_own_limit(5_000 + 256);
    let secret = random_hex(48);
    let mut app = spawn_app_under(
        &["prlimit", "--nofile=1024:20000", "--"],
        &[
            ("NOTIFY_JWT_SECRET", &secret),
            ("NOTIFY_MAX_CONNECTIONS_PER_USER", "5000"),
        ],
    )
    .await;
    app.secret = secret;

    // prlimit execs the server: same process, its soft limit now raised.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", app.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        open_files.as_deref().map(|f| &f[3..5]),
        Some(&["20000", "20000"][..]),
        "soft and hard open-files limits of the server"
    );

    let streams = open_streams(&app, "u1", 5_000).await;

    let m = app.metrics().await;
    assert_eq!(m.value("notify_connections_open", &[]), Some(5_000.0));
    assert_eq!(
        m.value("notify_connections_max", &[]),
        Some((20_000 - RESERVED) as f64),
        "the default of 100000 lowered to what the raised limit holds"
    );
    drop(streams);
    app.wait_metric("notify_connections_open", &[], |v| v == 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_hard_limit_of_2000_the_maximum_is_lowered_logged_and_enforced() {
    const EFFECTIVE: u64 = 2_000 - RESERVED;
    raise_own_limit(EFFECTIVE + 256);
    let secret = random_hex(48);
    let mut app = spawn_app_under(
        &["prlimit", "--nofile=1024:2000", "--"],
        &[
            ("NOTIFY_JWT_SECRET", &secret),
            ("NOTIFY_MAX_CONNECTIONS", "5000"),
            ("NOTIFY_MAX_CONNECTIONS_PER_USER", "5000"),
        ],
    )
    .await;
    app.secret = secret;

    let m = app.metrics().await;
    assert_eq!(
        m.value("notify_connections_max", &[]),
        Some(EFFECTIVE as f64)
    );
    let logged = wait_until("the lowered maximum is logged", || async {
        let stderr = app.stderr();
        stderr
            .lines()
            .find(|l| {
                l.contains("NOTIFY_MAX_CONNECTIONS=5000") && l.contains(&EFFECTIVE.to_string())
            })
            .map(str::to_owned)
    })
    .await;
    assert!(logged.contains("WARN"), "a warning: {logged}");

    let streams = open_streams(&app, "u1", EFFECTIVE as usize).await;
    let resp = app
        .subscribe_request(&app.user_token("u2"))
        .send()
        .await
        .expect("the node still answers at its limit");
    assert_error(resp, 503, "node_full").await;
    assert_eq!(
        app.metrics().await.value("notify_connections_open", &[]),
        Some(EFFECTIVE as f64)
    );
    let warnings = app
        .stderr()
        .lines()
        .filter(|l| l.contains("does not fit under the open-files limit"))
        .count();
    assert_eq!(warnings, 1, "logged once");
    drop(streams);
}
