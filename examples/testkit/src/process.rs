//! Child processes: a program, or one test of this test binary, run under a time limit.

use std::fmt;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a running child is polled for its exit.
const POLL: Duration = Duration::from_millis(10);

/// A child process that has ended, by itself or killed at its time limit.
#[derive(Debug)]
pub struct Finished {
    /// How it ended (killed at the limit: a signal status, no code).
    pub status: ExitStatus,
    /// True when it ran past its limit and was killed.
    pub timed_out: bool,
    /// Its standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Its standard error (invalid UTF-8 replaced).
    pub stderr: String,
}

impl Finished {
    /// The exit code; `None` when a signal ended it (as when killed at the limit).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// True when it exited with status 0 within its limit.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.success()
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = if self.timed_out {
            ", killed at its time limit"
        } else {
            ""
        };
        write!(
            f,
            "{}{limit}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A child started by [`spawn`] whose output is being collected.
#[derive(Debug)]
pub struct Running {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

/// Reads a pipe to its end on a thread of its own, so a child that writes more than a
/// pipe holds never blocks on the other one.
fn collect(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the output early; what was read is still shown.
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Starts `cmd` with its standard output and error captured and no standard input (a
/// test's child must never read the terminal).
///
/// # Panics
///
/// When the program cannot be started.
#[track_caller]
pub fn spawn(cmd: &mut Command) -> Running {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    Running {
        child,
        stdout,
        stderr,
    }
}

impl Running {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child to end, killing it when it runs past `limit`.
    ///
    /// # Panics
    ///
    /// When waiting for or killing the child fails.
    #[track_caller]
    pub fn wait(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    // It may have exited in between; wait() below reaps it either way.
                    let _ = self.child.kill();
                    match self.child.wait() {
                        Ok(status) => break status,
                        Err(e) => panic!("cannot reap child {}: {e}", self.child.id()),
                    }
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => panic!("cannot wait for child {}: {e}", self.child.id()),
            }
        };
        let join = |h: JoinHandle<String>| h.join().unwrap_or_else(|_| String::new());
        Finished {
            status,
            timed_out,
            stdout: join(self.stdout),
            stderr: join(self.stderr),
        }
    }
}

/// Runs `cmd` to its end ([`spawn`] then [`Running::wait`]): its status and output, or,
/// when it runs past `limit`, killed (`timed_out`) with the output it had written.
#[track_caller]
pub fn run(cmd: &mut Command, limit: Duration) -> Finished {
    spawn(cmd).wait(limit)
}

/// A command that runs the single test `test` of this test binary: exactly that name,
/// its output shown, on one thread. Add environment variables that tell the child what
/// to do, then [`run`] it.
///
/// # Panics
///
/// When the path of this test binary is unknown.
pub fn test_in_child(test: &str) -> Command {
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("cannot find this test binary to rerun it: {e}"));
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    cmd
}

/// The variable that tells a child started by [`isolated_env`] which test's body to run.
const CHILD_ENV: &str = "VINFRA_TEST_CHILD";

/// Runs `body` in a child process, this test binary filtered to the test `name` (the
/// calling test's own name), so that a crash or hang in `body` cannot take the test
/// binary down or leak kernel objects (KVM VMs, mappings) into it. Returns the child's
/// standard output, which is also printed.
///
/// In the child the same call runs `body` and returns an empty string.
///
/// # Panics
///
/// When the child fails, runs past `timeout`, or does not report exactly one passed test.
#[track_caller]
pub fn isolated(name: &str, timeout: Duration, body: impl FnOnce()) -> String {
    isolated_env(name, timeout, &[], body)
}

/// [`isolated`] with extra environment variables for the child.
#[track_caller]
pub fn isolated_env(
    name: &str,
    timeout: Duration,
    env: &[(&str, &str)],
    body: impl FnOnce(),
) -> String {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        body();
        return String::new();
    }
    let done = run(
        test_in_child(name)
            .env(CHILD_ENV, name)
            .envs(env.iter().copied()),
        timeout,
    );
    print!("{}", done.stdout);
    eprint!("{}", done.stderr);
    assert!(!done.timed_out, "{name}: child timed out after {timeout:?}");
    assert!(
        done.status.success() && done.stdout.contains("1 passed"),
        "{name}: child failed ({})",
        done.status
    );
    done.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_collects_status_and_both_outputs() {
        let done = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        );
        assert_eq!(done.code(), Some(3), "{done}");
        assert!(!done.success() && !done.timed_out);
        assert_eq!(
            (done.stdout.as_str(), done.stderr.as_str()),
            ("out\n", "err\n")
        );
    }

    #[test]
    fn a_child_past_its_limit_is_killed_with_its_output_kept() {
        let started = Instant::now();
        let done = run(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(300),
        );
        assert!(done.timed_out && !done.success(), "{done}");
        assert_eq!(done.code(), None);
        assert_eq!(done.stdout, "started\n");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn output_larger_than_a_pipe_does_not_block_the_child() {
        let done = run(
            Command::new("sh").args(["-c", "head -c 1000000 /dev/zero >&2; echo done"]),
            Duration::from_secs(30),
        );
        assert!(done.success(), "{}", done.status);
        assert_eq!(done.stderr.len(), 1_000_000);
        assert_eq!(done.stdout, "done\n");
    }

    #[test]
    fn isolated_runs_the_body_in_a_child_with_its_environment() {
        let out = isolated_env(
            "process::tests::isolated_runs_the_body_in_a_child_with_its_environment",
            Duration::from_secs(60),
            &[("TESTKIT_PROBE", "from the parent")],
            || {
                let probe = std::env::var("TESTKIT_PROBE").unwrap();
                println!("child sees {probe} in process {}", std::process::id());
            },
        );
        if std::env::var_os(CHILD_ENV).is_some() {
            return; // the child: its output goes to the parent
        }
        assert!(
            out.contains("child sees from the parent in process"),
            "{out}"
        );
        assert!(!out.contains(&format!("in process {}\n", std::process::id())));
    }
}
