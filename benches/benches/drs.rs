//! criterion benches for the drs crate: initial placement of one VM into a 10,000-VM
//! cluster, a full balancing pass at 96 hosts / 10,000 VMs, packing of triplet instances.
#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vinfra_drs::{balance, generate, pack, place, Cluster, PackOptions, VmSpec};

fn placement(c: &mut Criterion) {
    let mut spec = generate::scale(1, 96, 10_000).spec;
    let mut vm = VmSpec::new("new-vm", 2000, 4096);
    vm.powered_on = false;
    spec.vms.push(vm);
    let cluster = Cluster::new(spec).expect("generated cluster is valid");
    c.bench_function("drs_place_one_vm_96h_10000vms", |b| {
        b.iter(|| black_box(place(black_box(&cluster), &["new-vm"]).expect("vm exists")))
    });
}

fn balancing(c: &mut Criterion) {
    let mut group = c.benchmark_group("drs_balance");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for threshold in [3u8, 5] {
        let mut spec = generate::perturbed(1, 96, 10_000, 500).spec;
        spec.settings.migration_threshold = threshold;
        let cluster = Cluster::new(spec).expect("generated cluster is valid");
        group.bench_function(
            format!("full_pass_96h_10000vms_threshold{threshold}"),
            |b| b.iter(|| black_box(balance(black_box(&cluster)))),
        );
    }
    group.finish();
}

fn packing(c: &mut Criterion) {
    let mut group = c.benchmark_group("drs_pack");
    group.sample_size(10);
    let cluster =
        Cluster::new(generate::triplets(1, 501, 40).spec).expect("generated cluster is valid");
    group.bench_function("triplets_501vms", |b| {
        b.iter(|| black_box(pack(black_box(&cluster), &PackOptions::default())))
    });
    group.finish();
}

criterion_group!(benches, placement, balancing, packing);
criterion_main!(benches);
