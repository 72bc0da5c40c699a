//! Measurements: latency percentiles and a process' CPU time and RSS from
//! `/proc`.

use serde_json::{json, Value};

/// Kernel clock ticks per second for `/proc/<pid>/stat` (USER_HZ; 100 on
/// every Linux architecture this runs on).
const CLOCK_TICKS: u64 = 100;

/// CPU time and resident memory of one process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime, in µs (10 ms resolution).
    pub cpu_us: u64,
    /// VmRSS in bytes.
    pub rss: u64,
}

/// Samples `/proc/<pid>` (`"self"` for this process).
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_us: (utime + stime) * 1_000_000 / CLOCK_TICKS,
        rss: rss_kb * 1024,
    })
}

/// Busy CPU time of the whole machine (all cores) from `/proc/stat`, in µs.
pub fn machine_busy_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let busy: u64 = fields.iter().take(8).sum::<u64>() - fields.get(3)? - fields.get(4)?;
    Some(busy * 1_000_000 / CLOCK_TICKS)
}

/// Samples of every watched server process.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<Option<ProcSample>>);

impl Samples {
    pub fn take(pids: &[u32]) -> Self {
        Self(pids.iter().map(|p| sample(&p.to_string())).collect())
    }

    pub fn cpu_us(&self) -> Option<u64> {
        self.0.iter().map(|s| s.map(|s| s.cpu_us)).sum()
    }

    pub fn rss(&self) -> Option<u64> {
        self.0.iter().map(|s| s.map(|s| s.rss)).sum()
    }
}

/// `v` sorted ascending; the nearest-rank percentile.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `{"p50":…,"p90":…,"p99":…,"max":…}` in ms from samples in µs.
pub fn latency_summary(samples: &mut [u32]) -> Value {
    samples.sort_unstable();
    let ms = |v: Option<u32>| v.map(|us| (f64::from(us) / 1000.0 * 1000.0).round() / 1000.0);
    json!({
        "n": samples.len(),
        "p50": ms(percentile(samples, 50.0)),
        "p90": ms(percentile(samples, 90.0)),
        "p99": ms(percentile(samples, 99.0)),
        "p999": ms(percentile(samples, 99.9)),
        "max": ms(samples.last().copied()),
    })
}

/// Rounds for the report.
pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn self_sample() {
        let s = sample("self").unwrap();
        assert!(s.rss > 0);
        assert!(machine_busy_us().is_some());
    }
}
