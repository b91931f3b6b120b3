//! What a host measures about itself for DRS and the management server: capacity (CPUs,
//! memory), load (CPU busy share since the last sample, memory in use, load average) and
//! what page sharing saves — read from `/proc` and `/sys`, not guessed.
//!
//! ```
//! use vinfra_host::host_stats::CpuMeter;
//!
//! let mut meter = CpuMeter::new();
//! let sample = meter.sample().unwrap();
//! assert!(sample.cpus >= 1);
//! assert!((0.0..=1.0).contains(&sample.cpu_busy));
//! ```

use serde::Serialize;

/// One reading of the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostSample {
    /// Online CPUs.
    pub cpus: u32,
    /// Share of all CPUs' time spent busy (not idle or waiting for I/O) since the
    /// previous sample of the same meter, 0..=1 (since boot for the first).
    pub cpu_busy: f64,
    /// Physical memory, MiB.
    pub memory_mib: u64,
    /// Memory in use (total − available), MiB.
    pub memory_used_mib: u64,
    /// 1-minute load average.
    pub load_1m: f64,
    /// Memory that page sharing (KSM) saves now, bytes (0 when KSM is off or absent).
    pub ksm_saved_bytes: u64,
}

/// `/proc/stat`'s first line: (busy, total) jiffies.
fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map_while(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, kB.
fn meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// Samples the host; the CPU share is measured between successive samples.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: Option<(u64, u64)>,
}

impl CpuMeter {
    /// A meter whose first sample covers the time since boot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the host now.
    pub fn sample(&mut self) -> std::io::Result<HostSample> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let stat = std::fs::read_to_string("/proc/stat")?;
        let (busy, total) = cpu_jiffies(&stat).ok_or_else(|| bad("/proc/stat: no cpu line"))?;
        let (db, dt) = match self.last {
            Some((b, t)) => (busy.saturating_sub(b), total.saturating_sub(t)),
            None => (busy, total),
        };
        self.last = Some((busy, total));
        #[allow(clippy::cast_precision_loss, reason = "a share of jiffies")]
        let cpu_busy = if dt == 0 {
            0.0
        } else {
            (db as f64 / dt as f64).clamp(0.0, 1.0)
        };
        let mem = std::fs::read_to_string("/proc/meminfo")?;
        let (total_kb, avail_kb) = meminfo(&mem).ok_or_else(|| bad("/proc/meminfo"))?;
        let load_1m = std::fs::read_to_string("/proc/loadavg")?
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let cpus = std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        Ok(HostSample {
            cpus,
            cpu_busy,
            memory_mib: total_kb / 1024,
            memory_used_mib: total_kb.saturating_sub(avail_kb) / 1024,
            load_1m,
            // KSM absent (no sysfs directory) or unreadable: nothing is saved.
            ksm_saved_bytes: vinfra_vmm_core::ksm::report().map_or(0, |r| r.saved_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_excludes_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_jiffies(stat), Some((160, 1000)));
        assert_eq!(cpu_jiffies("intr 1 2\n"), None);
    }

    #[test]
    fn meminfo_reads_total_and_available() {
        let text = "MemTotal:       2048 kB\nMemFree: 10 kB\nMemAvailable:   1024 kB\n";
        assert_eq!(meminfo(text), Some((2048, 1024)));
        assert_eq!(meminfo("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn a_second_sample_measures_the_time_between() {
        let mut m = CpuMeter::new();
        let first = m.sample().unwrap();
        // Keep a CPU busy for a while so that the share is not 0 by luck.
        let end = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let mut x = 0u64;
        while std::time::Instant::now() < end {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let second = m.sample().unwrap();
        assert!(second.cpu_busy > 0.0, "{second:?}");
        assert!(first.memory_mib > 0 && second.memory_used_mib <= second.memory_mib);
    }
}
