//! criterion benches for the vmm-core crate (filled in by its issue).
#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn`

use criterion::{criterion_group, criterion_main, Criterion};

fn placeholder(c: &mut Criterion) {
    c.bench_function("vmm_core_noop", |b| {
        b.iter(|| std::hint::black_box(1u64) + 1)
    });
}

/// virtio-blk request processing: a batch of requests per notify through the
/// device's registers and queue, against an in-memory disk (no KVM involved).
fn virtio_blk_requests(c: &mut Criterion) {
    use criterion::Throughput;
    use vinfra_vmm_core::devices::virtio::fuzz::RequestLoop;

    let mut group = c.benchmark_group("virtio_blk");
    for (name, write, bytes, batch) in [
        ("read_4k_x32", false, 4096u32, 32u16),
        ("write_4k_x32", true, 4096, 32),
        ("read_64k_x16", false, 64 * 1024, 16),
        ("write_64k_x16", true, 64 * 1024, 16),
    ] {
        let Some(mut reqs) = RequestLoop::new(write, bytes, batch) else {
            continue;
        };
        group.throughput(Throughput::Bytes(u64::from(bytes) * u64::from(batch)));
        group.bench_function(name, |b| b.iter(|| reqs.run_batch()));
    }
    group.finish();
}

criterion_group!(benches, placeholder, virtio_blk_requests);
criterion_main!(benches);
