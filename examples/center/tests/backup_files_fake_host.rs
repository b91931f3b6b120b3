//! Single-file restore through the center, against a host API served in this process by
//! a fake host (no KVM, no root: runs anywhere) that answers `GET /backups/files` and
//! `GET /backups/file` from a real vcb repository, as the reference host does (the
//! shared `vinfra_host::guest_files`): a disk holding an ext4 filesystem (`mke2fs -d`)
//! is backed up, then browsed and downloaded through `/api/vinfra/backup/files` and
//! `/api/vinfra/backup/file`. read_only browses but may not download; an operator
//! downloads a file byte for byte and a folder as tar, recorded as an event; bad input
//! is 422 naming the field. In headless chromium, the VM's Backups card browses the
//! backup and a file's download link is fetched by the page, and "Restore disk" writes
//! the backup's disk back into the (shut off) VM through its host.
#![allow(clippy::unwrap_used)]

mod browser_support;
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::Center;
use vinfra_host::api::{
    serve, ApiError, ApiToken, BackupDir, BackupFileQuery, BackupInfo, BackupsQuery, Console,
    FileDownload, HostCapacity, HostEvent, HostInfo, HostService, IncomingReady, IncomingRequest,
    PowerState, RestoreDiskRequest, Result, TaskHandle, VmInfo, VmOp, VmSpec,
};
use vinfra_testkit::tool_or_skip;
use vinfra_vcb::{BackupOptions, InitOptions, KdfParams, LocalDir, MemDisk, Repository};

const PASSWORD: &[u8] = b"fake host repository";

/// A host with VM `a` shut off, whose backups are in a real repository.
struct FilesHost {
    repository: PathBuf,
    /// The disks written back (`restore-disk` asked of it).
    restored: Mutex<Vec<RestoreDiskRequest>>,
}

impl FilesHost {
    fn open(&self, q: &BackupFileQuery) -> Result<Repository> {
        if Path::new(&q.repository) != self.repository {
            return Err(ApiError::InvalidValue {
                field: "repository".into(),
                why: format!("no backup repository at {}", q.repository),
            });
        }
        let storage = LocalDir::open(&self.repository).unwrap();
        Ok(Repository::open(storage, PASSWORD).unwrap())
    }
}

impl HostService for FilesHost {
    fn host_info(&self) -> Result<HostInfo> {
        Ok(HostInfo::new(
            1,
            "fake1",
            HostCapacity {
                cpus: 2,
                memory_mib: 4096,
            },
        ))
    }
    fn list_vms(&self) -> Result<Vec<VmInfo>> {
        Ok(vec![self.vm("a")?])
    }
    fn vm(&self, name: &str) -> Result<VmInfo> {
        if name != "a" {
            return Err(ApiError::VmNotFound(name.into()));
        }
        let mut info = VmInfo::new(VmSpec::new(name, "/k", 16), PowerState::ShutOff);
        info.host = Some(1);
        Ok(info)
    }
    fn create_vm(&self, _: VmSpec) -> Result<VmInfo> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn delete_vm(&self, _: &str) -> Result<()> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn start_op(&self, name: &str, op: VmOp, task: TaskHandle) -> Result<()> {
        self.vm(name)?;
        let VmOp::RestoreDisk(req) = op else {
            return Err(ApiError::Unsupported("fake".into()));
        };
        self.restored.lock().unwrap().push(req.clone());
        task.succeed(serde_json::json!({"vm": name, "disk": req.disk}));
        Ok(())
    }
    fn console(&self, name: &str) -> Result<Console> {
        Err(ApiError::VmNotFound(name.into()))
    }
    fn events(&self, _: u64, _: usize) -> Result<Vec<HostEvent>> {
        Ok(Vec::new())
    }
    fn prepare_incoming(&self, r: IncomingRequest) -> Result<IncomingReady> {
        Err(ApiError::VmNotFound(r.vm))
    }
    fn backups(&self, q: BackupsQuery) -> Result<Vec<BackupInfo>> {
        let repo = Repository::open(LocalDir::open(&self.repository).unwrap(), PASSWORD).unwrap();
        let _ = q;
        Ok(repo
            .snapshots()
            .unwrap()
            .iter()
            .map(|s| BackupInfo {
                id: s.id.to_hex(),
                vm: s.manifest.vm.clone(),
                time_unix_s: s.manifest.time_unix_s,
                host: "host1".into(),
                parent: None,
                disks: s.manifest.disks.iter().map(|d| d.name.clone()).collect(),
                bytes: 4 << 20,
                bytes_read: 4 << 20,
                bytes_new: 4 << 20,
            })
            .collect())
    }
    fn backup_files(&self, q: BackupFileQuery) -> Result<BackupDir> {
        vinfra_host::guest_files::list_dir(&self.open(&q)?, &q)
    }
    fn backup_file(&self, q: BackupFileQuery) -> Result<FileDownload> {
        let repo = self.open(&q)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            vinfra_host::guest_files::download(&repo, &q, |a| tx.send(a).unwrap());
        });
        rx.recv().unwrap()
    }
}

/// The guest's files; `big.bin` spans several 64 KiB grains and is not text.
fn tree() -> BTreeMap<&'static str, Vec<u8>> {
    let mut t = BTreeMap::new();
    t.insert("etc/hosts", b"127.0.0.1 localhost\n".to_vec());
    t.insert(
        "big.bin",
        (0..200_000u32)
            .map(|i| u8::try_from(i.wrapping_mul(2_654_435_761) >> 24).unwrap())
            .collect(),
    );
    t.insert("docs/readme.md", b"# docs\n".repeat(100));
    t
}

/// A repository in `dir` with one backup of VM `a`: a 4 MiB disk that is an ext4
/// filesystem of `files`. Its id.
fn backed_up(dir: &Path, files: &BTreeMap<&str, Vec<u8>>) -> String {
    let src = dir.join("src");
    for (p, data) in files {
        let f = src.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
    let img = dir.join("ext4.img");
    let out = Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("4096k")
        .output()
        .unwrap();
    assert!(out.status.success(), "mke2fs: {out:?}");
    let mut disk = MemDisk::from_vec(std::fs::read(&img).unwrap());
    let repo = Repository::init(
        LocalDir::create(dir.join("repo")).unwrap(),
        PASSWORD,
        &InitOptions::default().kdf(KdfParams::INSECURE_FAST),
    )
    .unwrap();
    let snap = repo
        .backup(
            &BackupOptions::new("a", 1_700_000_000),
            &[("disk0", &disk.snapshot())],
        )
        .unwrap();
    snap.id.to_hex()
}

fn add_user(center: &Center, admin: &str, name: &str, role: &str) -> String {
    center.ok(
        admin,
        "POST",
        "/api/vinfra/users",
        &format!(r#"{{"name": "{name}", "role": "{role}", "password": "{name}-password"}}"#),
        201,
    );
    center.login(name, &format!("{name}-password"))
}

/// `GET path` with a session: status, headers we check, the raw body.
fn fetch(center: &Center, token: &str, path: &str) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut r = agent
        .get(format!("{}{path}", center.url))
        .header("vinfra-api-session-id", token)
        .call()
        .unwrap();
    let headers = ["content-type", "content-disposition", "content-length"]
        .iter()
        .filter_map(|h| {
            r.headers()
                .get(*h)
                .map(|v| ((*h).to_string(), v.to_str().unwrap().to_string()))
        })
        .collect();
    let mut body = Vec::new();
    r.body_mut().as_reader().read_to_end(&mut body).unwrap();
    (r.status().as_u16(), headers, body)
}

#[test]
fn backup_files_are_browsed_by_any_role_and_downloaded_by_operators() {
    if !tool_or_skip("mke2fs", &["-V"], "apt-get install e2fsprogs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = tree();
    let id = backed_up(dir.path(), &files);
    let repo = dir.path().join("repo");
    let host = Arc::new(FilesHost {
        repository: repo.clone(),
        restored: Mutex::default(),
    });
    let token = ApiToken::from_key_hex(&"42".repeat(32)).unwrap();
    let server = serve("127.0.0.1:0".parse().unwrap(), token, host).unwrap();
    let args = [
        "--host".to_string(),
        format!("fake-1=http://{}", server.local_addr()),
    ];
    let center = Center::start(&dir.path().join("state"), &args);
    let admin = center.admin();
    center.wait("fake-1 connected and its VM", 20, || {
        center.call(&admin, "GET", "/api/vcenter/vm/a", "").1["host"] == "fake-1"
    });
    let ro = add_user(&center, &admin, "ro", "read_only");
    let op = add_user(&center, &admin, "op", "operator");
    let repo = repo.display().to_string();
    let url = |route: &str, path: &str, more: &str| {
        format!("/api/vinfra/backup/{route}?repository={repo}&backup={id}&vm=a&disk=0&path={path}{more}")
    };

    // read_only browses: folders first, sizes, the filesystem found.
    let root = center.ok(&ro, "GET", &url("files", "/", ""), "", 200);
    assert_eq!(root["fs"], "ext4", "{root}");
    assert_eq!(root["backup"], id.as_str(), "{root}");
    let names: Vec<&str> = root["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs", "etc", "lost+found", "big.bin"], "{root}");
    assert_eq!(root["entries"][3]["size"], 200_000, "{root}");
    let etc = center.ok(&ro, "GET", &url("files", "/etc", ""), "", 200);
    assert_eq!(etc["entries"][0]["name"], "hosts", "{etc}");
    // ... searches (the host's find: matches named by their path below the folder) ...
    let found = center.ok(&ro, "GET", &url("files", "/", "&find=*.md"), "", 200);
    assert_eq!(found["entries"][0]["name"], "docs/readme.md", "{found}");
    assert_eq!(found["entries"].as_array().unwrap().len(), 1, "{found}");
    // ... and may not download: a backup holds the guest's secrets.
    let (s, e) = center.call(&ro, "GET", &url("file", "/etc/hosts", ""), "");
    assert_eq!(s, 403, "{e}");

    // An operator downloads a file byte for byte, streamed with its length.
    let (status, headers, body) = fetch(&center, &op, &url("file", "/big.bin", ""));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body == files["big.bin"], "{} bytes differ", body.len());
    assert_eq!(headers["content-length"], "200000");
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert!(
        headers["content-disposition"].starts_with("attachment; filename=\"big.bin\""),
        "{headers:?}"
    );
    // A folder as tar: the stream starts with its first entry's header.
    let (status, headers, body) = fetch(&center, &op, &url("file", "/docs", "&format=tar"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/x-tar");
    assert!(
        headers["content-disposition"].contains("docs.tar"),
        "{headers:?}"
    );
    assert!(body.starts_with(b"docs"), "{:?}", &body[..16]);
    assert_eq!(body.len() % 512, 0);
    // Downloads are recorded.
    let events = center.ok(&admin, "GET", "/api/vinfra/events?limit=1000", "", 200);
    let downloads: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "backup.file_downloaded")
        .collect();
    assert_eq!(downloads.len(), 2, "{events}");
    assert_eq!(downloads[0]["user"], "op", "{events}");

    // Bad input: 422 naming the field (checked here, or by the host).
    for (path, field) in [
        (url("files", "/nope", ""), "path"),
        (url("files", "/etc/../etc", ""), "path"),
        (url("files", "/etc/hosts", ""), "path"),
        (url("file", "/docs", ""), "path"),
        (url("files", "/", "&format=tar"), "format"),
        (url("files", "/", "&find=%5B"), "find"),
        (url("file", "/docs/readme.md", "&find=*"), "find"),
        (url("files", "/", "").replace("disk=0", "disk=2"), "disk"),
        (url("files", "/", "&partition=3"), "partition"),
        (
            url("files", "/", "").replace(&id, "deadbeefdeadbeef"),
            "backup",
        ),
        (url("files", "/", "").replace(&id, "xyz"), "backup"),
        (
            url("files", "/", "").replace(&repo, "relative"),
            "repository",
        ),
        (
            url("files", "/", "").replace(&repo, "/elsewhere"),
            "repository",
        ),
    ] {
        let (s, e) = center.call(&op, "GET", &path, "");
        assert_eq!(s, 422, "{path}: {e}");
        assert_eq!(e["error"]["field"], field, "{path}: {e}");
    }
    let (s, e) = center.call(
        &op,
        "GET",
        &format!("{}&color=red", url("files", "/", "")),
        "",
    );
    assert_eq!(s, 400, "{e}");
    // Both routes are in the OpenAPI document.
    let (s, doc) = center.send("GET", "/api/openapi.json", &[], "");
    assert_eq!(s, 200);
    for route in ["/api/vinfra/backup/files", "/api/vinfra/backup/file"] {
        assert!(doc["paths"][route]["get"].is_object(), "{route}");
    }
    drop(center);
    server.stop();
}

fn web_dist_or_skip() -> bool {
    let index = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist/index.html");
    if index.exists() {
        return true;
    }
    vinfra_testkit::skip(format_args!(
        "{} is missing: cd examples/center/web && npm ci && npm run build",
        index.display()
    ));
    false
}

/// The VM's Backups card in headless chromium: *Browse files* on the backup, the root
/// listed folders first, a folder opened by a click (the breadcrumb follows), a file's
/// download link fetched by the page with its session cookie, byte for byte.
/// Screenshot `22-backup-files`. Needs `web/dist`, chromium and chromedriver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_browses_a_backup_and_downloads_a_file() {
    use browser_support::{
        browser_or_skip, click, log_in, screenshot, wait_css, wait_js, Driver, WAIT,
    };
    if !web_dist_or_skip() || !browser_or_skip() {
        return;
    }
    if !tool_or_skip("mke2fs", &["-V"], "apt-get install e2fsprogs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = tree();
    let path = dir.path().to_path_buf();
    let (server, center, repo, host) = tokio::task::spawn_blocking(move || {
        backed_up(&path, &tree());
        let repo = path.join("repo");
        let host = Arc::new(FilesHost {
            repository: repo.clone(),
            restored: Mutex::default(),
        });
        let token = ApiToken::from_key_hex(&"42".repeat(32)).unwrap();
        let server = serve("127.0.0.1:0".parse().unwrap(), token, host.clone()).unwrap();
        let args = [
            "--host".to_string(),
            format!("fake-1=http://{}", server.local_addr()),
        ];
        let center = Center::start(&path.join("state"), &args);
        let admin = center.admin();
        center.wait("fake-1 connected and its VM", 20, || {
            center.call(&admin, "GET", "/api/vcenter/vm/a", "").1["host"] == "fake-1"
        });
        (server, center, repo.display().to_string(), host)
    })
    .await
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let driver = Driver::start(logs.path());
    let c = driver.session().await;
    let expected = String::from_utf8(files["docs/readme.md"].clone()).unwrap();
    let outcome: browser_support::Result = async {
        let url = &center.url;
        c.goto(url).await.map_err(|e| format!("open: {e}"))?;
        log_in(&c, "admin", support::ADMIN_PASSWORD).await?;
        wait_css(&c, ".tree", WAIT).await?;
        c.goto(&format!("{url}/#/vm/a"))
            .await
            .map_err(|e| format!("open the VM: {e}"))?;
        let field = wait_css(&c, "form.inline-form input[placeholder='another path']", WAIT).await?;
        field.send_keys(&repo).await.map_err(|e| format!("type: {e}"))?;
        click(&c, "form.inline-form button[type=submit]").await?;
        click(&c, "[data-testid=vm-backups] [data-action=browse-files]").await?;
        wait_js(
            &c,
            "the root listed, folders first",
            "const rows = [...document.querySelectorAll('[data-testid=backup-file-list] tr[data-entry]')];
             const names = rows.map(r => r.dataset.entry).join(',');
             return names === 'docs,etc,lost+found,big.bin' ? names : null;",
            WAIT,
        )
        .await?;
        click(&c, "[data-testid=backup-file-list] tr[data-entry=docs] button.crumb").await?;
        wait_js(
            &c,
            "docs opened",
            "const r = document.querySelector('[data-testid=backup-file-list] tr[data-entry=\"readme.md\"]');
             const crumbs = document.querySelector('[data-testid=crumbs]').textContent;
             return r && crumbs.includes('docs') ? crumbs : null;",
            WAIT,
        )
        .await?;
        screenshot(&c, "22-backup-files").await?;
        let got = wait_js(
            &c,
            "the file fetched through its link",
            "const a = document.querySelector('tr[data-entry=\"readme.md\"] a[data-action=download]');
             if (!a) return null;
             if (!window.__got) { window.__got = 'pending';
               fetch(a.href, {credentials: 'same-origin'}).then(r => r.text()).then(t => window.__got = t); }
             return window.__got === 'pending' ? null : window.__got;",
            WAIT,
        )
        .await?;
        if got.as_str() != Some(expected.as_str()) {
            return Err(format!("downloaded {} bytes, not the file", got.as_str().map_or(0, str::len)));
        }
        // A search from the root: the match named by its path, its download link there.
        click(&c, "[data-testid=crumbs] button.crumb").await?;
        let find = wait_css(&c, "[data-testid=backup-find] input[data-field=find]", WAIT).await?;
        find.send_keys("*.MD").await.map_err(|e| format!("type: {e}"))?;
        click(&c, "[data-testid=backup-find] [data-action=find]").await?;
        wait_js(
            &c,
            "the search's one match",
            "const rows = [...document.querySelectorAll('[data-testid=backup-file-list] tr[data-entry]')];
             const names = rows.map(r => r.dataset.entry).join(',');
             const a = document.querySelector('tr[data-entry=\"docs/readme.md\"] a[data-action=download]');
             return names === 'docs/readme.md' && a && a.href.includes('path=%2Fdocs%2Freadme.md') ? names : null;",
            WAIT,
        )
        .await?;
        screenshot(&c, "24-backup-find").await?;
        // Its disk written back into the VM (off): the dialog warns, the host is asked.
        click(&c, "[data-testid=dialog] [aria-label=Close], .modal-backdrop [aria-label=Close]").await?;
        click(&c, "[data-testid=vm-backups] [data-action=restore-disk]").await?;
        wait_css(&c, "[data-testid=restore-disk-warning]", WAIT).await?;
        screenshot(&c, "23-restore-disk").await?;
        click(&c, "[data-testid=dialog-submit]").await?;
        wait_js(
            &c,
            "the restore-disk dialog to close",
            "const e = document.querySelector('[data-testid=dialog-error]'); if (e) return 'error: ' + e.textContent; return document.querySelector('[data-testid=restore-disk-warning]') ? null : 'closed';",
            WAIT,
        )
        .await
        .and_then(|v| if v.as_str() == Some("closed") { Ok(()) } else { Err(format!("restore-disk: {v}")) })?;
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let asked = host.restored.lock().unwrap().clone();
            if let Some(r) = asked.first() {
                if (r.disk, r.repository.as_str()) != (0, repo.as_str()) {
                    return Err(format!("the host was asked {r:?}"));
                }
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err("the host was never asked to restore the disk".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
    .await;
    if outcome.is_err() {
        let _ = screenshot(&c, "failure-backup-files").await;
    }
    let _ = c.close().await;
    drop(driver);
    tokio::task::spawn_blocking(move || {
        drop(center);
        server.stop();
    })
    .await
    .unwrap();
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
