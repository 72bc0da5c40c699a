//! The open-files limit (docs/protocol.md §3 "Open files"): every stream
//! holds one socket, so a node whose soft `RLIMIT_NOFILE` stayed at a
//! runtime's default of 1024 would stop near 1k streams whatever
//! `NOTIFY_MAX_CONNECTIONS` says.

/// Descriptors kept for everything but streams: listeners, NATS
/// connections, each worker's event loop, the process's own files, and the
/// short requests (publish, metrics, probes) that arrive beside full streams.
pub const RESERVED: u64 = 256;

/// Raises the soft open-files limit as far as the hard limit allows and
/// returns the soft limit now in force (`None` if it cannot be read).
pub fn raise_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Some(limit.rlim_cur);
    }
    // An unlimited hard limit still stops at the kernel's nr_open.
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(limit.rlim_cur)
    } else {
        limit.rlim_max
    };
    let raised = libc::rlimit {
        rlim_cur: target.max(limit.rlim_cur),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        Some(raised.rlim_cur)
    } else {
        Some(limit.rlim_cur)
    }
}

/// The streams that fit under `soft` open files: `wanted`, or fewer with
/// [`RESERVED`] descriptors kept aside (at least one).
pub fn fit(wanted: u32, soft: u64) -> u32 {
    let room = soft.saturating_sub(RESERVED).max(1);
    u32::try_from(room).map_or(wanted, |room| wanted.min(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maximum_is_lowered_only_when_it_does_not_fit() {
        assert_eq!(fit(100_000, 20_000), 20_000 - RESERVED as u32);
        assert_eq!(fit(5_000, 20_000), 5_000);
        assert_eq!(fit(5_000, 2_000), 2_000 - RESERVED as u32);
        assert_eq!(fit(5_000, 10), 1);
        assert_eq!(fit(5_000, u64::MAX), 5_000);
    }
}
