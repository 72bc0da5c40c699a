//! A producer may put any bytes nats-server accepts into a header value,
//! including a bare carriage return; the stream stores the message and
//! republishes it, header and all, to the node. The node's NATS client must
//! read it like any other (it used to panic on it, which silently ended live
//! delivery on that connection): the notification is delivered, and so is
//! every one after it.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::note;
use crate::support::{new_secret, start_node, users, Nats, NatsClient, USER_SUBJECT};

/// Publishes `payload` to `subject` with `headers` over the NATS protocol
/// itself (the client library refuses such a header value), as the test
/// producer, and waits for the server's PONG so it has been processed.
async fn raw_hpub(port: u16, subject: &str, headers: &str, payload: &str) {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to NATS");
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).await.expect("INFO");
    assert!(line.starts_with("INFO "), "{line}");
    let who = &users().producer;
    let connect = serde_json::json!({
        "verbose": false, "pedantic": false, "headers": true, "protocol": 1,
        "user": who.user, "pass": who.password,
    });
    let block = format!("NATS/1.0\r\n{headers}\r\n\r\n");
    let frame = format!(
        "CONNECT {connect}\r\nHPUB {subject} {} {}\r\n{block}{payload}\r\nPING\r\n",
        block.len(),
        block.len() + payload.len()
    );
    stream
        .get_mut()
        .write_all(frame.as_bytes())
        .await
        .expect("write to NATS");
    line.clear();
    stream.read_line(&mut line).await.expect("NATS answers");
    assert_eq!(line, "PONG\r\n", "the server took the message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_value_with_a_bare_carriage_return_is_delivered_and_live_delivery_goes_on() {
    let nats = Nats::single().await;
    let node = start_node(&new_secret(), &nats.urls(), 1, &[]).await;
    let mut stream = node.subscribe("u1").await;
    let first = node.publish_n_expecting(&mut stream, "u1", 1).await;

    let subject = format!("{USER_SUBJECT}.u1");
    let odd = note(2).to_string();
    raw_hpub(
        nats.servers[0].port,
        &subject,
        "Nats-Msg-Id: odd-1\r\nX-Odd: a\rb",
        &odd,
    )
    .await;
    let (id, data) = stream.next_message().await;
    assert_eq!(
        (id, data),
        (first + 1, odd),
        "the odd message, live, with the stream's next sequence"
    );

    let producer = NatsClient::connect(nats.servers[0].port).await;
    let after = producer
        .js_publish_acked(&subject, "after-odd", note(3).to_string().as_bytes())
        .await;
    assert_eq!(
        stream.next_message().await,
        (after, note(3).to_string()),
        "the next notification, live"
    );
}
