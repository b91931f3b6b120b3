//! Prerequisite checks: skip where something is missing, fail under CI.

use std::fmt::Display;
use std::process::{Command, Stdio};

/// True when the tests run under CI, i.e. the environment variable `CI` is `true` (as CI
/// services set it) or `1`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// True when this process runs as root (effective uid 0, from `/proc/self/status`):
/// network namespaces, bridges and TAPs need it.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Reports a missing prerequisite: prints `SKIP: <why>` so the calling test can return,
/// or, under CI ([`in_ci`]), panics with the same words.
///
/// CI installs every prerequisite (KVM, root, the guest kit, tools such as `iasl`), and
/// cargo hides a passing test's output, so a skip there would look like a pass.
#[track_caller]
pub fn skip(why: impl Display) {
    if in_ci() {
        panic!("missing prerequisite under CI=true (a skip would look like a pass): {why}");
    }
    println!("SKIP: {why}");
}

/// Prints `SKIP: <why>` even under CI.
///
/// The one escape from [`skip`]'s rule, for the test that boots Linux on hardware KVM: the
/// CI machine runs nested KVM, which cannot boot an unmodified Linux kernel, and nothing
/// CI can install changes that. Do not use it for anything CI can provide.
pub fn skip_allowed_in_ci(why: impl Display) {
    println!("SKIP: {why}");
}

/// True when `/dev/kvm` opens for reading and writing; otherwise [`skip`]s (a panic under
/// CI) and returns false.
#[track_caller]
pub fn kvm_or_skip() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            skip(format_args!("/dev/kvm is not usable: {e}"));
            false
        }
    }
}

/// True when the command-line tool `program` runs and exits successfully with `probe`
/// arguments (for example `iasl -v`); otherwise [`skip`]s with "`program` not installed
/// (`install`)" (a panic under CI) and returns false.
#[track_caller]
pub fn tool_or_skip(program: &str, probe: &[&str], install: &str) -> bool {
    let ran = Command::new(program)
        .args(probe)
        .stdin(Stdio::null())
        .output();
    match ran {
        Ok(out) if out.status.success() => true,
        _ => {
            skip(format_args!("{program} not installed ({install})"));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{run, test_in_child};

    const CHILD: &str = "TESTKIT_PREREQ_CHILD";

    /// Runs `test` in a child whose `CI` is `ci` (unset when `None`).
    fn child(test: &str, ci: Option<&str>) -> crate::Finished {
        let mut cmd = test_in_child(test);
        cmd.env(CHILD, "1").env_remove("CI");
        if let Some(ci) = ci {
            cmd.env("CI", ci);
        }
        run(&mut cmd, Duration::from_secs(60))
    }

    #[test]
    fn skip_prints_a_skip_line_but_panics_under_ci() {
        if std::env::var_os(CHILD).is_some() {
            skip("the probe is missing");
            return;
        }
        let name = "prereq::tests::skip_prints_a_skip_line_but_panics_under_ci";
        for ci in [None, Some("false"), Some("0")] {
            let done = child(name, ci);
            assert!(done.success(), "CI={ci:?}: {done}");
            assert!(done.stdout.contains("SKIP: the probe is missing"), "{done}");
        }
        for ci in ["true", "TRUE", "1"] {
            let done = child(name, Some(ci));
            assert!(!done.success(), "CI={ci}: {done}");
            assert!(!done.stdout.contains("SKIP:"), "{done}");
            assert!(
                done.stderr.contains(
                    "missing prerequisite under CI=true (a skip would look like a pass): \
                     the probe is missing"
                ),
                "{done}"
            );
        }
    }

    #[test]
    fn the_linux_on_hardware_kvm_escape_skips_even_under_ci() {
        if std::env::var_os(CHILD).is_some() {
            skip_allowed_in_ci("nested KVM");
            return;
        }
        let name = "prereq::tests::the_linux_on_hardware_kvm_escape_skips_even_under_ci";
        let done = child(name, Some("true"));
        assert!(done.success(), "{done}");
        assert!(done.stdout.contains("SKIP: nested KVM"), "{done}");
    }

    #[test]
    fn a_missing_tool_is_a_skip_and_a_present_one_is_not() {
        if std::env::var_os(CHILD).is_some() {
            assert!(!tool_or_skip(
                "vinfra-no-such-tool",
                &[],
                "it does not exist"
            ));
            assert!(tool_or_skip(
                "sh",
                &["-c", "exit 0"],
                "apt-get install dash"
            ));
            return;
        }
        let name = "prereq::tests::a_missing_tool_is_a_skip_and_a_present_one_is_not";
        let done = child(name, None);
        assert!(done.success(), "{done}");
        assert!(
            done.stdout
                .contains("SKIP: vinfra-no-such-tool not installed (it does not exist)"),
            "{done}"
        );
    }
}
