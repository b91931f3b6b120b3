//! Storage that can be cut from outside the process, for tests and drills: a block device
//! that fails every I/O while a marker file exists (like a SAN path going down).
//!
//! A thread looks for the file every 20 ms, so the hot path reads one atomic flag.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use vinfra_vmfs::{BlockDevice, Cas};

/// A device that fails while the marker file exists.
#[derive(Debug)]
pub struct CuttableDevice {
    inner: Arc<dyn BlockDevice>,
    cut: Arc<AtomicBool>,
}

impl CuttableDevice {
    /// `inner`, cut while `marker` exists. The watcher thread ends with the device.
    pub fn new(inner: Arc<dyn BlockDevice>, marker: PathBuf) -> Arc<Self> {
        let dev = Arc::new(Self {
            inner,
            cut: Arc::new(AtomicBool::new(marker.exists())),
        });
        let weak: Weak<Self> = Arc::downgrade(&dev);
        let spawned = std::thread::Builder::new()
            .name("storage-fault".into())
            .spawn(move || {
                while let Some(dev) = weak.upgrade() {
                    let now = marker.exists();
                    if dev.cut.swap(now, Ordering::AcqRel) != now {
                        tracing::warn!(cut = now, marker = %marker.display(), "storage path");
                    }
                    drop(dev);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        if let Err(e) = spawned {
            tracing::error!("storage fault watcher not started: {e}");
        }
        dev
    }

    fn check(&self, op: &'static str, offset: u64) -> vinfra_vmfs::Result<()> {
        if self.cut.load(Ordering::Acquire) {
            return Err(vinfra_vmfs::Error::Io {
                op,
                offset,
                source: std::io::Error::other("storage path cut (fault injection)"),
            });
        }
        Ok(())
    }
}

impl BlockDevice for CuttableDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> vinfra_vmfs::Result<()> {
        self.check("read", offset)?;
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> vinfra_vmfs::Result<()> {
        self.check("write", offset)?;
        self.inner.write_at(buf, offset)
    }

    fn flush(&self) -> vinfra_vmfs::Result<()> {
        self.check("flush", 0)?;
        self.inner.flush()
    }

    fn len(&self) -> vinfra_vmfs::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> vinfra_vmfs::Result<()> {
        self.check("set_len", len)?;
        self.inner.set_len(len)
    }

    fn compare_and_write(
        &self,
        offset: u64,
        expected: &[u8],
        new: &[u8],
    ) -> vinfra_vmfs::Result<Cas> {
        self.check("compare_and_write", offset)?;
        self.inner.compare_and_write(offset, expected, new)
    }
}
