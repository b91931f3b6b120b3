//! Validates VM configurations, then boots the `ready` test guest when this machine can:
//! `cargo run -p vinfra-vmm-core --example boot_ready`.
//!
//! The guest (built by `scripts/guest-kit.sh --guests-only`, looked up in
//! `$VINFRA_GUEST_DIR` or `target/guest-kit/guests`) prints `VINFRA-READY` on its serial
//! console and powers off with code 0. Without `/dev/kvm` or the guest the example says
//! what is missing (`SKIP: …`) and stops after the checks that need neither; under
//! `CI=true` that is a failure, as in the tests.

use std::process::ExitCode;
use std::time::Duration;

use vinfra_vmm_core::{ExitReason, SerialOutput, Vm, VmConfig};

fn main() -> ExitCode {
    // Configurations are checked before KVM is touched; each refusal is a typed error.
    for (what, config) in [
        ("no vCPUs", VmConfig::new("guest.elf").vcpus(0)),
        ("1 MiB of memory", VmConfig::new("guest.elf").memory_mib(1)),
        ("a missing kernel", VmConfig::new("no-such-kernel.elf")),
    ] {
        match config.validate() {
            Ok(_) => {
                eprintln!("a config with {what} was accepted");
                return ExitCode::FAILURE;
            }
            Err(e) => println!("refused, {what}: {e}"),
        }
    }

    // The workspace's test support finds the guest kit and checks /dev/kvm; where either
    // is missing it says SKIP (and fails under CI=true, where both must be there).
    let Some(kernel) = vinfra_testkit::guest("ready") else {
        return ExitCode::SUCCESS;
    };
    if !vinfra_testkit::kvm_or_skip() {
        return ExitCode::SUCCESS;
    }

    let config = VmConfig::new(&kernel)
        .memory_mib(16)
        .serial_output(SerialOutput::Stdio);
    match config.validate() {
        Ok(v) => println!(
            "valid: {} MiB, {} vCPU, kernel {}",
            v.memory_bytes >> 20,
            v.vcpus,
            v.kernel.display()
        ),
        Err(e) => {
            eprintln!("the ready guest's config is refused: {e}");
            return ExitCode::FAILURE;
        }
    }
    let run = || -> Result<Option<ExitReason>, vinfra_vmm_core::Error> {
        let mut vm = Vm::create(config)?;
        vm.start()?;
        Ok(vm.wait_timeout(Duration::from_secs(10)))
    };
    match run() {
        Ok(Some(ExitReason::Poweroff { code: 0 })) => {
            println!("the guest powered off with code 0");
            ExitCode::SUCCESS
        }
        Ok(other) => {
            eprintln!("the guest ended unexpectedly: {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cannot run the guest: {e}");
            ExitCode::FAILURE
        }
    }
}
