//! The web console in a real headless browser (Debian's chromium + chromedriver, over
//! WebDriver with fantoccini) against a real `vinfra-center` over HTTPS managing a lab of
//! 3 hosts and 6 test-guest VMs: log in, see the inventory, migrate a VM from its page
//! and see the task finish and the VM's host change, open its console and see the guest's
//! `HB <n>` lines; unbalance the cluster with busy guests, see DRS recommend a migration,
//! apply it and see it done; and kill a host, see it marked, a survivor's HA verdict and its VMs
//! running again elsewhere. Screenshots go to `target/browser-screenshots/`; the console's
//! first paint and time to interactive are printed.
//!
//! Needs `web/dist` (`cd examples/center/web && npm ci && npm run build`; scripts/test.sh
//! does it), KVM, root and the guest kit: without them it skips, and fails under CI=true.

#![allow(clippy::unwrap_used)]

mod browser_support;
mod support;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use browser_support::datacentre::Datacentre;
use browser_support::{
    browser_or_skip, click, err, js, log_in, screenshot, timings, wait_css, wait_js, Driver,
    Result, WAIT,
};
use fantoccini::Client;
use serde_json::Value;
use vinfra_testkit::skip;

const HOSTS: u32 = 3;
const VMS: u32 = 6;
/// A live migration of a small test guest takes well under a second; the rest is polling.
const MIGRATION: Duration = Duration::from_secs(90);

fn web_dist_or_skip() -> bool {
    let index = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist/index.html");
    if index.exists() {
        return true;
    }
    skip(format_args!(
        "{} is missing: cd examples/center/web && npm ci && npm run build",
        index.display()
    ));
    false
}

/// A scenario run in the browser against a datacentre.
type Scenario =
    for<'a> fn(&'a Client, &'a Datacentre) -> Pin<Box<dyn Future<Output = Result> + 'a>>;

/// One browser test at a time: each runs a lab whose guests spin, and two cores are all
/// there is.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Brings a datacentre up, runs `scenario` in a fresh headless chromium, closes the
/// browser and brings everything down (by PID), then fails with the scenario's error.
async fn in_browser(name: &str, scenario: Scenario) {
    let _one = ONE_AT_A_TIME.lock().await;
    if !web_dist_or_skip() || !browser_or_skip() {
        return;
    }
    let Some(dc) = tokio::task::spawn_blocking(|| Datacentre::up(HOSTS, VMS))
        .await
        .unwrap()
    else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let driver = Driver::start(logs.path());
    let client = driver.session().await;
    let outcome = scenario(&client, &dc).await;
    if outcome.is_err() {
        let _ = screenshot(&client, &format!("failure-{name}")).await;
    }
    // Close the session before judging, so chromium ends however the scenario went.
    let _ = client.close().await;
    drop(driver);
    // The center and the lab end (by PID, `vinfra-lab down`) off the async workers.
    tokio::task::spawn_blocking(move || drop(dc)).await.unwrap();
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_migrate_a_vm_and_watch_its_console() {
    in_browser("migrate", |c, dc| Box::pin(scenario(c, dc))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_turns_red_and_ha_restarts_its_vms() {
    in_browser("ha", |c, dc| Box::pin(host_failure(c, dc))).await;
}

/// Waits for the tree to show every host and every VM running on a host that is not
/// `except`; returns the counts.
async fn all_running(c: &Client, except: &str, limit: Duration) -> Result<Value> {
    wait_js(
        c,
        &format!("{HOSTS} hosts and {VMS} running VMs in the tree (none on {except:?})"),
        &format!(
            "const hosts = document.querySelectorAll('.tree [data-kind=host]').length;
             const vms = [...document.querySelectorAll('.tree [data-kind=vm]')];
             const running = vms.filter(v => v.dataset.power === 'running' && v.dataset.host && v.dataset.host !== '{except}').length;
             return hosts === {HOSTS} && vms.length === {VMS} && running === {VMS} ? {{hosts, vms: vms.length}} : null;"
        ),
        limit,
    )
    .await
}

async fn host_failure(c: &Client, dc: &Datacentre) -> Result {
    c.goto(&dc.url).await.map_err(err("open the console"))?;
    log_in(c, &dc.user, &dc.password).await?;
    all_running(c, "", Duration::from_secs(90)).await?;

    // The host that runs the most VMs dies (SIGKILL, by the PID the lab recorded).
    let victim = js(
        c,
        "const n = {};
         document.querySelectorAll('.tree [data-kind=vm]').forEach(v => n[v.dataset.host] = (n[v.dataset.host] || 0) + 1);
         return Object.entries(n).sort((a, b) => b[1] - a[1])[0][0];",
    )
    .await?;
    let victim = victim.as_str().ok_or("no host runs a VM")?.to_string();
    let id: u32 = victim
        .trim_start_matches("esx-")
        .parse()
        .map_err(|e| format!("host name {victim}: {e}"))?;
    let pid = dc.lab.host_pid(id);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map_err(|e| format!("kill {pid}: {e}"))?;
    if !killed.success() {
        return Err(format!("kill -KILL {pid} ({victim}) failed"));
    }
    println!("killed {victim} (pid {pid})");

    // The tree marks it, and its page says it does not respond.
    wait_css(
        c,
        &format!(".tree [data-kind=host][data-name='{victim}'][data-state=not_responding]"),
        WAIT,
    )
    .await?;
    click(c, &format!(".tree [data-kind=host][data-name='{victim}']")).await?;
    wait_css(
        c,
        "[data-testid=host-view][data-state=not_responding]",
        WAIT,
    )
    .await?;
    screenshot(c, "14-host-down").await?;

    // A survivor's HA agent judges it failed, and its VMs run again on the survivors.
    let survivor = js(
        c,
        &format!("return [...document.querySelectorAll('.tree [data-kind=host]')].map(h => h.dataset.name).find(n => n !== '{victim}');"),
    )
    .await?;
    let survivor = survivor.as_str().ok_or("no surviving host")?.to_string();
    click(
        c,
        &format!(".tree [data-kind=host][data-name='{survivor}']"),
    )
    .await?;
    wait_css(
        c,
        &format!("[data-testid=host-view] [data-ha-host='{victim}'][data-verdict=failed]"),
        Duration::from_secs(60),
    )
    .await?;
    screenshot(c, "15-ha-verdict").await?;
    let restarted = all_running(c, &victim, Duration::from_secs(120)).await?;
    println!("after {victim} died: {restarted}");
    click(c, ".tree [data-kind=cluster]").await?;
    wait_css(c, "[data-testid=cluster-view]", WAIT).await?;
    screenshot(c, "16-ha-restarted").await?;
    Ok(())
}

/// Busy guests started on `host` through the API unbalance the cluster; the cluster's DRS
/// card recommends a migration, Apply starts it, and the VM's task ends with it on the
/// recommended host. The busy guests are stopped again afterwards.
async fn drs(c: &Client, dc: &Datacentre, host: &str) -> Result {
    let busy = ["busy-1", "busy-2", "busy-3"];
    tokio::task::block_in_place(|| {
        let admin = dc.center.admin();
        // Threshold 5 (any improvement): its target is no imbalance at all, so how loaded
        // the shared cores leave the idle guests cannot hide the busy ones' imbalance.
        dc.center.ok(
            &admin,
            "PATCH",
            "/api/vcenter/cluster/cluster-1",
            r#"{"drs": {"automation": "manual", "threshold": 5}}"#,
            200,
        );
        for name in busy {
            let spec = serde_json::json!({"name": name, "kernel": dc.lab.kernel, "memory_mib": 32,
                                          "cmdline": "workload.mib=4 workload.rate=16"});
            dc.center.ok(
                &admin,
                "POST",
                "/api/vcenter/vm",
                &serde_json::json!({"spec": spec, "host": host}).to_string(),
                201,
            );
            let path = format!("/api/vcenter/vm/{name}/power?action=start&host={host}");
            let started = dc.center.ok(&admin, "POST", &path, "", 202);
            let task = dc.center.task(&admin, started["task"].as_u64().unwrap());
            assert_eq!(task["state"], "succeeded", "{path}: {task}");
        }
    });
    println!("started {busy:?} on {host}");
    // The card reads the pass every few seconds: a recommendation once the hosts report
    // the busy guests' CPU.
    wait_js(
        c,
        "a DRS recommendation on the cluster's page",
        "const busy = [...document.querySelectorAll('.tree [data-kind=vm][data-name^=busy-]')].filter(v => v.dataset.power === 'running');
         return busy.length === 3 && !!document.querySelector('[data-testid=drs-recommendations] tr[data-drs-vm]');",
        Duration::from_secs(90),
    )
    .await?;
    // The card sits below the HA card: brought into view for the screenshot.
    js(
        c,
        "document.querySelector('.drs-card').scrollIntoView({block: 'center'}); return true;",
    )
    .await?;
    screenshot(c, "17-drs-recommendations").await?;
    // The relocate tasks there were before, so the new one is told apart.
    let before = js(
        c,
        "return [...document.querySelectorAll('[data-testid=recent-tasks] tr[data-task]')].map(r => r.dataset.task);",
    )
    .await?;
    // The card re-reads the pass every few seconds, and its target can still change
    // between passes (DRS keeps a recommendation only while it stays within 5 % of the
    // best): the row is read and its Apply clicked in one script, so the test checks the
    // recommendation it applied.
    let rec = js(
        c,
        "const r = document.querySelector('[data-testid=drs-recommendations] tr[data-drs-vm]');
         if (!r) return null;
         const rec = {vm: r.dataset.drsVm, from: r.dataset.from, to: r.dataset.to, priority: r.dataset.priority,
                      imbalance: document.querySelector('[data-testid=drs-imbalance]').textContent};
         r.querySelector('[data-action=drs-apply]').click();
         return rec;",
    )
    .await?;
    println!("DRS recommends, applied: {rec}");
    let (rec_vm, rec_from, rec_to) = (
        rec["vm"].as_str().unwrap_or_default().to_string(),
        rec["from"].as_str().unwrap_or_default().to_string(),
        rec["to"].as_str().unwrap_or_default().to_string(),
    );
    if rec_from != host
        || rec_to == host
        || !(1..=5).contains(
            &rec["priority"]
                .as_str()
                .and_then(|p| p.parse::<u8>().ok())
                .unwrap_or(0),
        )
    {
        return Err(format!(
            "an odd recommendation with {busy:?} on {host}: {rec}"
        ));
    }
    let task = wait_js(
        c,
        "the DRS migration task to finish",
        &format!(
            "const before = {before};
             const rows = [...document.querySelectorAll('[data-testid=recent-tasks] tr[data-task]')]
               .filter(r => !before.includes(r.dataset.task) && r.dataset.target === '{rec_vm}' && /relocate|migrat/i.test(r.dataset.kind));
             const done = rows.find(r => r.dataset.state === 'success' || r.dataset.state === 'error');
             return done ? {{state: done.dataset.state, text: done.textContent}} : null;"
        ),
        MIGRATION,
    )
    .await?;
    if task["state"] != "success" {
        return Err(format!("the DRS migration failed: {}", task["text"]));
    }
    // The inventory follows the hosts' polls: within a few of them, longer on a loaded
    // machine. A failure says where the center and the hosts think the VM is.
    let shown = wait_js(
        c,
        "the tree to show the VM on the recommended host",
        &format!("const n = document.querySelector('.tree [data-kind=vm][data-name=\"{rec_vm}\"]'); return n && n.dataset.host === '{rec_to}';"),
        MIGRATION,
    )
    .await;
    if let Err(e) = shown {
        let seen = tokio::task::block_in_place(|| {
            let admin = dc.center.admin();
            let vm = dc
                .center
                .call(&admin, "GET", &format!("/api/vcenter/vm/{rec_vm}"), "")
                .1;
            let hosts: Vec<String> = (1..=3)
                .map(|h| {
                    format!(
                        "host {h}: {}",
                        dc.lab.host_get(h, &format!("/vms/{rec_vm}"))["host"]
                    )
                })
                .collect();
            format!(
                "center: host {} state {}; {}",
                vm["host"],
                vm["info"]["state"],
                hosts.join(", ")
            )
        });
        return Err(format!("{e}; {seen}"));
    }
    // The card read the pass again: the applied recommendation is gone.
    wait_js(
        c,
        "the applied recommendation to leave the card",
        &format!("return !document.querySelector('[data-testid=drs-recommendations] tr[data-drs-vm=\"{rec_vm}\"][data-to=\"{rec_to}\"]');"),
        WAIT,
    )
    .await?;
    println!("DRS moved {rec_vm} from {rec_from} to {rec_to}");
    js(
        c,
        "document.querySelector('.drs-card').scrollIntoView({block: 'center'}); return true;",
    )
    .await?;
    screenshot(c, "18-drs-applied").await?;
    tokio::task::block_in_place(|| {
        let admin = dc.center.admin();
        for name in busy {
            let path = format!("/api/vcenter/vm/{name}/power?action=stop");
            let started = dc.center.ok(&admin, "POST", &path, "", 202);
            dc.center.task(&admin, started["task"].as_u64().unwrap());
        }
    });
    Ok(())
}

async fn scenario(c: &Client, dc: &Datacentre) -> Result {
    // Log in.
    c.goto(&dc.url).await.map_err(err("open the console"))?;
    wait_css(c, "[data-testid=login-form]", WAIT).await?;
    screenshot(c, "01-login").await?;
    // A wrong password first: the server's refusal shows as a readable message.
    log_in(c, &dc.user, "not-the-password").await?;
    let refused = wait_css(c, "[data-testid=login-error]", WAIT).await?;
    let refused = refused.text().await.map_err(err("login error"))?;
    println!("wrong password: {refused}");
    log_in(c, &dc.user, &dc.password).await?;
    wait_css(c, "[data-testid=inventory-tree]", WAIT).await?;

    // The inventory: 3 hosts and 6 VMs, all running.
    let counts = all_running(c, "", Duration::from_secs(90)).await?;
    println!("inventory: {counts}");

    // First paint and time to interactive: a fresh load of the console, logged in.
    c.goto(&dc.url).await.map_err(err("reload the console"))?;
    wait_css(c, ".tree [data-kind=vm]", WAIT).await?;
    let t = timings(c).await?;
    println!(
        "console load (ms since navigation start): first paint {}, first contentful paint {}, \
         DOM interactive {}, inventory on screen (interactive) {}",
        t["first_paint_ms"],
        t["first_contentful_paint_ms"],
        t["dom_interactive_ms"],
        t["inventory_ready_ms"]
    );
    screenshot(c, "02-inventory").await?;

    // Open a VM.
    let vm = js(
        c,
        "return document.querySelector('.tree [data-kind=vm]').dataset.name;",
    )
    .await?;
    let vm = vm.as_str().ok_or("no VM name in the tree")?.to_string();
    click(c, &format!(".tree [data-kind=vm][data-name='{vm}']")).await?;
    let from = wait_js(
        c,
        "the VM's page with its host",
        &format!("const v = document.querySelector('[data-testid=vm-view][data-vm=\"{vm}\"]'); return v && v.dataset.host ? v.dataset.host : null;"),
        WAIT,
    )
    .await?;
    let from = from.as_str().unwrap_or_default().to_string();
    println!("{vm} runs on {from}");
    screenshot(c, "03-vm-summary").await?;

    // Migrate it from its page to the first other host the dialog offers.
    click(c, "[data-action=migrate]").await?;
    wait_css(c, "[data-testid=dialog] input[name=target]:checked", WAIT).await?;
    let to = js(
        c,
        "return document.querySelector('[data-testid=dialog] input[name=target]:checked').value;",
    )
    .await?;
    let to = to
        .as_str()
        .ok_or("no destination host offered")?
        .to_string();
    if to == from {
        return Err(format!("the dialog offered the VM's own host {from}"));
    }
    screenshot(c, "04-migrate-dialog").await?;
    click(c, "[data-testid=dialog-submit]").await?;
    // The dialog closes when the server accepted the task (or shows the error).
    wait_js(
        c,
        "the migrate dialog to close",
        "const e = document.querySelector('[data-testid=dialog-error]'); if (e) return 'error: ' + e.textContent; return document.querySelector('[data-testid=dialog]') ? null : 'closed';",
        WAIT,
    )
    .await
    .and_then(|v| if v == "closed" { Ok(()) } else { Err(format!("migrate: {v}")) })?;
    println!("migrating {vm} from {from} to {to}");

    // The task in Recent tasks ends in success, and the VM's page shows its new host.
    let task = wait_js(
        c,
        "the migration task to finish",
        &format!(
            "const rows = [...document.querySelectorAll('[data-testid=recent-tasks] tr[data-task]')]
               .filter(r => r.dataset.target === '{vm}' && /relocate|migrat/i.test(r.dataset.kind));
             const done = rows.find(r => r.dataset.state === 'success' || r.dataset.state === 'error');
             return done ? {{state: done.dataset.state, text: done.textContent}} : null;"
        ),
        MIGRATION,
    )
    .await?;
    if task["state"] != "success" {
        return Err(format!("the migration task failed: {}", task["text"]));
    }
    wait_js(
        c,
        "the VM's host to change",
        &format!("const v = document.querySelector('[data-testid=vm-view]'); return v && v.dataset.host === '{to}';"),
        WAIT,
    )
    .await?;
    wait_js(
        c,
        "the tree to show the VM under its new host",
        &format!("const n = document.querySelector('.tree [data-kind=vm][data-name=\"{vm}\"]'); return n && n.dataset.host === '{to}';"),
        WAIT,
    )
    .await?;
    screenshot(c, "05-after-migration").await?;

    // Its console shows the guest's heartbeat lines.
    click(c, "[data-tab=console]").await?;
    wait_js(
        c,
        "the console to connect",
        "const t = document.querySelector('[data-testid=console]'); return t && t.dataset.state === 'open';",
        WAIT,
    )
    .await?;
    let line = wait_js(
        c,
        "an HB line in the console",
        "const rows = document.querySelector('.xterm-rows'); const m = rows && rows.textContent.match(/HB \\d+/); return m ? m[0] : null;",
        WAIT,
    )
    .await?;
    println!("console of {vm}: {line}");
    screenshot(c, "06-console").await?;

    // The other views render with the live data: the host it moved to, the cluster, the
    // VM's charts and the event log.
    click(c, &format!(".tree [data-kind=host][data-name='{to}']")).await?;
    wait_js(
        c,
        "the host's page listing the VM",
        &format!("const v = document.querySelector('[data-testid=host-view][data-host=\"{to}\"]'); return v && v.textContent.includes('{vm}');"),
        WAIT,
    )
    .await?;
    screenshot(c, "07-host-summary").await?;
    click(c, ".tree [data-kind=cluster]").await?;
    wait_css(c, "[data-testid=cluster-view]", WAIT).await?;
    screenshot(c, "08-cluster-summary").await?;
    // The administrator changes the DRS threshold: saved, and the summary shows it.
    click(c, "[data-action=cluster-settings]").await?;
    wait_css(c, "[data-testid=dialog] input[type=range]", WAIT).await?;
    js(
        c,
        "const r = document.querySelector('[data-testid=dialog] input[type=range]');
         r.value = '4'; r.dispatchEvent(new Event('input', {bubbles: true})); return true;",
    )
    .await?;
    screenshot(c, "12-cluster-settings").await?;
    click(c, "[data-testid=dialog-submit]").await?;
    wait_js(
        c,
        "the new DRS threshold on the cluster's page",
        "const e = document.querySelector('[data-testid=dialog-error]'); if (e) return 'error: ' + e.textContent;
         const d = document.querySelector('[data-prop=\"Migration threshold\"]');
         return !document.querySelector('[data-testid=dialog]') && d && d.textContent.trim() === '4' ? 'saved' : null;",
        WAIT,
    )
    .await
    .and_then(|v| if v == "saved" { Ok(()) } else { Err(format!("cluster settings: {v}")) })?;
    drs(c, dc, &to).await?;
    click(c, &format!(".tree [data-kind=vm][data-name='{vm}']")).await?;
    click(c, "[data-tab=monitor]").await?;
    wait_css(c, "[data-testid=monitor]", WAIT).await?;
    // Charts need two samples (20 s apart): wait for them, then show what there is.
    let _ = wait_js(
        c,
        "a chart",
        "return document.querySelector('.chart') !== null;",
        Duration::from_secs(45),
    )
    .await;
    screenshot(c, "09-vm-monitor").await?;
    click(c, "[data-tab=events]").await?;
    wait_css(c, "[data-testid=events] tr[data-event]", WAIT).await?;
    screenshot(c, "10-vm-events").await?;

    // An action the server refuses: the dialog stays open with the server's message.
    click(c, "[data-action=clone]").await?;
    let name = wait_css(c, "[data-testid=dialog] input", WAIT).await?;
    name.clear().await.map_err(err("clear the clone's name"))?;
    let taken = if vm == "vm-2" { "vm-3" } else { "vm-2" };
    name.send_keys(taken)
        .await
        .map_err(err("type the clone's name"))?;
    click(c, "[data-testid=dialog-submit]").await?;
    let refusal = wait_js(
        c,
        "the clone's refusal in the dialog",
        "const e = document.querySelector('[data-testid=dialog-error]'); if (e) return e.textContent; return document.querySelector('[data-testid=dialog]') ? null : 'CLOSED';",
        WAIT,
    )
    .await?;
    if refusal == "CLOSED" {
        return Err(format!("a clone named {taken} (taken) was accepted"));
    }
    println!("clone as {taken}: {refusal}");
    screenshot(c, "11-dialog-error").await?;
    click(c, "[data-testid=dialog] button.button:not(.primary)").await?;

    // Log out: back to the login page, and the session is gone.
    click(c, "[data-testid=logout]").await?;
    wait_css(c, "[data-testid=login-form]", WAIT).await?;
    c.goto(&dc.url).await.map_err(err("reload after logout"))?;
    wait_css(c, "[data-testid=login-form]", WAIT).await?;

    // A read-only user sees the VM with its actions disabled, the reason on them.
    tokio::task::block_in_place(|| {
        let admin = dc.center.admin();
        dc.center.ok(
            &admin,
            "POST",
            "/api/vinfra/users",
            r#"{"name": "viewer", "role": "read_only", "password": "viewer-password"}"#,
            201,
        );
    });
    log_in(c, "viewer", "viewer-password").await?;
    click(c, &format!(".tree [data-kind=vm][data-name='{vm}']")).await?;
    wait_js(
        c,
        "the VM's actions disabled for a read-only user",
        "const f = document.querySelector('[data-testid=vm-view] fieldset.toolbar'); return f && f.disabled;",
        WAIT,
    )
    .await?;
    screenshot(c, "13-read-only").await?;
    // Nor can it run DRS.
    click(c, ".tree [data-kind=cluster]").await?;
    wait_js(
        c,
        "Run DRS now disabled for a read-only user",
        "const b = document.querySelector('[data-action=drs-run]'); return b && b.disabled;",
        WAIT,
    )
    .await?;
    Ok(())
}
