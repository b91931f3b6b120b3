//! The heartbeat thread's own file table.
//!
//! While two threads share a file table, the kernel takes and drops a reference on the
//! file for every `pread` and `pwrite` (about 45 ns each on this machine); with a table
//! that no other thread shares it borrows the file instead. A single-threaded embedder
//! would pay that on every read only because a volume's heartbeat thread exists. So the
//! heartbeat thread gives itself a copy of the table (`unshare(CLONE_FILES)`), which
//! leaves the embedder's table unshared again, and closes in its copy every descriptor
//! but stdio and the device's own: it then holds no other file open, so a pipe or socket
//! that the embedder closes still reaches its peer's end at once.
//!
//! Only for devices whose descriptors never change ([`BlockDevice::fixed_fds`]): a device
//! that reconnects would open its new socket in the embedder's table, which this thread
//! no longer sees.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, RawFd};

use crate::device::BlockDevice;

/// What [`private_table`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The calling thread has a table of its own holding only stdio and the device.
    Private,
    /// Left shared: the device may open descriptors later.
    DeviceNotFixed,
    /// Left shared: `/proc/thread-self/fd` cannot be listed, so the copy could not be
    /// trimmed (a copy of every descriptor would keep the embedder's pipes open).
    NoProc,
    /// Left shared: the kernel refused `unshare` (a seccomp filter, say).
    Refused,
}

/// Gives the calling thread a file table of its own with only stdio and `dev`'s
/// descriptors in it. The thread must then touch no other descriptor: the numbers still
/// name the embedder's files in the embedder's table, but not in this one.
pub(crate) fn private_table(dev: &dyn BlockDevice) -> Outcome {
    let Some(fds) = dev.fixed_fds() else {
        return Outcome::DeviceNotFixed;
    };
    let keep: BTreeSet<RawFd> = fds
        .iter()
        .map(AsRawFd::as_raw_fd)
        .chain([0, 1, 2])
        .collect();
    if open_fds().is_none() {
        return Outcome::NoProc;
    }
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES) {
        tracing::debug!("heartbeat keeps the shared file table: unshare: {e}");
        return Outcome::Refused;
    }
    // Only this thread uses the new table, so nothing opens or closes in it meanwhile.
    for fd in open_fds().unwrap_or_default() {
        if !keep.contains(&fd) {
            // Closes this table's copy only; the embedder's descriptor stays open. No code
            // on this thread owns these numbers (it runs only the heartbeat).
            let _ = nix::unistd::close(fd);
        }
    }
    Outcome::Private
}

/// The descriptors open in the calling thread's file table (the one used to list them
/// is closed again before this returns).
fn open_fds() -> Option<Vec<RawFd>> {
    let dir = std::fs::read_dir("/proc/thread-self/fd").ok()?;
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    Some(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{FileDevice, MemDevice};
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn the_private_table_keeps_the_device_and_drops_the_embedders_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let dev = FileDevice::create(&dir.path().join("lun"), 1 << 20).unwrap();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let dev = &dev;
        std::thread::scope(|s| {
            s.spawn(move || {
                ready_tx.send(private_table(dev)).unwrap();
                // Alive (with its table) until the embedder's side is checked.
                let _ = done_rx.recv();
                // The device still works through the kept descriptor.
                dev.write_at(b"still here", 4096).unwrap();
                let mut b = [0u8; 10];
                dev.read_at(&mut b, 4096).unwrap();
                assert_eq!(&b, b"still here");
            });
            assert_eq!(ready_rx.recv().unwrap(), Outcome::Private);
            drop(theirs);
            // Had the thread kept a copy of `theirs`, this would wait for the timeout.
            let mut b = [0u8; 1];
            let n = ours.read(&mut b);
            done_tx.send(()).unwrap();
            assert_eq!(n.unwrap(), 0, "end of stream while the thread lives");
        });
    }

    #[test]
    fn devices_in_memory_need_no_descriptor() {
        assert_eq!(
            std::thread::spawn(|| private_table(&MemDevice::new(4096)))
                .join()
                .unwrap(),
            Outcome::Private
        );
    }
}
