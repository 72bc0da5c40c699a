//! Raw HTTP/1.1 over tokio TCP: targets, source addresses, connecting,
//! response heads and small request/response exchanges.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::wire::ChunkedDecoder;

/// A server base URL (`http://host:port[/prefix]`).
#[derive(Debug, Clone)]
pub struct Target {
    /// The `Host` header value.
    pub authority: String,
    pub addr: SocketAddr,
    /// Path prefix without a trailing `/` (usually empty).
    pub prefix: String,
    /// The URL as given.
    pub url: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// targets are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let host_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{url}: no IPv4 address"))?;
        Ok(Self {
            authority: authority.to_owned(),
            addr,
            prefix: path.trim_end_matches('/').to_owned(),
            url: url.to_owned(),
        })
    }
}

/// Expands `127.0.0.2-127.0.0.20` ranges and comma lists.
pub fn parse_source_ips(specs: &[String]) -> Result<Vec<Ipv4Addr>, String> {
    let mut ips = Vec::new();
    for spec in specs.iter().flat_map(|s| s.split(',')) {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let parse = |s: &str| {
            s.trim()
                .parse::<Ipv4Addr>()
                .map_err(|e| format!("--source-ips {s:?}: {e}"))
        };
        match spec.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (u32::from(parse(a)?), u32::from(parse(b)?));
                if b < a || b - a > 65_535 {
                    return Err(format!("--source-ips {spec:?}: bad range"));
                }
                ips.extend((a..=b).map(Ipv4Addr::from));
            }
            None => ips.push(parse(spec)?),
        }
    }
    Ok(ips)
}

/// Opens a TCP connection, bound to `source` (any port) when given.
pub async fn connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::from((ip, 0)))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

/// A parsed response status line and the headers the load generator needs.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
    pub content_type: String,
    /// The server will close the connection after this response.
    pub close: bool,
    /// Bytes of the head including the blank line.
    pub len: usize,
}

/// Parses a response head at the start of `buf`: `None` while incomplete.
pub fn parse_head(buf: &[u8]) -> Option<Result<ResponseHead, String>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = match std::str::from_utf8(&buf[..end]) {
        Ok(t) => t,
        Err(_) => return Some(Err("response head is not UTF-8".into())),
    };
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status = match parts.next().and_then(|s| s.parse::<u16>().ok()) {
        Some(s) if version.starts_with("HTTP/1.") => s,
        _ => return Some(Err(format!("bad status line {status_line:?}"))),
    };
    let mut framing = Framing::UntilClose;
    let mut content_type = String::new();
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().contains("chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if framing != Framing::Chunked {
                match value.parse() {
                    Ok(n) => framing = Framing::Length(n),
                    Err(_) => return Some(Err(format!("bad content-length {value:?}"))),
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = value.to_owned();
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                close = true;
            } else if value.contains("keep-alive") {
                close = false;
            }
        }
    }
    // 1xx, 204 and 304 have no body.
    if status < 200 || status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Some(Ok(ResponseHead {
        status,
        framing,
        content_type,
        close,
        len: end,
    }))
}

/// The error of a connection closed before any response byte.
pub const CLOSED_BEFORE_HEAD: &str = "connection closed before the response head";

/// Reads until a full response head is in `buf`; returns it (the head's bytes
/// stay in `buf`, followed by any body bytes already read).
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<ResponseHead, String> {
    loop {
        if let Some(head) = parse_head(buf) {
            return head;
        }
        if buf.len() > 64 * 1024 {
            return Err("response head larger than 64 KiB".into());
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                CLOSED_BEFORE_HEAD.into()
            } else {
                "connection closed in the response head".into()
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One answered request.
#[derive(Debug)]
pub struct Exchanged {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server closes the connection now (`Connection: close`).
    pub close: bool,
}

/// Sends one request on a keep-alive connection and reads the whole response.
pub async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    timeout: Duration,
) -> Result<Exchanged, String> {
    tokio::time::timeout(timeout, async {
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(512);
        let head = read_head(stream, &mut buf).await?;
        let mut body = Vec::new();
        let mut rest = buf.split_off(head.len);
        match head.framing {
            Framing::Length(n) => {
                while rest.len() < n {
                    let mut chunk = vec![0u8; (n - rest.len()).min(65536)];
                    let got = stream
                        .read(&mut chunk)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    if got == 0 {
                        return Err("connection closed in the body".into());
                    }
                    rest.extend_from_slice(&chunk[..got]);
                }
                rest.truncate(n);
                body = rest;
            }
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                decoder
                    .feed(&rest, &mut body)
                    .map_err(|e| format!("{e:?}"))?;
                while !decoder.is_done() {
                    let mut chunk = [0u8; 8192];
                    let got = stream
                        .read(&mut chunk)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    if got == 0 {
                        return Err("connection closed in the body".into());
                    }
                    decoder
                        .feed(&chunk[..got], &mut body)
                        .map_err(|e| format!("{e:?}"))?;
                }
            }
            Framing::UntilClose => {
                body = rest;
                stream
                    .read_to_end(&mut body)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
            }
        }
        Ok(Exchanged {
            status: head.status,
            body,
            close: head.close || head.framing == Framing::UntilClose,
        })
    })
    .await
    .map_err(|_| format!("no response within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges() {
        let ips = parse_source_ips(&["127.0.0.2-127.0.0.4".into(), "127.0.1.1".into()]).unwrap();
        assert_eq!(
            ips,
            vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4),
                Ipv4Addr::new(127, 0, 1, 1)
            ]
        );
        assert!(parse_source_ips(&["127.0.0.5-127.0.0.1".into()]).is_err());
    }

    #[test]
    fn heads() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: x").is_none());
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\nabc",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(h.content_type, "text/event-stream");
        let h = parse_head(b"HTTP/1.1 202 Accepted\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.framing), (202, Framing::Length(12)));
        assert!(!h.close);
        let h =
            parse_head(b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(h.close);
        assert!(parse_head(b"HTTP/2 200\r\n\r\n").unwrap().is_err());
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.prefix, "");
        assert_eq!(t.addr.port(), 8080);
        assert!(Target::parse("https://x").is_err());
    }
}
