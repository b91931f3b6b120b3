//! criterion bench for the vmotion crate: a 64 MiB VM whose every page holds data, sent by
//! the real drivers (source and destination threads) over a Unix socket pair, with AES-GCM
//! frames and with plaintext crc32 frames. No KVM, so what it measures is the protocol's
//! own cost per byte: reading memory, framing, the cipher, the socket, writing memory.
#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixStream;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vinfra_vmotion::fake::{FakeIncoming, FakeVm};
use vinfra_vmotion::wire::{CpuidLeaf, MemoryRegion, PAGE_SIZE};
use vinfra_vmotion::{migrate, receive, ClusterKey, MigrationOptions, ReceiveOptions, Security};

const PAGES: u64 = 16 << 10;

fn layout() -> Vec<MemoryRegion> {
    vec![MemoryRegion {
        base: 0,
        bytes: PAGES * PAGE_SIZE as u64,
    }]
}

fn cpuid() -> Vec<CpuidLeaf> {
    vec![CpuidLeaf {
        function: 1,
        ..CpuidLeaf::default()
    }]
}

fn send(security: &Security, mut src: FakeVm) {
    let (a, b) = UnixStream::pair().unwrap();
    let ropts = ReceiveOptions::new(security.clone());
    let dest = std::thread::spawn(move || {
        let mut vm = FakeIncoming::new(layout(), cpuid());
        receive(&mut vm, b, &ropts).unwrap();
    });
    migrate(
        &mut src,
        a,
        &MigrationOptions::new(security.clone()),
        |_| {},
    )
    .unwrap();
    dest.join().unwrap();
}

fn stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("vmotion_stream_64MiB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(PAGES * PAGE_SIZE as u64));
    let key = ClusterKey::from_bytes([7; 32]);
    for (name, security) in [
        ("aes-256-gcm", Security::Aead(key)),
        ("plaintext", Security::Plaintext),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut vm = FakeVm::new(layout(), cpuid());
                    for page in 0..PAGES {
                        vm.guest_write(0, page, page + 1);
                    }
                    vm
                },
                |vm| send(&security, vm),
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
