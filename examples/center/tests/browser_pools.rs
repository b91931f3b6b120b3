//! The cluster view's Rules and Resource pools cards in headless chromium, against a
//! center over HTTPS managing two fake hosts served in this process (no KVM, no root):
//! create an anti-affinity rule by picking its VMs, see the DRS card recommend the move
//! that separates them (the rule named in the reason); a rule of one VM refused with the
//! server's message in the dialog; create a resource pool and put a VM into it.
//! Screenshots: `19-rules`, `20-rule-refused`, `21-resource-pools`.
//!
//! Needs `web/dist` and chromium + chromedriver: without them it skips, and fails under
//! CI=true.

#![allow(clippy::unwrap_used)]

mod browser_support;
mod fake_cluster;
mod support;

use browser_support::{
    browser_or_skip, click, js, screenshot, wait_css, wait_js, Driver, Result, WAIT,
};
use fantoccini::Client;
use support::ADMIN_PASSWORD;
use vinfra_testkit::skip;

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

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Types into the input matching `css` (the console's inputs keep their state from input
/// events).
async fn type_into(c: &Client, css: &str, text: &str) -> Result {
    let field = wait_css(c, css, WAIT).await?;
    field.clear().await.map_err(err("clear a field"))?;
    field.send_keys(text).await.map_err(err("type"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_pools_are_edited_in_the_cluster_view() {
    if !web_dist_or_skip() || !browser_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (center, servers, _vms) = tokio::task::spawn_blocking({
        let path = dir.path().to_path_buf();
        move || fake_cluster::cluster(&path, false)
    })
    .await
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let driver = Driver::start(logs.path());
    let client = driver.session().await;
    let outcome = scenario(&client, &center.url).await;
    if outcome.is_err() {
        let _ = screenshot(&client, "failure-pools").await;
    }
    let _ = client.close().await;
    drop(driver);
    tokio::task::spawn_blocking(move || {
        drop(center);
        drop(servers);
    })
    .await
    .unwrap();
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

async fn scenario(c: &Client, url: &str) -> Result {
    c.goto(url).await.map_err(err("open the console"))?;
    type_into(c, "input[name=user]", "admin").await?;
    type_into(c, "input[name=password]", ADMIN_PASSWORD).await?;
    click(c, "[data-testid=login-submit]").await?;
    wait_css(c, ".tree [data-kind=cluster]", WAIT).await?;
    c.goto(&format!("{url}/#/cluster/cluster-1"))
        .await
        .map_err(err("open the cluster"))?;
    wait_css(c, "[data-testid=cluster-view]", WAIT).await?;

    // A new anti-affinity rule over a and b (both on fake-1).
    click(c, "[data-action=rule-new]").await?;
    type_into(c, "[data-field=rule-name]", "apart").await?;
    click(c, "[data-testid=rule-vms] input[value=a]").await?;
    click(c, "[data-testid=rule-vms] input[value=b]").await?;
    click(c, "[data-testid=dialog-submit]").await?;
    wait_css(c, "[data-testid=drs-rules] [data-rule=apart]", WAIT).await?;
    // The DRS card reads the rule: a recommendation that names it.
    c.refresh().await.map_err(err("reload"))?;
    wait_js(
        c,
        "a DRS recommendation naming the rule",
        "const t = document.querySelector('[data-testid=drs-recommendations]');
         return t && t.textContent.includes('apart') ? t.textContent : null;",
        WAIT,
    )
    .await?;
    screenshot(c, "19-rules").await?;

    // A rule of one VM: the server's message in the dialog, which stays open.
    click(c, "[data-action=rule-new]").await?;
    type_into(c, "[data-field=rule-name]", "lonely").await?;
    click(c, "[data-testid=rule-vms] input[value=c]").await?;
    click(c, "[data-testid=dialog-submit]").await?;
    let e = wait_css(c, "[data-testid=dialog-error]", WAIT).await?;
    let text = e.text().await.map_err(err("read the error"))?;
    if !text.contains("at least 2 VMs") {
        return Err(format!("unexpected dialog error: {text}"));
    }
    screenshot(c, "20-rule-refused").await?;
    click(c, ".modal-foot .button:not(.primary)").await?;

    // A resource pool, and VM a put into it.
    click(c, "[data-action=pool-new]").await?;
    type_into(c, "[data-field=pool-name]", "prod").await?;
    type_into(c, "[data-field=CPU-reservation]", "1000").await?;
    click(c, "[data-testid=dialog-submit]").await?;
    wait_css(c, "[data-testid=resource-pools] [data-pool=prod]", WAIT).await?;
    click(c, "[data-pool=prod] [data-action=pool-vms]").await?;
    click(c, "[data-testid=pool-vms] input[value=a]").await?;
    click(c, "[data-testid=dialog-submit]").await?;
    wait_js(
        c,
        "a in pool prod",
        "const r = document.querySelector('[data-pool=prod] td:nth-child(5)');
         return r && r.textContent.trim() === 'a' && !document.querySelector('[data-testid=dialog]') ? true : null;",
        WAIT,
    )
    .await?;
    let cpu = js(
        c,
        "return document.querySelector('[data-pool=prod] td:nth-child(2)').textContent;",
    )
    .await?;
    if !cpu.as_str().unwrap_or("").contains("1000") {
        return Err(format!("pool prod's CPU shows {cpu}"));
    }
    screenshot(c, "21-resource-pools").await?;
    Ok(())
}
