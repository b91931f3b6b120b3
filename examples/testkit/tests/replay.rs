//! The replay command names the integration test target and the test, as a user types it.

use std::process::Command;
use std::time::Duration;

use vinfra_testkit::{for_each_seed, replay_command, run, test_in_child};

#[test]
fn an_integration_test_replays_with_its_target_and_name() {
    assert_eq!(
        replay_command(42),
        "SIM_SEED=42 cargo test -p vinfra-testkit --test replay \
         an_integration_test_replays_with_its_target_and_name"
    );
}

/// Fails at seed 3 when run as the child of [`a_failing_seed_prints_its_replay_command`].
#[test]
fn child_failing_at_seed_3() {
    if std::env::var_os("TESTKIT_REPLAY_CHILD").is_none() {
        return;
    }
    for_each_seed(0..5, |seed| assert_ne!(seed, 3, "the model disagrees"));
}

#[test]
fn a_failing_seed_prints_its_replay_command() {
    let mut cmd: Command = test_in_child("child_failing_at_seed_3");
    let done = run(
        cmd.env("TESTKIT_REPLAY_CHILD", "1").env_remove("SIM_SEED"),
        Duration::from_secs(60),
    );
    assert!(!done.success(), "{done}");
    assert!(done.stderr.contains("the model disagrees"), "{done}");
    assert!(
        done.stderr.contains(
            "seed 3 failed; replay it with: \
             SIM_SEED=3 cargo test -p vinfra-testkit --test replay child_failing_at_seed_3"
        ),
        "{done}"
    );
}
