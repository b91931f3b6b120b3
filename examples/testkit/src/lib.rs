//! vinfra-testkit: the test support every vinfra crate's tests share, written once.
//!
//! It depends on no vinfra crate and is used only as a dev-dependency, so vmm-core, vmfs,
//! drs and the host package can all use it. Fakes that belong to one crate (faulty devices,
//! manual clocks, generators) stay in that crate behind its `test-utils` feature.
//!
//! What is here:
//! - **Prerequisites** ([`kvm_or_skip`], [`tool_or_skip`], [`skip`]): where something a
//!   test needs is missing, print `SKIP: <why>` and let the test return. Under `CI=true` a
//!   missing prerequisite panics instead: CI installs them, and cargo hides a passing
//!   test's output, so a silent skip would look green. [`skip_allowed_in_ci`] is the one
//!   escape, for the Linux-on-hardware-KVM boot test (nested KVM cannot boot Linux).
//! - **Test guests** ([`guest`], [`linux_kit`], [`workspace_root`]): the guest kit that
//!   `scripts/guest-kit.sh` builds, found from any package of the workspace or through
//!   `VINFRA_GUEST_DIR`.
//! - **Seeds** ([`seeds`], [`for_each_seed`]): `SIM_SEED=<n>` runs one seed, otherwise a
//!   default range; a failing seed prints the command that replays it.
//! - **Console capture** ([`Console`]): a `Write` sink for a serial port or a log, with
//!   waits that give up at a deadline and show what arrived.
//! - **Network lab** ([`NetLab`]): namespaces joined by a bridge, made and removed by the
//!   test, with links to take down.
//! - **Child processes** ([`run`], [`spawn`], [`test_in_child`], [`isolated`]): run a
//!   program or one test of this binary in a child, killed after a time limit, with its
//!   status and output.
//!
//! A tier-2 test and a simulation test, put together:
//!
//! ```
//! use std::io::Write;
//! use std::process::Command;
//! use std::time::Duration;
//!
//! use vinfra_testkit::{for_each_seed, guest, kvm_or_skip, run, seeds, Console};
//!
//! // A test that needs KVM and a test guest checks for both first.
//! fn boots_the_ready_guest() {
//!     if !kvm_or_skip() {
//!         return;
//!     }
//!     let Some(kernel) = guest("ready") else { return };
//!     // ... create a VM from `kernel` whose serial port writes into a Console ...
//!     # let _ = kernel;
//! }
//! # let _ = boots_the_ready_guest;
//!
//! // A simulation over seeds: SIM_SEED=<n> replays one; a failure prints how.
//! for_each_seed(seeds(0..4), |seed| {
//!     let state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
//!     assert_eq!(state.wrapping_mul(0xf1de_83e1_9937_733d), seed); // the inverse
//! });
//!
//! // Code under test writes into a console; the test waits for lines with deadlines.
//! let console = Console::new();
//! let mut sink = console.writer();
//! std::thread::spawn(move || sink.write_all(b"booting\nVINFRA-READY\n"));
//! let end = console.wait_for("booting", Duration::from_secs(10));
//! console.wait_for_from(end, "VINFRA-READY", Duration::from_secs(10));
//!
//! // A child process, killed if it runs past its limit.
//! let done = run(Command::new("echo").arg("hello"), Duration::from_secs(10));
//! assert!(done.success(), "{done:?}");
//! assert_eq!(done.stdout, "hello\n");
//! ```
#![forbid(unsafe_code)]

mod console;
mod guest;
mod netlab;
mod prereq;
mod process;
mod seed;

pub use console::{Console, ConsoleWriter};
pub use guest::{guest, guest_dir, linux_kit, workspace_root, LinuxKit};
pub use netlab::NetLab;
pub use prereq::{in_ci, is_root, kvm_or_skip, skip, skip_allowed_in_ci, tool_or_skip};
pub use process::{isolated, isolated_env, run, spawn, test_in_child, Finished, Running};
pub use seed::{for_each_seed, replay_command, seeds};
