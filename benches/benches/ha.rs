//! criterion bench for the ha crate: one planning round after 8 of 96 hosts failed, with
//! 1,000 VMs to restart and 3,520 running on the survivors (the planner's whole work:
//! building drs's cluster from the datastore's records and drs's restart plan).
#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vinfra_ha::{plan, HostConfig, IsolationResponse, RestartPriority, VmRecord};

fn restart_planning(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let hosts: Vec<HostConfig> = (0..96)
        .map(|id| HostConfig {
            id,
            addr: format!("127.0.0.1:{}", 9000 + id),
            cpu_mhz: 64_000,
            mem_mb: 524_288,
        })
        .collect();
    let failed = 0..8u32;
    let failed_count = 8u32;
    let targets: Vec<u32> = (8..96).collect();
    let mut vms = Vec::new();
    let mut add = |name: String, owner: u32, rng: &mut ChaCha8Rng| {
        vms.push(VmRecord {
            name,
            owner: Some(owner),
            desired_on: true,
            priority: [
                RestartPriority::High,
                RestartPriority::Medium,
                RestartPriority::Low,
            ][rng.random_range(0..3)],
            isolation_response: IsolationResponse::LeaveOn,
            cpu_mhz: rng.random_range(250..2000),
            mem_mb: rng.random_range(1024..8192),
        });
    };
    for i in 0..1000 {
        let owner = failed.start + i % failed_count;
        add(format!("victim-{i}"), owner, &mut rng);
    }
    for i in 0..3520 {
        add(format!("vm-{i}"), targets[i % targets.len()], &mut rng);
    }
    let victims: Vec<String> = vms
        .iter()
        .filter(|v| v.owner.is_some_and(|o| failed.contains(&o)))
        .map(|v| v.name.clone())
        .collect();
    let victims: Vec<&str> = victims.iter().map(String::as_str).collect();
    let round = plan::restart(&hosts, &targets, &vms, &victims).expect("a valid cluster");
    assert_eq!(
        round.assignments.len(),
        1000,
        "every victim placed: {:?}",
        round.unplaced.first()
    );
    let mut group = c.benchmark_group("ha");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("restart_plan_1000vms_8_of_96_hosts_failed", |b| {
        b.iter(|| black_box(plan::restart(&hosts, &targets, &vms, black_box(&victims))))
    });
    group.finish();
}

criterion_group!(benches, restart_planning);
criterion_main!(benches);
