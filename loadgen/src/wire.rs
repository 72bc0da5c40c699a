//! Incremental wire parsers of the load generator: the HTTP/1.1 chunked
//! transfer coding (RFC 9112 §7.1) and the `text/event-stream` format as the
//! WHATWG HTML standard specifies it (§9.2.6 "Interpreting an event stream").
//!
//! Both take input in whatever pieces the socket hands out: a chunk size, a
//! CRLF or a multi-byte UTF-8 character may be split anywhere.

/// A malformed chunked body.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk-size line without hex digits, or an absurdly large size.
    BadSize,
    /// Chunk data not followed by CRLF.
    BadDelimiter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex chunk size (`digits` read so far).
    Size { value: u64, digits: u8 },
    /// Skipping a chunk extension up to the end of the size line.
    Extension { value: u64 },
    /// Saw CR at the end of the size line.
    SizeLf { value: u64 },
    /// Copying chunk data; bytes left.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Reading trailer lines after the last (zero) chunk.
    Trailer { line_empty: bool },
    /// The body is complete.
    Done,
}

/// Decodes `Transfer-Encoding: chunked`.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    /// The terminating zero-size chunk and the trailer have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Appends the payload bytes found in `input` to `out`. Bytes after the
    /// end of the body are ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                ChunkState::Size { value, digits } => match hex(b) {
                    Some(d) => {
                        if digits >= 15 {
                            return Err(ChunkedError::BadSize);
                        }
                        ChunkState::Size {
                            value: value * 16 + u64::from(d),
                            digits: digits + 1,
                        }
                    }
                    None if digits == 0 => return Err(ChunkedError::BadSize),
                    None => match b {
                        b'\r' => ChunkState::SizeLf { value },
                        b'\n' => size_line_done(value),
                        _ => ChunkState::Extension { value },
                    },
                },
                ChunkState::Extension { value } => match b {
                    b'\r' => ChunkState::SizeLf { value },
                    b'\n' => size_line_done(value),
                    _ => ChunkState::Extension { value },
                },
                ChunkState::SizeLf { value } => {
                    if b != b'\n' {
                        return Err(ChunkedError::BadSize);
                    }
                    size_line_done(value)
                }
                ChunkState::Data(left) => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => ChunkState::DataLf,
                    b'\n' => ChunkState::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err(ChunkedError::BadDelimiter),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::BadDelimiter);
                    }
                    ChunkState::Size {
                        value: 0,
                        digits: 0,
                    }
                }
                ChunkState::Trailer { line_empty } => match b {
                    b'\n' if line_empty => ChunkState::Done,
                    b'\n' => ChunkState::Trailer { line_empty: true },
                    b'\r' => ChunkState::Trailer { line_empty },
                    _ => ChunkState::Trailer { line_empty: false },
                },
                ChunkState::Done => return Ok(()),
            };
            i += 1;
        }
        Ok(())
    }
}

fn size_line_done(value: u64) -> ChunkState {
    if value == 0 {
        ChunkState::Trailer { line_empty: true }
    } else {
        ChunkState::Data(value)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The event type (`message` unless an `event:` field named one).
    pub event: &'a str,
    /// The data buffer, without its final LF.
    pub data: &'a str,
    /// The last event ID string at dispatch time.
    pub last_event_id: &'a str,
}

/// The event-stream interpreter of one EventSource connection.
///
/// Keep [`SseParser::last_event_id`] and [`SseParser::retry`] across
/// reconnects (they belong to the EventSource, not the connection): build
/// the next connection's parser with [`SseParser::resume`].
#[derive(Debug, Default, Clone)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    first_line_done: bool,
    data: String,
    event: String,
    id_buffer: String,
    /// The last event ID string (what `Last-Event-ID` carries on reconnect).
    pub last_event_id: String,
    /// The reconnection time in ms, once a valid `retry:` field was seen.
    pub retry: Option<u64>,
    /// Comment lines seen (keep-alives).
    pub comments: u64,
    /// Blank lines that dispatched nothing (e.g. id-only blocks).
    pub empty_dispatches: u64,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser for a new connection of the same EventSource.
    pub fn resume(previous: &SseParser) -> Self {
        Self {
            id_buffer: previous.last_event_id.clone(),
            last_event_id: previous.last_event_id.clone(),
            retry: previous.retry,
            ..Self::default()
        }
    }

    /// Interprets `input`, calling `on_event` for every dispatched event.
    pub fn feed(&mut self, mut input: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        while !input.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if input[0] == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            match input.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.line.extend_from_slice(input);
                    return;
                }
                Some(end) => {
                    if self.line.is_empty() {
                        self.process_line(&input[..end], on_event);
                    } else {
                        self.line.extend_from_slice(&input[..end]);
                        let line = std::mem::take(&mut self.line);
                        self.process_line(&line, on_event);
                        self.line = line;
                        self.line.clear();
                    }
                    self.after_cr = input[end] == b'\r';
                    input = &input[end + 1..];
                }
            }
        }
    }

    fn process_line(&mut self, mut line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if !self.first_line_done {
            self.first_line_done = true;
            // One leading U+FEFF BYTE ORDER MARK is skipped.
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            b"id" if !value.contains(&0) => {
                self.id_buffer.clear();
                self.id_buffer.push_str(&String::from_utf8_lossy(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .or(self.retry);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        self.last_event_id.clone_from(&self.id_buffer);
        if self.data.is_empty() {
            self.event.clear();
            self.empty_dispatches += 1;
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        on_event(SseEvent {
            event: if self.event.is_empty() {
                "message"
            } else {
                &self.event
            },
            data: &self.data,
            last_event_id: &self.last_event_id,
        });
        self.data.clear();
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Ev {
        event: String,
        data: String,
        id: String,
    }

    fn parse_in_pieces(pieces: &[&[u8]]) -> (Vec<Ev>, SseParser) {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for piece in pieces {
            parser.feed(piece, &mut |e| {
                events.push(Ev {
                    event: e.event.into(),
                    data: e.data.into(),
                    id: e.last_event_id.into(),
                })
            });
        }
        (events, parser)
    }

    fn ev(event: &str, data: &str, id: &str) -> Ev {
        Ev {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    /// Every way of splitting `input` in two gives the same events.
    fn all_splits(input: &[u8]) -> Vec<Ev> {
        let (whole, _) = parse_in_pieces(&[input]);
        for cut in 0..=input.len() {
            let (split, _) = parse_in_pieces(&[&input[..cut], &input[cut..]]);
            assert_eq!(split, whole, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_in_pieces(&bytes).0, whole, "byte by byte");
        whole
    }

    #[test]
    fn server_frames() {
        let input = b"retry: 2613\n\nid: 17\n\nid: 18\ndata: {\"a\":1}\n\n: keep-alive\n\n";
        let events = all_splits(input);
        assert_eq!(events, vec![ev("message", "{\"a\":1}", "18")]);
        let (_, parser) = parse_in_pieces(&[input]);
        assert_eq!(parser.retry, Some(2613));
        assert_eq!(parser.comments, 1);
        assert_eq!(parser.last_event_id, "18");
    }

    #[test]
    fn id_only_block_sets_last_id_without_dispatching() {
        let (events, parser) = parse_in_pieces(&[b"id: 42\n\n"]);
        assert!(events.is_empty());
        assert_eq!(parser.last_event_id, "42");
        assert_eq!(parser.empty_dispatches, 1);
        // The id sticks for later events that carry none.
        let events = all_splits(b"id: 42\n\ndata: x\n\n");
        assert_eq!(events, vec![ev("message", "x", "42")]);
    }

    #[test]
    fn line_endings_cr_lf_crlf() {
        let expected = vec![ev("message", "a\nb", "1"), ev("message", "c", "1")];
        assert_eq!(
            all_splits(b"id: 1\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"),
            expected
        );
        assert_eq!(
            all_splits(b"id: 1\rdata: a\rdata: b\r\rdata: c\r\r"),
            expected
        );
        assert_eq!(
            all_splits(b"id: 1\ndata: a\ndata: b\n\ndata: c\n\n"),
            expected
        );
        assert_eq!(
            all_splits(b"id: 1\r\ndata: a\rdata: b\n\rdata: c\n\r\n"),
            expected
        );
    }

    #[test]
    fn fields_per_spec() {
        // No space after the colon; only one leading space is stripped.
        assert_eq!(
            all_splits(b"data:x\ndata:  y\n\n"),
            vec![ev("message", "x\n y", "")]
        );
        // A field without a colon has an empty value: `data` adds an empty line.
        assert_eq!(all_splits(b"data\ndata\n\n"), vec![ev("message", "\n", "")]);
        // `event` names the type for this event only.
        assert_eq!(
            all_splits(b"event: reset\ndata: {}\n\ndata: z\n\n"),
            vec![ev("reset", "{}", ""), ev("message", "z", "")]
        );
        // Unknown fields are ignored, an event with no data is not dispatched.
        assert_eq!(all_splits(b"foo: bar\nevent: e\n\n"), vec![]);
        // An id containing NULL is ignored; an empty id resets.
        let (_, p) = parse_in_pieces(&[b"id: 5\n\nid: 6\x007\n\n"]);
        assert_eq!(p.last_event_id, "5");
        let (_, p) = parse_in_pieces(&[b"id: 5\n\nid\n\n"]);
        assert_eq!(p.last_event_id, "");
    }

    #[test]
    fn retry_only_digits() {
        let (_, p) = parse_in_pieces(&[b"retry: 100\nretry: 1x\nretry:\n\n"]);
        assert_eq!(p.retry, Some(100));
    }

    #[test]
    fn bom_and_utf8_split() {
        let input = "\u{feff}data: Ready 🛍\n\n".as_bytes();
        assert_eq!(all_splits(input), vec![ev("message", "Ready 🛍", "")]);
        // Only the first BOM of the stream is skipped.
        let (events, _) = parse_in_pieces(&["\u{feff}\n\u{feff}data: x\n\n".as_bytes()]);
        assert!(events.is_empty());
    }

    #[test]
    fn incomplete_event_is_not_dispatched() {
        let (events, _) = parse_in_pieces(&[b"data: x\n"]);
        assert!(events.is_empty());
    }

    #[test]
    fn resume_keeps_last_id_and_retry() {
        let (_, p) = parse_in_pieces(&[b"retry: 50\nid: 9\n\n"]);
        let mut next = SseParser::resume(&p);
        let mut got = Vec::new();
        next.feed(b"data: y\n\n", &mut |e| {
            got.push(e.last_event_id.to_owned())
        });
        assert_eq!(got, vec!["9"]);
        assert_eq!(next.retry, Some(50));
    }

    fn decode_in_pieces(pieces: &[&[u8]]) -> (Result<Vec<u8>, ChunkedError>, bool) {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        for p in pieces {
            if let Err(e) = d.feed(p, &mut out) {
                return (Err(e), d.is_done());
            }
        }
        (Ok(out), d.is_done())
    }

    #[test]
    fn chunked_all_splits() {
        let input = b"5\r\nhello\r\nB;ext=1\r\n, world 123\r\n0\r\nX-T: 1\r\n\r\nIGNORED";
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let (out, done) = decode_in_pieces(&[&input[..a], &input[a..b], &input[b..]]);
                assert_eq!(out.unwrap(), b"hello, world 123", "cut {a} {b}");
                assert!(done);
            }
        }
    }

    #[test]
    fn chunked_streaming_not_done() {
        let (out, done) = decode_in_pieces(&[b"d\r\nretry: 1234\n\n\r\n", b"6\r\nid: 1\n"]);
        assert_eq!(out.unwrap(), b"retry: 1234\n\nid: 1\n");
        assert!(!done);
        let (out, done) = decode_in_pieces(&[b"0\r\n\r\n"]);
        assert_eq!(out.unwrap(), b"");
        assert!(done);
        // Bare LF line endings are tolerated.
        let (out, done) = decode_in_pieces(&[b"3\nabc\n0\n\n"]);
        assert_eq!(out.unwrap(), b"abc");
        assert!(done);
    }

    #[test]
    fn chunked_errors() {
        assert_eq!(decode_in_pieces(&[b"zz\r\n"]).0, Err(ChunkedError::BadSize));
        assert_eq!(
            decode_in_pieces(&[b"2\r\nabc\r\n"]).0,
            Err(ChunkedError::BadDelimiter)
        );
        assert_eq!(
            decode_in_pieces(&[b"ffffffffffffffffff\r\n"]).0,
            Err(ChunkedError::BadSize)
        );
    }

    #[test]
    fn chunked_then_sse() {
        // The server's real framing: chunks cut through SSE lines.
        let body = b"d\r\nretry: 1500\n\n\r\n4\r\nid: \r\n3\r\n7\n\n\r\n";
        let (out, _) = decode_in_pieces(&[body]);
        let (events, p) = parse_in_pieces(&[&out.unwrap()]);
        assert!(events.is_empty());
        assert_eq!(p.last_event_id, "7");
        assert_eq!(p.retry, Some(1500));
    }
}
