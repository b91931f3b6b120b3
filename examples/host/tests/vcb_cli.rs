//! The `vinfra-vcb` binary driven as an operator would: init, backup (with hooks), list,
//! ls, find, restore-file (directory and tar), restore, verify (finding damage), forget,
//! prune and schedule; exit statuses; kill -9 of a backup and of a prune, after which the
//! next run succeeds and every committed backup still restores.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code; pattern bytes are truncated on purpose"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vinfra_testkit::tool_or_skip;

const LIMIT: Duration = Duration::from_secs(120);

struct Cli {
    repo: PathBuf,
}

impl Cli {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vinfra-vcb"));
        c.env("VCB_REPO", &self.repo)
            .env("VCB_PASSWORD", "s3cret")
            .env_remove("VCB_PASSWORD_FILE")
            .arg("--json")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs and returns (exit code, parsed stdout or Null, stderr).
    fn run(&self, args: &[&str]) -> (i32, Value, String) {
        let done = vinfra_testkit::run(&mut self.cmd(args), LIMIT);
        assert!(!done.timed_out, "{args:?}: {done}");
        let v = serde_json::from_str(&done.stdout).unwrap_or(Value::Null);
        (done.status.code().unwrap_or(-1), v, done.stderr)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (code, v, err) = self.run(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        v
    }
}

/// A 32 MiB ext4 image holding a few files (one of 1 MiB over 16 grains).
fn ext4_image(dir: &Path, big: &[u8]) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(src.join("big.bin"), big).unwrap();
    let img = dir.join("disk.img");
    let _ = std::fs::remove_file(&img);
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("32M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u64::from(seed)) as u8
                ^ (i >> 12) as u8
        })
        .collect()
}

#[test]
fn the_backup_tool_backs_up_finds_and_restores_files_and_reports_by_exit_status() {
    if !tool_or_skip("mke2fs", &["-V"], "apt-get install e2fsprogs") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let cli = Cli {
        repo: work.path().join("repo"),
    };
    cli.ok(&["init", "--kdf-memory-kib", "64", "--kdf-passes", "1"]);
    let big = bytes(1, 1 << 20);
    let img = ext4_image(work.path(), &big);
    let disk = format!("disk0={}", img.display());

    // Hooks: the pre hook runs before the read, the post hook after; a failing pre hook
    // means no backup (exit 7).
    let log = work.path().join("hooks.log");
    let pre = format!("echo pre >> {}", log.display());
    let post = format!("echo post >> {}", log.display());
    let b1 = cli.ok(&[
        "backup", "--vm", "web", "--disk", &disk, "--time", "1000", "--pre", &pre, "--post", &post,
    ]);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\npost\n");
    let id1 = b1["id"].as_str().unwrap().to_string();
    let (code, _, err) = cli.run(&["backup", "--vm", "web", "--disk", &disk, "--pre", "exit 3"]);
    assert_eq!(code, 7, "{err}");
    assert_eq!(cli.ok(&["list"]).as_array().unwrap().len(), 1);

    // File-level: ls, find, restore-file to a directory and as tar, from the image backup.
    let ls = cli.ok(&["ls", &id1[..8], "/etc"]);
    assert_eq!(ls[0]["path"], "/etc/hosts");
    let found = cli.ok(&["find", &id1, "--name", "*.BIN", "--min-size", "1000000"]);
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let out = work.path().join("out");
    let st = cli.ok(&[
        "restore-file",
        &id1,
        "/big.bin",
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(st["bytes"], 1 << 20);
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big);
    let tar = cli
        .cmd(&["--quiet", "restore-file", &id1, "/etc", "--tar", "-"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar.stdout[..]).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(names, ["etc", "etc/hosts"]);
    let (code, _, err) = cli.run(&["restore-file", &id1, "/no/such", "--to", "x"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("/no/such: no such file or directory"), "{err}");

    // The second backup after a change: a whole-disk restore of each is exact.
    let big2 = bytes(2, 1 << 20);
    let original = std::fs::read(&img).unwrap();
    ext4_image(work.path(), &big2);
    let b2 = cli.ok(&["backup", "--vm", "web", "--disk", &disk, "--time", "2000"]);
    let id2 = b2["id"].as_str().unwrap().to_string();
    assert_eq!(b2["parent"], id1.as_str());
    assert!(
        b2["disks"][0]["bytes_new"].as_u64().unwrap() < 8 << 20,
        "{b2}"
    );
    let r1 = work.path().join("r1.img");
    cli.ok(&["restore", &id1, "--to", r1.to_str().unwrap()]);
    assert!(std::fs::read(&r1).unwrap() == original);
    let out2 = work.path().join("out2");
    cli.ok(&[
        "restore-file",
        &id2,
        "/big.bin",
        "--to",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(out2.join("big.bin")).unwrap(), big2);

    // Wrong password, unknown backup.
    let done = vinfra_testkit::run(cli.cmd(&["list"]).env("VCB_PASSWORD", "nope"), LIMIT);
    assert_eq!(done.status.code(), Some(3), "{done}");
    let pwfile = work.path().join("pw");
    std::fs::write(&pwfile, "s3cret\n").unwrap();
    let done = vinfra_testkit::run(
        cli.cmd(&["list"])
            .env_remove("VCB_PASSWORD")
            .arg("--password-file")
            .arg(&pwfile),
        LIMIT,
    );
    assert!(done.success(), "{done}");
    assert_eq!(cli.run(&["ls", "ffffffff"]).0, 6);

    // Verify: clean, then a flipped byte in a pack is found (exit 5) and named.
    let v = cli.ok(&["verify", "--read-data"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    let pack = first_file(&cli.repo.join("data"));
    let mut b = std::fs::read(&pack).unwrap();
    b[100] ^= 0xff;
    std::fs::write(&pack, &b).unwrap();
    let (code, v, err) = cli.run(&["verify", "--read-data"]);
    assert_eq!(code, 5, "{err}");
    let problem = &v["problems"][0];
    assert!(problem["error"].as_str().unwrap().contains("chunk"), "{v}");
    assert!(!problem["affected"].as_array().unwrap().is_empty(), "{v}");
    // The damaged grain is named in guest terms too: the files (or the filesystem's own
    // structures, `path: null`) in it.
    let files = problem["affected"][0]["files"].as_array().unwrap();
    assert!(!files.is_empty(), "{v}");
    assert!(files.iter().all(|f| f["partition"] == 0), "{v}");
    // --read-packs finds the same damage from the pack's keyed hash.
    let (code, v2, err) = cli.run(&["verify", "--read-packs"]);
    assert_eq!(code, 5, "{err}");
    assert_eq!(v2["problems"], v["problems"]);
    b[100] ^= 0xff;
    std::fs::write(&pack, &b).unwrap();

    // Retention, then a schedule that runs once when due, not again.
    let f = cli.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(f["forgotten"], serde_json::json!([id1]));
    let sched = work.path().join("schedule.json");
    let state = work.path().join("state.json");
    std::fs::write(
        &sched,
        serde_json::json!({
            "state": state,
            "jobs": [{ "name": "nightly", "cron": "0 2 * * *", "vm": "web",
                       "disks": { "disk0": img } }],
            "keep": { "last": 2 }
        })
        .to_string(),
    )
    .unwrap();
    let t0 = "1700000000"; // 2023-11-14 22:13 UTC: the job first becomes due at 02:00
    let r = cli.ok(&["schedule", "--config", sched.to_str().unwrap(), "--now", t0]);
    assert_eq!(r["ran"].as_array().unwrap().len(), 0, "{r}");
    let t1 = "1700013600"; // 02:00 the next day
    let r = cli.ok(&["schedule", "--config", sched.to_str().unwrap(), "--now", t1]);
    assert_eq!(r["ran"][0]["ok"], true, "{r}");
    let r = cli.ok(&["schedule", "--config", sched.to_str().unwrap(), "--now", t1]);
    assert_eq!(r["ran"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(cli.ok(&["list"]).as_array().unwrap().len(), 2);
    assert_eq!(
        cli.ok(&["verify", "--read-data"])["problems"],
        serde_json::json!([])
    );
}

fn first_file(dir: &Path) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else {
                return p;
            }
        }
    }
    panic!("no file under {}", dir.display());
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { count_files(&p) } else { 1 })
        .sum()
}

/// Starts `args`, waits until `ready` holds (polling), then kill -9s it.
fn kill_when(cli: &Cli, args: &[&str], ready: impl Fn() -> bool) -> bool {
    let mut child = cli
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready() {
        if child.try_wait().unwrap().is_some() {
            return false; // finished before the kill: too fast to catch
        }
        assert!(start.elapsed() < LIMIT, "{args:?} never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    true
}

#[test]
fn kill_9_of_a_backup_and_of_a_prune_loses_nothing_committed() {
    let work = tempfile::tempdir().unwrap();
    let cli = Cli {
        repo: work.path().join("repo"),
    };
    cli.ok(&[
        "init",
        "--kdf-memory-kib",
        "64",
        "--kdf-passes",
        "1",
        "--no-encryption",
        // A slower compressor than the default, so that the backup below still runs
        // when the test, on a loaded machine, sees its first pack and kills it (at the
        // default fast level a backup could commit in between).
        "--zstd-level",
        "5",
    ]);
    // A 96 MiB image of incompressible data: several 16 MiB packs per backup, so a kill
    // lands between packs.
    let img = work.path().join("disk.img");
    let mut data = bytes(7, 96 << 20);
    for (i, c) in data.chunks_mut(4096).enumerate() {
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    std::fs::write(&img, &data).unwrap();
    let disk = format!("disk0={}", img.display());
    let first = cli.ok(&["backup", "--vm", "a", "--disk", &disk, "--time", "1"]);
    let id1 = first["id"].as_str().unwrap().to_string();

    // Change every grain, then kill the backup once it has written a pack.
    for (i, c) in data.chunks_mut(4096).enumerate() {
        c[8..16].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    }
    std::fs::write(&img, &data).unwrap();
    let packs_before = count_files(&cli.repo.join("data"));
    let killed = kill_when(
        &cli,
        &["backup", "--vm", "a", "--disk", &disk, "--time", "2"],
        || count_files(&cli.repo.join("data")) > packs_before,
    );
    assert!(killed, "the backup finished before it could be killed");
    assert_eq!(
        cli.ok(&["list"]).as_array().unwrap().len(),
        1,
        "no half-committed backup"
    );
    // The next backup succeeds (the dead process's lock is stale) and restores exactly.
    let second = cli.ok(&["backup", "--vm", "a", "--disk", &disk, "--time", "3"]);
    let id2 = second["id"].as_str().unwrap().to_string();
    let r = work.path().join("r.img");
    cli.ok(&["restore", &id2, "--to", r.to_str().unwrap()]);
    assert!(std::fs::read(&r).unwrap() == data);

    // Forget the first backup, and kill the prune that drops its packs midway.
    cli.ok(&["forget", &id1]);
    let packs = count_files(&cli.repo.join("data"));
    let killed = kill_when(&cli, &["prune"], || {
        count_files(&cli.repo.join("data")) < packs
    });
    if !killed {
        println!("prune finished before the kill (nothing left to check mid-way)");
    }
    cli.ok(&["restore", &id2, "--to", r.to_str().unwrap()]);
    assert!(std::fs::read(&r).unwrap() == data);
    let p = cli.ok(&["prune"]);
    assert!(p["packs_deleted"].is_u64(), "{p}");
    assert_eq!(
        cli.ok(&["verify", "--read-data"])["problems"],
        serde_json::json!([])
    );
    cli.ok(&["restore", &id2, "--to", r.to_str().unwrap()]);
    assert!(std::fs::read(&r).unwrap() == data);
}

/// The long-running mode: `schedule --daemon` (its clock started 3 s before a minute
/// boundary with `--now`, so an every-minute job is due at once) runs the due job, then
/// sleeps towards the next minute and stops cleanly on SIGTERM: exit 0, its JSON lists
/// the job, the state file records it, and the backup is in the repository.
#[test]
fn schedule_daemon_runs_a_due_job_and_stops_on_sigterm() {
    let work = tempfile::tempdir().unwrap();
    let cli = Cli {
        repo: work.path().join("repo"),
    };
    // The compression level is a repository setting: 0 is no zstd level, -5 a fast one.
    let kdf = ["--kdf-memory-kib", "64", "--kdf-passes", "1"];
    let (code, _, err) = cli.run(&[&["init", "--zstd-level", "0"][..], &kdf].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("zstd level 0"), "{err}");
    cli.ok(&[&["init", "--zstd-level", "-5"][..], &kdf].concat());
    let img = work.path().join("disk.img");
    std::fs::write(&img, bytes(3, 1 << 20)).unwrap();
    let sched = work.path().join("schedule.json");
    let state = work.path().join("state.json");
    std::fs::write(
        &sched,
        serde_json::json!({
            "state": state,
            "jobs": [{ "name": "often", "cron": "* * * * *", "vm": "web",
                       "disks": { "disk0": img } }]
        })
        .to_string(),
    )
    .unwrap();
    // 1700000040 is a minute boundary: the job is due 3 s after the daemon starts.
    let args = [
        "schedule",
        "--config",
        sched.to_str().unwrap(),
        "--daemon",
        "--now",
        "1700000037",
    ];
    let daemon = vinfra_testkit::spawn(&mut cli.cmd(&args));
    let t = Instant::now();
    let ran = loop {
        let s = std::fs::read_to_string(&state).unwrap_or_default();
        let v: Value = serde_json::from_str(&s).unwrap_or(Value::Null);
        if let Some(ok) = first_job_ok(&v) {
            break ok;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "job never ran: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ran, "the job failed");
    // Asleep now until the next minute: SIGTERM ends it well before.
    let term = Instant::now();
    let sent = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let done = daemon.wait(Duration::from_secs(20));
    assert!(!done.timed_out, "the daemon ignored SIGTERM: {done}");
    assert!(
        term.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        term.elapsed()
    );
    assert_eq!(done.code(), Some(0), "{done}");
    let v: Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(v["stopped"], true, "{v}");
    assert_eq!(v["ran"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["ran"][0]["job"], "often", "{v}");
    assert_eq!(v["ran"][0]["ok"], true, "{v}");
    assert_eq!(cli.ok(&["list"]).as_array().unwrap().len(), 1);
}

/// Whether the first job of a saved schedule state (`{"jobs": [{"last": [time, ok]}]}`)
/// has finished, and how; `None` before it has.
fn first_job_ok(state: &Value) -> Option<bool> {
    state["jobs"][0]["last"][1].as_bool()
}
