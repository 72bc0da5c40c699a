//! Cutting off a client that stopped reading, whatever its transport.
//!
//! Ending a stream's body is not enough for such a client: actix-http only
//! polls a body while it can write, so a peer that never reads would keep
//! its connection forever. On a connection that carries one stream at a
//! time (HTTP/1.1, plain or TLS) shutting the TCP socket down makes the
//! next write fail and the connection end at once. An HTTP/2 connection is
//! shared by other tabs: only its stream is reset, through the reset handle
//! the HTTP/2 dispatcher puts in each request (`actix_http::h2::StreamReset`,
//! vendor/README.md), and the socket is shut down only when the whole
//! connection has stopped reading (its send buffer is full).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use actix_http::h2::StreamReset;
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::rt::net::TcpStream;
use actix_web::{HttpMessage, HttpRequest};

use crate::sink::{CutOffHandle, SinkCutOff};

/// The TCP socket under an accepted connection.
#[derive(Clone, Copy, Debug)]
pub struct SocketHandle {
    fd: RawFd,
    /// Identifies the socket itself: the fd number may be reused once the
    /// connection is gone, the inode of that socket is not.
    inode: u64,
    /// Whether streams share the connection (HTTP/2 negotiated by ALPN).
    multiplexed: bool,
}

fn inode(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat only writes into the zeroed struct we own; an fd that is
    // no longer open just makes it fail.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstat(fd, &mut stat) } == 0;
    (ok && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK).then_some(stat.st_ino)
}

/// Whether the kernel would take more bytes for this socket now: false when
/// its send buffer is full because the peer stopped reading.
fn writable(fd: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd we own, zero timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready == 1 && poll.revents & libc::POLLOUT != 0
}

impl SocketHandle {
    /// The handle of an accepted connection (called from `on_connect`), for
    /// plain TCP and for rustls; `None` for anything else.
    pub fn of(connection: &dyn std::any::Any) -> Option<Self> {
        if let Some(tcp) = connection.downcast_ref::<TcpStream>() {
            return Self::new(tcp, false);
        }
        let tls = connection.downcast_ref::<TlsStream<TcpStream>>()?;
        let (tcp, session) = tls.get_ref();
        Self::new(tcp, session.alpn_protocol() == Some(b"h2"))
    }

    fn new(tcp: &TcpStream, multiplexed: bool) -> Option<Self> {
        let fd = tcp.as_raw_fd();
        inode(fd).map(|inode| Self {
            fd,
            inode,
            multiplexed,
        })
    }

    /// The handle as a stream's cut-off, shared by the streams of its connection.
    pub fn into_cut_off(self) -> CutOffHandle {
        Arc::new(self)
    }
}

impl SinkCutOff for SocketHandle {
    /// Shuts the connection down in both directions, if its socket is still
    /// the one this handle was taken from and no other stream can still use
    /// it.
    fn cut_off(&self) {
        if inode(self.fd) != Some(self.inode) {
            return;
        }
        if self.multiplexed && writable(self.fd) {
            // The connection still moves: only this stream is reset.
            return;
        }
        // SAFETY: shutdown does not close or free the fd; the socket is
        // still owned (and later closed) by its connection.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }

    fn can_end_cleanly(&self) -> bool {
        !self.multiplexed && writable(self.fd)
    }
}

/// An HTTP/2 stream: reset on its own (its connection carries other tabs),
/// and its connection cut only when the whole connection stopped reading.
struct H2Stream {
    reset: StreamReset,
    socket: Option<CutOffHandle>,
}

impl SinkCutOff for H2Stream {
    fn cut_off(&self) {
        self.reset.reset();
        if let Some(socket) = &self.socket {
            socket.cut_off();
        }
    }

    fn can_end_cleanly(&self) -> bool {
        false
    }
}

/// How to cut off the stream of `req`: its HTTP/2 stream (vendor/README.md)
/// or the socket of its connection.
pub fn stream_cut_off(req: &HttpRequest) -> Option<CutOffHandle> {
    let socket = req.conn_data::<CutOffHandle>().cloned();
    match req.extensions().get::<StreamReset>() {
        Some(reset) => Some(Arc::new(H2Stream {
            reset: reset.clone(),
            socket,
        })),
        None => socket,
    }
}
