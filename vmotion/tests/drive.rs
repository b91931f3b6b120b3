//! The drivers over a real stream (a Unix socket pair, two threads) with the fake VMs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use vinfra_vmotion::fake::{FakeIncoming, FakeVm};
use vinfra_vmotion::wire::{CpuidLeaf, MemoryRegion, PAGE_SIZE};
use vinfra_vmotion::{
    migrate, receive, ClusterKey, Connection, Error, MigrationOptions, ReceiveOptions, Security,
    Side, Stage,
};

fn layout() -> Vec<MemoryRegion> {
    vec![MemoryRegion {
        base: 0,
        bytes: 2048 * PAGE_SIZE as u64,
    }]
}

fn cpuid() -> Vec<CpuidLeaf> {
    vec![CpuidLeaf {
        function: 1,
        ecx: 0x8000_0001,
        ..CpuidLeaf::default()
    }]
}

fn source_vm() -> FakeVm {
    let mut vm = FakeVm::new(layout(), cpuid());
    for page in (0..2048).step_by(3) {
        vm.guest_write(0, page, page * 7 + 1);
    }
    vm
}

#[test]
fn a_vm_moves_over_a_socket_in_both_security_modes() {
    for security in [
        Security::Aead(ClusterKey::generate().unwrap()),
        Security::Plaintext,
    ] {
        let (a, b) = UnixStream::pair().unwrap();
        let mut src = source_vm();
        let expected = src.memory_bytes();
        let ropts = ReceiveOptions::new(security.clone());
        let dest = std::thread::spawn(move || {
            let mut vm = FakeIncoming::new(layout(), cpuid());
            let stats = receive(&mut vm, b, &ropts);
            (vm, stats)
        });
        let mut stages = Vec::new();
        let stats = migrate(&mut src, a, &MigrationOptions::new(security), |p| {
            stages.push(p.stage)
        })
        .unwrap();
        let (dst, dstats) = dest.join().unwrap();
        let dstats = dstats.unwrap();
        assert!(src.discarded && !src.running);
        assert!(dst.running);
        assert!(
            dst.memory_bytes() == expected,
            "the destination's memory is the source's"
        );
        assert_eq!(stats.zero_pages + stats.data_pages, dstats.pages_received);
        assert_eq!(stats.data_pages, 683, "non-zero pages carry data");
        assert!(stats.destination_confirmed);
        assert!(stages.contains(&Stage::PreCopy) && stages.last() == Some(&Stage::Committed));
        // 683 data pages of 4 KiB plus headers: zero pages cost bits, not pages.
        assert!(
            stats.bytes_sent < 700 * PAGE_SIZE as u64,
            "{}",
            stats.bytes_sent
        );
    }
}

#[test]
fn a_wrong_key_is_refused_and_the_vm_keeps_running() {
    let (a, b) = UnixStream::pair().unwrap();
    let dest = std::thread::spawn(move || {
        let mut vm = FakeIncoming::new(layout(), cpuid());
        let r = receive(
            &mut vm,
            b,
            &ReceiveOptions::new(Security::Aead(ClusterKey::from_bytes([1; 32]))),
        );
        (vm, r)
    });
    let mut src = source_vm();
    let r = migrate(
        &mut src,
        a,
        &MigrationOptions::new(Security::Aead(ClusterKey::from_bytes([2; 32]))),
        |_| {},
    );
    let (dst, dr) = dest.join().unwrap();
    assert!(
        matches!(
            r,
            Err(Error::Auth(_))
                | Err(Error::Aborted {
                    by: Side::Destination,
                    ..
                })
                | Err(Error::Closed { .. })
        ),
        "{r:?}"
    );
    assert!(matches!(dr, Err(Error::Auth(_))), "{dr:?}");
    assert!(src.running && !dst.running);
    assert!(dst.memory_bytes().iter().all(|b| *b == 0), "no page moved");
}

#[test]
fn plaintext_against_encryption_is_a_security_mismatch() {
    let (a, b) = UnixStream::pair().unwrap();
    let dest = std::thread::spawn(move || {
        let mut vm = FakeIncoming::new(layout(), cpuid());
        receive(&mut vm, b, &ReceiveOptions::new(Security::Plaintext))
    });
    let mut src = source_vm();
    let r = migrate(
        &mut src,
        a,
        &MigrationOptions::new(Security::Aead(ClusterKey::from_bytes([2; 32]))),
        |_| {},
    );
    assert!(matches!(r, Err(Error::SecurityMismatch { .. })), "{r:?}");
    assert!(matches!(
        dest.join().unwrap(),
        Err(Error::SecurityMismatch { .. })
    ));
    assert!(src.running);
}

/// A stream that dies (both directions shut) once `limit` bytes have been read from it:
/// the destination process killed mid-copy.
struct DiesAfter {
    inner: UnixStream,
    read: usize,
    limit: usize,
}

impl Read for DiesAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= self.limit {
            let _ = self.inner.shutdown(std::net::Shutdown::Both);
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "killed",
            ));
        }
        let n = self.inner.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

impl Write for DiesAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Connection for DiesAfter {
    fn try_clone_reader(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.inner.try_clone()?))
    }
    fn set_read_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        self.inner.set_read_timeout(t)
    }
    fn set_write_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        self.inner.set_write_timeout(t)
    }
    fn shutdown(&self) {
        let _ = self.inner.shutdown(std::net::Shutdown::Both);
    }
}

#[test]
fn a_destination_that_dies_mid_copy_leaves_the_vm_running_on_the_source() {
    let (a, b) = UnixStream::pair().unwrap();
    let dest = std::thread::spawn(move || {
        let mut vm = FakeIncoming::new(layout(), cpuid());
        let conn = DiesAfter {
            inner: b,
            read: 0,
            limit: 300 << 10,
        };
        let r = receive(&mut vm, conn, &ReceiveOptions::new(Security::Plaintext));
        (vm, r)
    });
    let mut src = source_vm();
    let r = migrate(
        &mut src,
        a,
        &MigrationOptions::new(Security::Plaintext),
        |_| {},
    );
    let (dst, dr) = dest.join().unwrap();
    assert!(
        matches!(r, Err(Error::Closed { .. }) | Err(Error::Io { .. })),
        "{r:?}"
    );
    assert!(matches!(dr, Err(Error::Io { .. })), "{dr:?}");
    assert!(src.running && !src.discarded, "the source runs the VM");
    assert!(!dst.running && dst.discarded);
}
