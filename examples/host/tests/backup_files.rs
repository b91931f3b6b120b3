//! Single files out of an image backup through the reference host's API, on a
//! `vinfra-lab` cluster of one real `vinfra-host`: a VM's disk holds an ext4 filesystem
//! built with `mke2fs -d` from known files (written into the disk through a mount of the
//! lab's volume of the test's own), the VM is backed up through the API, and
//! `GET /backups/files` lists its directories (folders first, sizes, times) and
//! `GET /backups/file` downloads a file byte for byte and a folder as a tar. Bad input
//! answers 422 naming the field: an unknown backup, a disk or partition the backup
//! lacks, a path that is missing, climbs out (`..`) or is the wrong kind.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vinfra_testkit::tool_or_skip;
use vinfra_vmfs::disk::VirtualDisk;
use vinfra_vmfs::{FileDevice, MonotonicClock, MountOptions, Volume};

mod support;
use support::Lab;

/// The test's vmfs slot (hosts use 1..=N, the lab 15, VM children 16..63).
const TEST_SLOT: u32 = 14;
/// The VM's disk, all of it the ext4 filesystem.
const DISK_MIB: u64 = 8;

/// The guest's files: path -> content; `big.bin` spans several 64 KiB grains.
fn tree() -> BTreeMap<&'static str, Vec<u8>> {
    let mut t = BTreeMap::new();
    t.insert("etc/hosts", b"127.0.0.1 localhost\n10.0.0.5 db\n".to_vec());
    t.insert(
        "big.bin",
        (0..300_000u32)
            .map(|i| u8::try_from(i.wrapping_mul(2_654_435_761) >> 24).unwrap())
            .collect(),
    );
    t.insert("docs/readme.md", b"# docs\n".repeat(1000));
    t.insert("docs/deep/notes.conf", b"key = value\n".to_vec());
    t
}

/// An ext4 image of `len` bytes holding `files` (mke2fs -d, times fixed).
fn ext4_image(work: &Path, files: &BTreeMap<&str, Vec<u8>>, len: u64) -> Vec<u8> {
    let src = work.join("src");
    for (p, data) in files {
        let f = src.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
    let img = work.join("ext4.img");
    let out = Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(&src)
        .arg(&img)
        .arg(format!("{}k", len / 1024))
        .output()
        .unwrap();
    assert!(out.status.success(), "mke2fs: {out:?}");
    std::fs::read(img).unwrap()
}

/// Writes `data` at the start of VM `vm`'s disk 0 through a mount of the lab's volume of
/// the test's own.
fn write_disk(lab_dir: &Path, vm: &str, data: &[u8]) {
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(lab_dir.join("lab.json")).unwrap()).unwrap();
    let path = PathBuf::from(record["volume"].as_str().unwrap());
    let dev = Arc::new(FileDevice::open(&path, false).unwrap());
    let mut mo = MountOptions::default();
    mo.pid = std::process::id();
    mo.name = "backup_files".into();
    let volume = Volume::mount(dev, TEST_SLOT, &mo, Arc::new(MonotonicClock::new())).unwrap();
    let heartbeat = volume.spawn_heartbeat();
    {
        let mut disk = VirtualDisk::open(&volume, &format!("/vms/{vm}/disk0.vmdk")).unwrap();
        disk.write_at(data, 0).unwrap();
        disk.sync().unwrap();
    }
    drop(heartbeat);
    volume.unmount().unwrap();
}

/// `GET path?query` on host 1, the raw answer: status, headers we check, body bytes.
fn fetch(
    lab: &Lab,
    path: &str,
    query: &[(&str, &str)],
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut r = agent
        .get(format!("{}/api/v1{path}", lab.apis[0]))
        .header("Authorization", &format!("Bearer {}", lab.token.as_str()))
        .query_pairs(query.iter().copied())
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

fn json_of(answer: &(u16, BTreeMap<String, String>, Vec<u8>)) -> Value {
    serde_json::from_slice(&answer.2).unwrap_or(Value::Null)
}

#[test]
fn guest_files_are_listed_and_downloaded_out_of_a_backup() {
    if !tool_or_skip("mke2fs", &["-V"], "apt-get install e2fsprogs") {
        return;
    }
    let Some(lab) = Lab::up_guest(1, "workload", &[]) else {
        return;
    };
    let files = tree();
    let img = ext4_image(lab.dir.path(), &files, DISK_MIB << 20);
    let spec = json!({"name": "f", "kernel": lab.kernel, "memory_mib": 16,
        "ha": {"priority": "disabled"}, "disks": [{"size_mib": DISK_MIB}]});
    lab.ok(1, "POST", "/vms", &spec.to_string(), 201);
    write_disk(&lab.path(), "f", &img);

    let repo = lab.dir.path().join("backups").display().to_string();
    let t = lab.op_with(1, "f", "backup", &json!({"repository": repo}).to_string());
    assert_eq!(t["state"], "success", "{t}");
    let id = t["result"]["backup"].as_str().unwrap().to_string();
    let q = |path: &'static str| {
        vec![
            ("repository", repo.as_str()),
            ("backup", id.as_str()),
            ("disk", "0"),
            ("path", path),
        ]
    };

    // The root: folders first, then files by name; the filesystem found on its own.
    let root = fetch(&lab, "/backups/files", &q("/"));
    assert_eq!(root.0, 200, "{}", String::from_utf8_lossy(&root.2));
    let root = json_of(&root);
    assert_eq!(root["fs"], "ext4", "{root}");
    assert_eq!(root["partition"], 0, "{root}");
    assert_eq!(root["disk"], "disk0", "{root}");
    assert_eq!(root["vm"], "f", "{root}");
    assert_eq!(root["truncated"], false, "{root}");
    let names: Vec<(&str, &str)> = root["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("docs", "dir"),
            ("etc", "dir"),
            ("lost+found", "dir"),
            ("big.bin", "file")
        ],
        "{root}"
    );
    let big = &root["entries"][3];
    assert_eq!(big["size"], 300_000, "{root}");
    assert!(big["mtime_unix_s"].as_i64() > Some(1_600_000_000), "{root}");

    let deep = json_of(&fetch(&lab, "/backups/files", &q("/docs/deep")));
    assert_eq!(deep["path"], "/docs/deep", "{deep}");
    assert_eq!(deep["entries"][0]["name"], "notes.conf", "{deep}");
    assert_eq!(deep["entries"][0]["size"], 12, "{deep}");

    // A search: the matches anywhere under the path, named by their path below it,
    // without case; a pattern with a `/` matches the path.
    let names = |v: &Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    let found = json_of(&fetch(
        &lab,
        "/backups/files",
        &with_pair(&q("/"), "find", "*.CONF"),
    ));
    assert_eq!(names(&found), ["docs/deep/notes.conf"], "{found}");
    assert_eq!(found["entries"][0]["size"], 12, "{found}");
    let found = json_of(&fetch(
        &lab,
        "/backups/files",
        &with_pair(&q("/docs"), "find", "*"),
    ));
    assert_eq!(
        names(&found),
        ["deep", "deep/notes.conf", "readme.md"],
        "{found}"
    );
    let found = json_of(&fetch(
        &lab,
        "/backups/files",
        &with_pair(&q("/"), "find", "/etc/h*"),
    ));
    assert_eq!(names(&found), ["etc/hosts"], "{found}");

    // Files, byte for byte, as attachments with their length.
    for (path, name) in [("/etc/hosts", "etc/hosts"), ("/big.bin", "big.bin")] {
        let (status, headers, body) = fetch(&lab, "/backups/file", &q(path));
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(body == files[name], "{path}: {} bytes differ", body.len());
        let file = name.rsplit('/').next().unwrap();
        assert!(
            headers["content-disposition"].starts_with(&format!("attachment; filename=\"{file}\"")),
            "{headers:?}"
        );
        assert_eq!(headers["content-length"], body.len().to_string());
        assert_eq!(headers["content-type"], "application/octet-stream");
    }

    // A folder as a tar: every file below it.
    let mut tq = q("/docs");
    tq.push(("format", "tar"));
    let (status, headers, body) = fetch(&lab, "/backups/file", &tq);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/x-tar");
    assert!(
        headers["content-disposition"].contains("docs.tar"),
        "{headers:?}"
    );
    let mut got = BTreeMap::new();
    let mut archive = tar::Archive::new(&body[..]);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        got.insert(p, data);
    }
    assert_eq!(got["docs/readme.md"], files["docs/readme.md"]);
    assert_eq!(got["docs/deep/notes.conf"], files["docs/deep/notes.conf"]);

    // Bad input: 422 naming the field, or 400 for what is not a query.
    let refused = |query: Vec<(&str, &str)>, route: &str, field: &str| {
        let a = fetch(&lab, route, &query);
        let e = json_of(&a);
        assert_eq!(a.0, 422, "{route} {query:?}: {e}");
        assert_eq!(e["error"]["code"], "invalid_value", "{e}");
        let m = e["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(&format!("{field}:")), "{query:?}: {m}");
    };
    let base = q("/");
    refused(with_pair(&base, "find", "["), "/backups/files", "find");
    refused(with_pair(&base, "find", ""), "/backups/files", "find");
    refused(with_pair(&base, "find", "*"), "/backups/file", "find");
    refused(
        with_pair(&base, "backup", "deadbeefdeadbeef"),
        "/backups/files",
        "backup",
    );
    refused(with_pair(&base, "disk", "3"), "/backups/files", "disk");
    refused(
        with_pair(&base, "partition", "2"),
        "/backups/files",
        "partition",
    );
    refused(q("/nope"), "/backups/files", "path");
    refused(q("/etc/../etc"), "/backups/files", "path");
    refused(q("/etc/hosts"), "/backups/files", "path");
    refused(q("/docs"), "/backups/file", "path");
    refused(q("/nope"), "/backups/file", "path");
    refused(
        with_pair(&base, "format", "tar"),
        "/backups/files",
        "format",
    );
    refused(with_pair(&base, "vm", "other"), "/backups/files", "backup");
    let mut norepo = q("/");
    norepo[0] = ("repository", "/no/such/repository");
    refused(norepo, "/backups/files", "repository");
    let (status, _, body) = fetch(&lab, "/backups/files", &with_pair(&base, "disk", "x"));
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

/// `query` with `key` set to `value` (replaced if there).
fn with_pair<'a>(
    query: &[(&'a str, &'a str)],
    key: &'a str,
    value: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<(&str, &str)> = query.iter().filter(|(k, _)| *k != key).copied().collect();
    v.push((key, value));
    v
}
