//! The issue's API benchmark, as an ignored test that prints its figures: 32 hosts (fake
//! host APIs served in this process: they run no VM, as the issue allows) reporting 1,000
//! VMs, polled every 2 s; the latency of the VM listing and of one VM's summary, p50 and
//! p99 over 200 requests each, and the server's RSS.
//!
//! ```sh
//! cargo test -p vinfra-center --test api_scale -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::idle::idle_hosts;
use support::Center;

const HOSTS: u32 = 32;
const VMS: usize = 1000;
const REQUESTS: usize = 200;

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    // The sample at or below the percentile (nearest rank, rounded down).
    let at = |per_cent: usize| ms[(ms.len() - 1) * per_cent / 100];
    (at(50), at(99))
}

#[test]
#[ignore = "a benchmark: run it with --ignored --nocapture"]
fn api_latency_with_32_hosts_and_1000_vms() {
    let (servers, hosts) = idle_hosts(HOSTS, VMS);
    let mut args = vec!["--poll-ms".to_string(), "2000".to_string()];
    args.extend(hosts);
    let dir = tempfile::tempdir().unwrap();
    let center = Center::start(dir.path(), &args);
    let admin = center.admin();
    center.wait("32 hosts and 1000 VMs", 120, || {
        let hosts = center.ok(&admin, "GET", "/api/vcenter/cluster/cluster-1", "", 200);
        hosts["hosts_connected"] == HOSTS && hosts["vms"] == VMS
    });
    // Let the pollers settle into their rhythm.
    std::thread::sleep(Duration::from_secs(4));

    let time = |path: &str| -> (f64, f64) {
        let samples = (0..REQUESTS)
            .map(|_| {
                let t = Instant::now();
                center.ok(&admin, "GET", path, "", 200);
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        percentiles(samples)
    };
    let (list50, list99) = time("/api/vcenter/vm");
    let (one50, one99) = time("/api/vcenter/vm/vm-500");
    let (hosts50, hosts99) = time("/api/vcenter/host");
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", center.pid().unwrap())).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?");
    println!("inventory listing (1000 VMs): p50 {list50:.1} ms, p99 {list99:.1} ms");
    println!("VM summary: p50 {one50:.1} ms, p99 {one99:.1} ms");
    println!("host listing (32 hosts): p50 {hosts50:.1} ms, p99 {hosts99:.1} ms");
    println!("server {rss}");
    for s in servers {
        s.stop();
    }
}
