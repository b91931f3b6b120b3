//! The browser side of the web console's tests: Debian's `chromedriver` and headless
//! `chromium` started on loopback for one test and ended by PID, a fantoccini client over
//! plain HTTP, bounded waits, screenshots under `target/browser-screenshots/` and the
//! page's Navigation/Paint Timing figures.
#![allow(dead_code, reason = "each test binary uses part of it")]

pub mod datacentre;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use vinfra_testkit::{tool_or_skip, workspace_root};

/// What a scenario step fails with: a readable message (the test closes the browser
/// before it panics with it, so no chromium is left behind).
pub type Result<T = (), E = String> = std::result::Result<T, E>;

/// How long one wait for something on the page may take.
pub const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// True when `chromium` and `chromedriver` run; otherwise a skip (a failure under CI).
pub fn browser_or_skip() -> bool {
    tool_or_skip("chromium", &["--version"], "apt-get install chromium")
        && tool_or_skip(
            "chromedriver",
            &["--version"],
            "apt-get install chromium-driver",
        )
}

/// The `chromium` that [`browser_or_skip`] found on `PATH` (Debian: /usr/bin/chromium).
fn chromium_path() -> String {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .map_or_else(|| "/usr/bin/chromium".into(), |p| p.display().to_string())
}

/// A free TCP port on loopback (bound and released: the caller binds it next).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The PIDs of `pid`'s descendants, children before their own children, read from
/// `/proc` (chromedriver starts chromium, which starts its helpers).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The fields after the command's closing parenthesis: state, ppid, ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((p, ppid));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    // Bounded: each PID is added once, and there are finitely many.
    while i < found.len() && found.len() < 4096 {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// `chromedriver` on a free loopback port, ended (with the chromium it started, by PID)
/// when dropped.
pub struct Driver {
    child: Child,
    /// Its WebDriver URL.
    pub url: String,
    log: PathBuf,
}

impl Driver {
    pub fn start(log_dir: &Path) -> Driver {
        let port = free_port();
        let log = log_dir.join("chromedriver.log");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    /// A headless chromium session at 1280x800 that accepts the center's self-signed
    /// certificate.
    pub async fn session(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium_path(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--ignore-certificate-errors",
                    "--window-size=1280,800",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("no chromium session from chromedriver: {e}"));
        // --window-size is the window's; make the page itself 1280x800.
        if let Ok(Value::Array(frame)) = client
            .execute(
                "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];",
                vec![],
            )
            .await
        {
            let extra = |i: usize| frame.get(i).and_then(Value::as_u64).unwrap_or(0);
            let width = u32::try_from(1280 + extra(0)).unwrap_or(1280);
            let height = u32::try_from(800 + extra(1)).unwrap_or(800);
            let _ = client.set_window_size(width, height).await;
        }
        client
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium first (children before chromedriver, whose exit would orphan them).
        for pid in descendants(self.child.id()).into_iter().rev() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.log;
    }
}

/// Where screenshots go: `<workspace>/target/browser-screenshots/` (CI keeps it as an
/// artifact).
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves the page as `<name>.png`; returns its path.
pub async fn screenshot(c: &Client, name: &str) -> Result<PathBuf> {
    let png = c
        .screenshot()
        .await
        .map_err(|e| format!("screenshot {name}: {e}"))?;
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("screenshot: {}", path.display());
    Ok(path)
}

/// Runs `script` (a function body that returns a JSON value) in the page.
pub async fn js(c: &Client, script: &str) -> Result<Value> {
    c.execute(script, vec![])
        .await
        .map_err(|e| format!("script failed: {e}\n{script}"))
}

/// Waits up to `limit` for `script` to return something other than `null`/`false`;
/// returns it. `what` names it in the error.
pub async fn wait_js(c: &Client, what: &str, script: &str, limit: Duration) -> Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match c.execute(script, vec![]).await {
            Ok(v) if !v.is_null() && v != Value::Bool(false) => return Ok(v),
            Ok(v) => v,
            Err(e) => Value::String(e.to_string()),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {} s waiting for {what} (last: {last})",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for a CSS selector to match; returns the element.
pub async fn wait_css(
    c: &Client,
    css: &str,
    limit: Duration,
) -> Result<fantoccini::elements::Element> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            return Ok(e);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {} s waiting for `{css}`",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Clicks the first element matching `css` (waiting for it).
pub async fn click(c: &Client, css: &str) -> Result {
    let e = wait_css(c, css, WAIT).await?;
    e.click().await.map_err(|e| format!("click `{css}`: {e}"))
}

/// The page's load figures, ms since navigation start: first paint, first contentful
/// paint, DOM interactive, DOMContentLoaded end, load end, and the console's own
/// `vinfra-inventory-ready` mark (the inventory tree on screen: usable).
pub async fn timings(c: &Client) -> Result<Value> {
    js(
        c,
        "const nav = performance.getEntriesByType('navigation')[0] || {};
         const paint = Object.fromEntries(performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
         const ready = performance.getEntriesByName('vinfra-inventory-ready')[0];
         return {
           first_paint_ms: paint['first-paint'] ?? null,
           first_contentful_paint_ms: paint['first-contentful-paint'] ?? null,
           dom_interactive_ms: nav.domInteractive ?? null,
           dom_content_loaded_ms: nav.domContentLoadedEventEnd ?? null,
           load_ms: nav.loadEventEnd ?? null,
           inventory_ready_ms: ready ? ready.startTime : null,
         };",
    )
    .await
}

/// Logs in from the login page by typing (the page's inputs keep their state from input
/// events).
pub async fn log_in(c: &Client, user: &str, password: &str) -> Result {
    let field = wait_css(c, "input[name=user]", WAIT).await?;
    field.clear().await.map_err(err("clear the user field"))?;
    field.send_keys(user).await.map_err(err("type the user"))?;
    let field = wait_css(c, "input[name=password]", WAIT).await?;
    field.clear().await.map_err(err("clear the password"))?;
    field
        .send_keys(password)
        .await
        .map_err(err("type the password"))?;
    click(c, "[data-testid=login-submit]").await
}

/// A WebDriver error as a step's message.
pub fn err(what: &str) -> impl Fn(fantoccini::error::CmdError) -> String + '_ {
    move |e| format!("{what}: {e}")
}
