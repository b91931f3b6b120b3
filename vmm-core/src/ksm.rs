//! Page sharing: what KSM (kernel same-page merging) saves.
//!
//! A VM created with `page_sharing: true` marks its RAM `MADV_MERGEABLE`; `ksmd` then
//! merges identical pages across VMs (and within one) if `/sys/kernel/mm/ksm/run` is 1.
//! The counters are host-wide: they include every mergeable process.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the kernel exposes KSM.
pub const KSM_SYSFS: &str = "/sys/kernel/mm/ksm";

/// KSM's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KsmReport {
    /// `run`: 0 stopped, 1 merging, 2 unmerging.
    pub run: u32,
    /// Distinct shared pages in use.
    pub pages_shared: u64,
    /// Extra mappings of those pages: the pages saved.
    pub pages_sharing: u64,
    /// Bytes saved (`pages_sharing` times the page size).
    pub saved_bytes: u64,
}

/// Reads the host's KSM counters.
pub fn report() -> Result<KsmReport> {
    report_from(Path::new(KSM_SYSFS))
}

/// Reads KSM counters from `dir` (a sysfs directory, or a copy of one in tests).
pub fn report_from(dir: &Path) -> Result<KsmReport> {
    let read = |name: &str| -> Result<u64> {
        let path: PathBuf = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::File {
            what: "ksm counter",
            path: path.clone(),
            source,
        })?;
        text.trim().parse::<u64>().map_err(|e| Error::File {
            what: "ksm counter",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    };
    let pages_sharing = read("pages_sharing")?;
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    Ok(KsmReport {
        run: u32::try_from(read("run")?).unwrap_or(u32::MAX),
        pages_shared: read("pages_shared")?,
        pages_sharing,
        saved_bytes: pages_sharing.saturating_mul(page),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_and_computes_saving() {
        let d = tempfile::tempdir().unwrap();
        for (n, v) in [
            ("run", "1\n"),
            ("pages_shared", "3\n"),
            ("pages_sharing", "10\n"),
        ] {
            std::fs::write(d.path().join(n), v).unwrap();
        }
        let r = report_from(d.path()).unwrap();
        assert_eq!((r.run, r.pages_shared, r.pages_sharing), (1, 3, 10));
        assert_eq!(r.saved_bytes, 10 * 4096);
        std::fs::write(d.path().join("run"), "x").unwrap();
        assert!(report_from(d.path()).is_err());
    }
}
