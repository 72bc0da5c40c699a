//! A producer may put any bytes nats-server accepts into a header value,
//! including a bare carriage return; the stream stores the message and
//! republishes it, header and all, to the node. The node's NATS client must
//! read it like any other (it used to panic on it, which silently ended live
//! delivery on that connection): the notification is delivered, and so is
//! every one after it.

use crate::helpers::note;
use crate::support::{
    nats::raw_session, new_secret, start_node, users, Nats, NatsClient, USER_SUBJECT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_value_with_a_bare_carriage_return_is_delivered_and_live_delivery_goes_on() {
    let nats = Nats::single().await;
    let node = start_node(&new_secret(), &nats.urls(), 1, &[]).await;
    let mut stream = node.subscribe("u1").await;
    let first = node.publish_n_expecting(&mut stream, "u1", 1).await;

    // Over the NATS protocol itself: the client library refuses such a value.
    let subject = format!("{USER_SUBJECT}.u1");
    let odd = note(2).to_string();
    let block = "NATS/1.0\r\nNats-Msg-Id: odd-1\r\nX-Odd: a\rb\r\n\r\n";
    let hpub = format!(
        "HPUB {subject} {} {}\r\n{block}{odd}\r\n",
        block.len(),
        block.len() + odd.len()
    );
    let port = nats.servers[0].port;
    let account = &users().producer;
    let credentials = (account.user.clone(), account.password.clone());
    let refusals = tokio::task::spawn_blocking(move || {
        raw_session(port, Some((&credentials.0, &credentials.1)), &hpub)
    })
    .await
    .expect("the raw session");
    assert_eq!(refusals, "", "the server took the message");
    let (id, data) = stream.next_message().await;
    assert_eq!(
        (id, data),
        (first + 1, odd),
        "the odd message, live, with the stream's next sequence"
    );

    let producer = NatsClient::connect(port).await;
    let next = note(3).to_string();
    let after = producer
        .js_publish_acked(&subject, "after-odd", next.as_bytes())
        .await;
    assert_eq!(
        stream.next_message().await,
        (after, next),
        "the next notification, live"
    );
}
