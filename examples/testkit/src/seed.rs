//! Seeds of simulation tests: which to run, and how to replay a failing one.

use std::panic::{self, AssertUnwindSafe};

/// The seeds to run: the one in `SIM_SEED` when it is set, else `default`.
///
/// # Panics
///
/// When `SIM_SEED` is set but is not a `u64`.
pub fn seeds(default: impl IntoIterator<Item = u64>) -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(s) => match s.trim().parse() {
            Ok(seed) => vec![seed],
            Err(e) => panic!("SIM_SEED={s:?} is not a seed (a u64): {e}"),
        },
        Err(_) => default.into_iter().collect(),
    }
}

/// Runs `body` for each seed in order. When one panics, prints the command that replays
/// that seed alone ([`replay_command`]) and lets the panic go on, so the test fails.
pub fn for_each_seed(seeds: impl IntoIterator<Item = u64>, mut body: impl FnMut(u64)) {
    for seed in seeds {
        // The panic is re-raised at once, so no broken state is observed afterwards.
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| body(seed))) {
            eprintln!(
                "seed {seed} failed; replay it with: {}",
                replay_command(seed)
            );
            panic::resume_unwind(panic);
        }
    }
}

/// The shell command that runs the current test for `seed` alone:
/// `SIM_SEED=<seed> cargo test -p <package> --test <target> <test>`.
///
/// The package comes from `CARGO_PKG_NAME` (cargo sets it for the test), the target from
/// this test binary's name, the test from the test thread's name (libtest names each
/// test's thread after it). Unit tests of a library (no `--test` target) get `--lib`.
pub fn replay_command(seed: u64) -> String {
    let package = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "<package>".into());
    let target = test_target().unwrap_or_else(|| "--test <target>".into());
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "<test>".into(),
    };
    format!("SIM_SEED={seed} cargo test -p {package} {target} {test}")
}

/// `--test <name>` for an integration test binary (`target/debug/deps/<name>-<hash>`);
/// `--lib` for the unit tests of the package's library (a binary named after the package).
fn test_target() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_str()?;
    let name = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name,
        _ => stem,
    };
    let package = std::env::var("CARGO_PKG_NAME").ok()?;
    if name == package.replace('-', "_") {
        Some("--lib".into())
    } else {
        Some(format!("--test {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_names_the_package_the_lib_target_and_this_test() {
        let cmd = replay_command(7);
        assert_eq!(
            cmd,
            "SIM_SEED=7 cargo test -p vinfra-testkit --lib \
             seed::tests::replay_names_the_package_the_lib_target_and_this_test"
        );
    }

    #[test]
    fn a_failing_seed_fails_the_run_and_later_seeds_do_not_run() {
        let mut ran = Vec::new();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            for_each_seed([1, 2, 3], |seed| {
                ran.push(seed);
                assert_ne!(seed, 2, "seed 2 fails");
            });
        }));
        assert!(outcome.is_err());
        assert_eq!(ran, [1, 2]);
    }
}
