//! A Server-Sent Events client over `reqwest`. The blocks are decoded by
//! `sse-stream`, which also returns the blocks a browser does not dispatch
//! (an id-only start frame, a lone `retry:`); this module adds what a
//! browser keeps across blocks (the last event id, the event type default).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures_util::{FutureExt, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
use sse_stream::{Sse, SseByteStream};

use crate::{parse_id, DEADLINE};

/// One event a browser would dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` when the block had no `event:` field).
    pub event: String,
    /// The last event id at dispatch (carried over from earlier blocks).
    pub id: String,
    /// Whether this block itself had an `id:` field.
    pub had_id: bool,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The id as a number; panics unless this block carried a decimal id.
    pub fn id_num(&self) -> u64 {
        assert!(self.had_id, "event carries no id field: {self:?}");
        parse_id(&self.id)
    }

    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// What a stream yields, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A `retry:` field, as sent.
    Retry(String),
    /// A block with an `id:` field and no data: updates the last event id
    /// without dispatching an event.
    IdOnly(String),
    /// A dispatched event.
    Event(SseEvent),
    /// A comment line; `text` is everything after the `:`.
    Comment { text: String, at: Instant },
}

/// An incremental `text/event-stream` decoder: bytes in, items out.
pub struct SseParser {
    input: UnboundedSender<Result<Bytes, Infallible>>,
    blocks: SseByteStream<UnboundedReceiver<Result<Bytes, Infallible>>>,
    comments: CommentLines,
    /// The last event id buffer.
    pub last_event_id: String,
    /// The last `retry:` value as sent.
    pub retry: Option<String>,
}

impl Default for SseParser {
    fn default() -> Self {
        let (input, rx) = unbounded();
        SseParser {
            input,
            blocks: SseByteStream::new(rx),
            comments: CommentLines::default(),
            last_event_id: String::new(),
            retry: None,
        }
    }
}

impl SseParser {
    /// Feeds bytes; returns what they completed. Comments come first: a
    /// keep-alive arrives on its own, so its place among blocks of the same
    /// read does not matter. Panics on a stream that is not valid SSE.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseItem> {
        let at = Instant::now();
        let mut out: Vec<SseItem> = self
            .comments
            .feed(bytes)
            .into_iter()
            .map(|text| SseItem::Comment { text, at })
            .collect();
        self.input
            .unbounded_send(Ok(Bytes::copy_from_slice(bytes)))
            .expect("the decoder holds the receiver");
        // The channel is never closed, so a block the bytes do not complete
        // shows as `Pending`: everything fed is decoded by then.
        while let Some(next) = self.blocks.next().now_or_never() {
            match next {
                Some(Ok(block)) => self.push_block(block, &mut out),
                Some(Err(e)) => panic!("the stream is not valid SSE: {e}"),
                None => break,
            }
        }
        out
    }

    fn push_block(&mut self, block: Sse, out: &mut Vec<SseItem>) {
        if let Some(retry) = block.retry {
            self.retry = Some(retry.to_string());
            out.push(SseItem::Retry(retry.to_string()));
        }
        if let Some(id) = &block.id {
            self.last_event_id = id.clone();
        }
        match block.data {
            Some(data) => out.push(SseItem::Event(SseEvent {
                event: block
                    .event
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "message".to_string()),
                id: self.last_event_id.clone(),
                had_id: block.id.is_some(),
                data,
            })),
            None => {
                if let Some(id) = block.id {
                    out.push(SseItem::IdOnly(id));
                }
            }
        }
    }
}

/// Picks the comment lines out of the bytes: `sse-stream` skips comments,
/// and the keep-alive tests need each one with its arrival time.
#[derive(Debug)]
struct CommentLines {
    at_line_start: bool,
    after_cr: bool,
    comment: Option<Vec<u8>>,
}

impl Default for CommentLines {
    fn default() -> Self {
        CommentLines {
            at_line_start: true,
            after_cr: false,
            comment: None,
        }
    }
}

impl CommentLines {
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue; // the LF of a CRLF
            }
            if b == b'\n' || b == b'\r' {
                if let Some(line) = self.comment.take() {
                    out.push(String::from_utf8_lossy(&line).into_owned());
                }
                self.at_line_start = true;
                self.after_cr = b == b'\r';
                continue;
            }
            if std::mem::take(&mut self.at_line_start) && b == b':' {
                self.comment = Some(Vec::new());
            } else if let Some(line) = &mut self.comment {
                line.push(b);
            }
        }
        out
    }
}

/// A live Server-Sent Events response. Dropping it disconnects.
pub struct SseStream {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The first bytes of the body exactly as received (up to 64 KiB).
    pub raw: Vec<u8>,
    /// The start frame's id, once `expect_start` has read it.
    pub start_id: Option<u64>,
    resp: Option<Response>,
    parser: SseParser,
    queue: VecDeque<SseItem>,
    eof: bool,
}

impl SseStream {
    /// Sends `req` and wraps the response, whatever its status.
    pub async fn open(req: RequestBuilder) -> SseStream {
        let resp = tokio::time::timeout(DEADLINE, req.send())
            .await
            .expect("subscribe response headers within the deadline")
            .expect("subscribe request");
        SseStream {
            status: resp.status(),
            headers: resp.headers().clone(),
            raw: Vec::new(),
            start_id: None,
            resp: Some(resp),
            parser: SseParser::default(),
            queue: VecDeque::new(),
            eof: false,
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    }

    /// The raw `retry:` value, if one was read.
    pub fn retry(&self) -> Option<&str> {
        self.parser.retry.as_deref()
    }

    /// The last event id as the browser would record it.
    pub fn last_event_id(&self) -> &str {
        &self.parser.last_event_id
    }

    /// Reads the rest of a (non-stream) body as text.
    pub async fn body_text(&mut self) -> String {
        match self.resp.take() {
            Some(r) => r.text().await.unwrap_or_default(),
            None => String::new(),
        }
    }

    /// The next item within `limit`: `Ok(None)` at a clean end of stream,
    /// `Err` on a timeout or a broken body.
    pub async fn try_next_item(&mut self, limit: Duration) -> Result<Option<SseItem>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(Some(item));
            }
            if self.eof {
                return Ok(None);
            }
            let resp = self.resp.as_mut().expect("stream body already consumed");
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Err(_) => return Err(format!("no SSE item within {limit:?}")),
                Ok(Err(e)) => return Err(format!("stream broke: {e:?}")),
                Ok(Ok(None)) => self.eof = true,
                Ok(Ok(Some(chunk))) => {
                    let room = (64 * 1024usize).saturating_sub(self.raw.len());
                    self.raw.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    let items = self.parser.feed(&chunk);
                    self.queue.extend(items);
                }
            }
        }
    }

    /// The next item (`None` at a clean end of stream); panics on a
    /// timeout or a broken stream.
    pub async fn next_item(&mut self) -> Option<SseItem> {
        self.try_next_item(DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads the `retry:` field and the id-only start frame (comments may
    /// come first); returns the start id.
    pub async fn expect_start(&mut self) -> u64 {
        let mut saw_retry = false;
        loop {
            match self.next_item().await {
                Some(SseItem::Retry(_)) => saw_retry = true,
                Some(SseItem::Comment { .. }) => {}
                Some(SseItem::IdOnly(id)) => {
                    assert!(saw_retry, "start frame came before any retry: field");
                    let n = parse_id(&id);
                    self.start_id = Some(n);
                    return n;
                }
                other => panic!("expected the id-only start frame, got {other:?}"),
            }
        }
    }

    /// The next dispatched event, skipping comments and `retry:`; panics at
    /// EOF, on an id-only frame, or after the deadline.
    pub async fn next_event(&mut self) -> SseEvent {
        self.next_event_within(DEADLINE).await
    }

    /// Like `next_event` with an explicit limit.
    pub async fn next_event_within(&mut self, limit: Duration) -> SseEvent {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next_item(left).await {
                Ok(Some(SseItem::Event(e))) => return e,
                Ok(Some(SseItem::Comment { .. })) | Ok(Some(SseItem::Retry(_))) => {}
                Ok(Some(SseItem::IdOnly(id))) => panic!("unexpected id-only frame {id:?}"),
                Ok(None) => panic!("stream ended while waiting for an event"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The next `message` event; returns (id, data).
    pub async fn next_message(&mut self) -> (u64, String) {
        let e = self.next_event().await;
        assert_eq!(e.event, "message", "expected a message event, got {e:?}");
        (e.id_num(), e.data)
    }

    /// Reads `n` message events; returns their ids.
    pub async fn message_ids(&mut self, n: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.next_message().await.0);
        }
        ids
    }

    /// Expects a clean end of stream within `limit`, skipping comments;
    /// panics on an event, a broken body or a timeout.
    pub async fn expect_eof(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next_item(left).await {
                Ok(None) => return,
                Ok(Some(SseItem::Comment { .. })) => {}
                Ok(Some(other)) => panic!("expected end of stream, got {other:?}"),
                Err(e) => panic!("expected a clean end of stream: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one after another: the parser, and every item.
    fn feed(chunks: &[&[u8]]) -> (SseParser, Vec<SseItem>) {
        let mut p = SseParser::default();
        let items = chunks.iter().flat_map(|c| p.feed(c)).collect();
        (p, items)
    }

    /// The events as (type, last id, whether the block had an id, data).
    fn events(items: &[SseItem]) -> Vec<(&str, &str, bool, &str)> {
        items
            .iter()
            .filter_map(|i| match i {
                SseItem::Event(e) => {
                    Some((e.event.as_str(), e.id.as_str(), e.had_id, e.data.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    fn is_comment(item: &SseItem, want: &str) -> bool {
        matches!(item, SseItem::Comment { text, .. } if text == want)
    }

    #[test]
    fn the_parser_accepts_every_line_ending_and_joins_data_lines() {
        let (_, items) =
            feed(&[b"retry: 1500\r\n\r\nid: 7\rdata: a\ndata:b\r\n\nevent: reset\ndata: x\n\n"]);
        assert_eq!(items[0], SseItem::Retry("1500".into()));
        assert_eq!(
            events(&items),
            [("message", "7", true, "a\nb"), ("reset", "7", false, "x")]
        );
    }

    #[test]
    fn the_parser_reports_id_only_frames_and_comments_without_dispatching() {
        let (p, items) = feed(&[b": keep-alive\n\nid: 42\n\nevent: x\n\n"]);
        assert!(is_comment(&items[0], " keep-alive"));
        assert_eq!(items[1], SseItem::IdOnly("42".into()));
        assert_eq!(items.len(), 2);
        assert_eq!(p.last_event_id, "42");
    }

    #[test]
    fn the_parser_handles_a_crlf_split_across_chunks_and_ignores_ids_with_nul() {
        let (_, items) = feed(&[
            b"id: 1\r",
            b"\ndata: one\r",
            b"\n\r\nid: 2\0\ndata: two\n\n",
        ]);
        assert_eq!(
            events(&items),
            [
                ("message", "1", true, "one"),
                ("message", "1", false, "two")
            ],
            "{items:?}"
        );
    }

    #[test]
    fn a_comment_split_across_chunks_is_one_comment_and_a_colon_inside_a_line_is_none() {
        let (_, items) = feed(&[b": keep", b"-alive\r\ndata: a:b\n\n"]);
        assert!(is_comment(&items[0], " keep-alive"));
        assert_eq!(events(&items), [("message", "", false, "a:b")]);
        assert_eq!(items.len(), 2, "{items:?}");
    }
}
