//! The issue's console benchmark, as an ignored test that prints its figures: the web
//! console's first paint and time to interactive (the inventory tree on screen) in
//! headless chromium against a center over HTTPS whose inventory holds 32 hosts and
//! 1,000 VMs (idle fake hosts served in this process, as for `api_scale`). Three fresh
//! loads of the console after the login; each figure is printed.
//!
//! ```sh
//! (cd examples/center/web && npm ci && npm run build)
//! cargo test --release -p vinfra-center --test browser_scale -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used)]

mod browser_support;
mod support;

use browser_support::{browser_or_skip, err, log_in, screenshot, timings, wait_js, Driver, WAIT};
use support::idle::idle_hosts;
use support::{Center, ADMIN_PASSWORD};

const HOSTS: u32 = 32;
const VMS: usize = 1000;
const LOADS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it with --ignored --nocapture"]
async fn console_load_with_32_hosts_and_1000_vms() {
    if !browser_or_skip() {
        return;
    }
    let (servers, mut args) = idle_hosts(HOSTS, VMS);
    args.extend(["--poll-ms".to_string(), "2000".to_string()]);
    let state = tempfile::tempdir().unwrap();
    let center = tokio::task::spawn_blocking({
        let dir = state.path().to_path_buf();
        move || {
            let center = Center::start_with(&dir, false, &args);
            let admin = center.admin();
            center.wait("32 hosts and 1000 VMs", 120, || {
                let c = center.ok(&admin, "GET", "/api/vcenter/cluster/cluster-1", "", 200);
                c["hosts_connected"] == HOSTS && c["vms"] == VMS
            });
            center
        }
    })
    .await
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let driver = Driver::start(logs.path());
    let c = driver.session().await;
    let outcome = async {
        c.goto(&center.url).await.map_err(err("open the console"))?;
        log_in(&c, "admin", ADMIN_PASSWORD).await?;
        let tree = "const n = document.querySelectorAll('.tree [data-kind=vm]').length; \
                    return n > 0 ? n : null;";
        wait_js(&c, "the VMs in the tree", tree, WAIT).await?;
        for i in 1..=LOADS {
            c.goto(&center.url)
                .await
                .map_err(err("reload the console"))?;
            let shown = wait_js(&c, "the VMs in the tree", tree, WAIT).await?;
            let t = timings(&c).await?;
            println!(
                "console load {i} ({HOSTS} hosts, {VMS} VMs, {shown} VM rows in the tree; ms \
                 since navigation start): first contentful paint {}, DOM interactive {}, \
                 inventory on screen (interactive) {}",
                t["first_contentful_paint_ms"], t["dom_interactive_ms"], t["inventory_ready_ms"]
            );
        }
        screenshot(&c, "scale-1000-vms").await?;
        Ok::<(), String>(())
    }
    .await;
    let _ = c.close().await;
    drop(driver);
    tokio::task::spawn_blocking(move || drop(center))
        .await
        .unwrap();
    for s in servers {
        s.stop();
    }
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
