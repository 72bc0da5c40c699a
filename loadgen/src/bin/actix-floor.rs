//! The stack's floor: the least an actix-web server can do for the job the
//! gateway and nginx + nchan do in `bench/compare-nchan`, so a run of all
//! three shows how much of a gap to nchan is the stack's and how much the
//! gateway's (`bench/stack-floor`).
//!
//! nchan's API, so the load generator's `--flavor nchan` drives it:
//! `GET /sub/<user>` opens an event stream, `POST /pub/<user>` sends the
//! body as one `data:` event to every open stream of that user. Nothing
//! else: no token, no history, no actor, no limits, no metrics — the same
//! crates (actix-web, actix-http and actix-server with the gateway's
//! patches, tokio, jemalloc) on one worker.
//!
//!   actix-floor [LISTEN]   (default 127.0.0.1:0; prints `listening on <addr>`)

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The open streams, by user.
#[derive(Default)]
struct Streams {
    by_user: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// An event stream's body: whatever its sender queues.
struct StreamBody(mpsc::UnboundedReceiver<Bytes>);

impl MessageBody for StreamBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

async fn subscribe(user: web::Path<String>, streams: web::Data<Streams>) -> HttpResponse {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut by_user = streams.by_user.lock().unwrap_or_else(|p| p.into_inner());
    by_user.entry(user.into_inner()).or_default().push(tx);
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .body(StreamBody(rx))
}

async fn publish(
    user: web::Path<String>,
    body: Bytes,
    streams: web::Data<Streams>,
) -> HttpResponse {
    let id = streams
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut frame = BytesMut::with_capacity(body.len() + 32);
    frame.put_slice(format!("id: {id}\ndata: ").as_bytes());
    frame.put_slice(&body);
    frame.put_slice(b"\n\n");
    let frame = frame.freeze();
    let mut by_user = streams.by_user.lock().unwrap_or_else(|p| p.into_inner());
    let delivered = match by_user.get_mut(user.as_str()) {
        Some(senders) => {
            senders.retain(|tx| tx.send(frame.clone()).is_ok());
            senders.len()
        }
        None => 0,
    };
    HttpResponse::Created().body(format!("{{\"subscribers\":{delivered}}}"))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let streams = web::Data::new(Streams::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(streams.clone())
            .route("/sub/{user}", web::get().to(subscribe))
            .route("/pub/{user}", web::post().to(publish))
    })
    .workers(1)
    .backlog(4096)
    .max_connections(100_000)
    .disable_signals()
    .bind(listen)?;
    for addr in server.addrs() {
        println!("listening on {addr}");
    }
    server.run().await
}
