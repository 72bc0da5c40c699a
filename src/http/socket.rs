//! Cutting off a client that stopped reading.
//!
//! Ending a stream's body is not enough for such a client: actix-http only
//! polls a body while it can write, so a peer that never reads would keep
//! its connection (and its slot) forever. Shutting the socket down makes the
//! next write fail and the connection end at once, which frees everything.

use std::os::fd::{AsRawFd, RawFd};

use actix_web::rt::net::TcpStream;

use crate::sink::{CutOffHandle, SinkCutOff};

/// The TCP socket under a plain-HTTP/1.x connection.
#[derive(Clone, Copy, Debug)]
pub struct SocketHandle {
    fd: RawFd,
    /// Identifies the socket itself: the fd number may be reused once the
    /// connection is gone, the inode of that socket is not.
    inode: u64,
}

fn inode(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat only writes into the zeroed struct we own; an fd that is
    // no longer open just makes it fail.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstat(fd, &mut stat) } == 0;
    (ok && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK).then_some(stat.st_ino)
}

impl SocketHandle {
    /// The handle of an accepted connection (called from `on_connect`).
    pub fn of(stream: &TcpStream) -> Option<Self> {
        let fd = stream.as_raw_fd();
        inode(fd).map(|inode| Self { fd, inode })
    }

    /// The handle as a stream's cut-off, shared by the streams of its connection.
    pub fn into_cut_off(self) -> CutOffHandle {
        std::sync::Arc::new(self)
    }
}

impl SinkCutOff for SocketHandle {
    /// Shuts the connection down in both directions, if its socket is still
    /// the one this handle was taken from.
    fn cut_off(&self) {
        if inode(self.fd) == Some(self.inode) {
            // SAFETY: shutdown does not close or free the fd; the socket is
            // still owned (and later closed) by its connection.
            unsafe {
                libc::shutdown(self.fd, libc::SHUT_RDWR);
            }
        }
    }
}
