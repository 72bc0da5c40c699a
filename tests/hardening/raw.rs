//! Raw HTTP/1.1 over TCP, for the clients an HTTP library will not be:
//! slow ones, thousands at once, and tight reconnect loops.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{SseItem, SseParser, SUBSCRIBE};

/// A response head read off a raw socket.
#[derive(Debug)]
pub struct RawHead {
    /// The status code.
    pub status: u16,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    /// Bytes of the body that arrived with the head.
    pub rest: Vec<u8>,
}

impl RawHead {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Connects to the server on loopback.
pub async fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream.set_nodelay(true).unwrap();
    stream
}

/// `GET /api/notifications/subscribe?token=…` as raw bytes.
pub fn subscribe_request(port: u16, token: &str) -> Vec<u8> {
    format!(
        "GET {SUBSCRIBE}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .into_bytes()
}

/// Reads a response head (up to the blank line) within `limit`.
pub async fn read_head(stream: &mut TcpStream, limit: Duration) -> Result<RawHead, String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err("response head longer than 64 KiB".into());
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(format!("no complete response head within {limit:?}")),
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Ok(Ok(0)) => {
                return Err(format!(
                    "connection closed before a complete head: {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(RawHead {
        status,
        headers,
        rest: buf[end + 4..].to_vec(),
    })
}

/// Reads the rest of a `Content-Length` body within `limit`.
pub async fn read_body(
    stream: &mut TcpStream,
    head: &RawHead,
    limit: Duration,
) -> Result<Vec<u8>, String> {
    let len: usize = head
        .header("content-length")
        .ok_or("no content-length")?
        .parse()
        .map_err(|e| format!("bad content-length: {e}"))?;
    let mut body = head.rest.clone();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while body.len() < len {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(format!("body incomplete after {limit:?}")),
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Ok(Ok(0)) => return Err("connection closed inside the body".into()),
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    Ok(body)
}

/// Sends a subscribe for `token` on a new connection and reads the head.
pub async fn subscribe(port: u16, token: &str, limit: Duration) -> (TcpStream, RawHead) {
    let mut stream = connect(port).await;
    stream
        .write_all(&subscribe_request(port, token))
        .await
        .expect("write the subscribe request");
    let head = read_head(&mut stream, limit)
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    (stream, head)
}

/// Decodes an HTTP/1.1 chunked body incrementally.
#[derive(Default)]
pub struct Dechunker {
    buf: Vec<u8>,
    /// Bytes still to pass through in the current chunk.
    left: usize,
    /// The CRLF after a chunk's data is still to be skipped.
    crlf: bool,
    /// The last chunk has been seen.
    pub done: bool,
}

impl Dechunker {
    /// Feeds raw bytes; returns the body bytes they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            if self.left > 0 {
                let n = self.left.min(self.buf.len());
                out.extend(self.buf.drain(..n));
                self.left -= n;
                if self.left > 0 {
                    return out;
                }
                self.crlf = true;
            }
            if self.crlf {
                if self.buf.len() < 2 {
                    return out;
                }
                assert_eq!(&self.buf[..2], b"\r\n", "chunk not followed by CRLF");
                self.buf.drain(..2);
                self.crlf = false;
            }
            if self.done {
                return out;
            }
            let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                return out;
            };
            let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            self.buf.drain(..i + 2);
            if size == 0 {
                self.done = true;
                self.crlf = true;
            } else {
                self.left = size;
            }
        }
    }
}

/// Reads a raw 200 stream until its id-only start frame; returns the id.
pub async fn read_start_frame(
    stream: &mut TcpStream,
    head: &RawHead,
    limit: Duration,
) -> Result<String, String> {
    let mut dechunk = Dechunker::default();
    let mut parser = SseParser::default();
    let mut pending = head.rest.clone();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        for item in parser.feed(&dechunk.feed(&pending)) {
            match item {
                SseItem::IdOnly(id) => return Ok(id),
                SseItem::Retry(_) | SseItem::Comment { .. } => {}
                other => return Err(format!("expected the start frame, got {other:?}")),
            }
        }
        pending.clear();
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(format!("no start frame within {limit:?}")),
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Ok(Ok(0)) => return Err("stream closed before its start frame".into()),
            Ok(Ok(n)) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod dechunker_tests {
    use super::Dechunker;

    #[test]
    fn the_dechunker_joins_chunks_split_anywhere() {
        let wire = b"5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunker::default();
            let mut out = d.feed(&wire[..split]);
            out.extend(d.feed(&wire[split..]));
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(d.done);
        }
    }
}
