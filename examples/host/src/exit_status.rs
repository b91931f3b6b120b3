//! The exit statuses of the VM binaries (`vinfra-vm`, `vmfs-vm`), in one table.
//!
//! A supervisor (a script, the ha agent) tells from the status alone how a VM ended: the
//! guest's own power-off code, a VMM error, a crash, a fenced host or a host stop.

use vinfra_vmm_core::ExitReason;

/// A VMM error: a bad flag or config, no usable `/dev/kvm`, a missing kernel, a volume
/// that cannot be mounted, a disk locked by another live host.
pub const ERROR: u8 = 1;
/// The VM crashed: KVM internal error, triple fault, failed entry (EX_SOFTWARE).
pub const CRASHED: u8 = 70;
/// This host fenced itself (its vmfs heartbeat was not renewed for half a lease) and the
/// VM was stopped (EX_TEMPFAIL).
pub const FENCED: u8 = 75;
/// SIGINT or SIGTERM stopped the VM: 128 + SIGTERM, what a shell reports for a process a
/// SIGTERM ended, so a supervisor can tell a host stop from a guest power-off with code 0.
pub const SIGNALLED: u8 = 143;

/// `vinfra-vm`'s exit statuses, as its `--help` shows them.
pub const VINFRA_VM_HELP: &str = "\
Exit status:
  V    the guest powered off, writing V (0-255) to the exit device (port 0xf4)
  0    the guest asked for a reboot (the VM is stopped, not rebooted), Ctrl-A x stopped
       it, Ctrl-A s snapshotted it into --snapshot-dir and stopped it, it moved to
       another host (`vinfra-vm migrate`), or `power_off` on the control socket
  1    a VMM error (bad flag or config, no usable /dev/kvm, a missing kernel...)
  70   the VM crashed (KVM internal error, triple fault, failed entry)
  75   fenced: the vmfs heartbeat of --volume was not renewed for half a lease, or the
       parent host's lease (--parent-lease-fd) went silent or closed: VM stopped
  143  SIGTERM or SIGINT (Ctrl-C) stopped the VM
A guest may power off with 1, 70 or 143 too: the guest's code is passed on as it is.";

/// `vmfs-vm`'s exit statuses, as its `--help` shows them.
pub const VMFS_VM_HELP: &str = "\
Exit status:
  V    the guest powered off, writing V (0-255) to the exit device (port 0xf4)
  0    the guest asked for a reboot (the VM is stopped, not rebooted)
  1    an error: bad flag, volume not mountable, disk locked by another live host...
  70   the VM crashed (KVM internal error, triple fault, failed entry)
  75   this host fenced itself (heartbeat not renewed for half a lease): VM stopped
  143  SIGTERM or SIGINT stopped the VM";

/// Why the binary stopped the VM (when the guest did not end it itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopCause {
    /// The guest ended by itself (power-off, reboot, crash), or a console key
    /// (`Ctrl-A x`, `Ctrl-A s`) stopped it.
    Console,
    /// SIGINT or SIGTERM.
    Signal,
    /// The VM moved to another host by live migration.
    Migrated,
    /// The host's volume lease lapsed (this process's own vmfs mount, or the parent
    /// host's, `--parent-lease-fd`): the VM was stopped.
    Fenced,
}

/// The exit status for how a VM run ended, and the line to print about it (without the
/// binary's name). `Err` carries a VMM error's message.
pub fn outcome(result: Result<(ExitReason, StopCause), String>) -> (u8, Option<String>) {
    match result {
        Ok((_, StopCause::Migrated)) => (0, Some("the VM moved to another host".into())),
        Ok((_, StopCause::Fenced)) => (
            FENCED,
            Some("fenced (the host's volume lease lapsed): the VM was stopped".into()),
        ),
        Ok((ExitReason::Stopped, StopCause::Signal)) => {
            (SIGNALLED, Some("stopped by a signal".into()))
        }
        Ok((ExitReason::Poweroff { code }, _)) => (code, None),
        Ok((ExitReason::Reboot, _)) => (0, Some("the guest asked for a reboot; stopping".into())),
        Ok((ExitReason::Stopped, StopCause::Console)) => (0, Some("stopped".into())),
        Ok((ExitReason::Crashed { reason }, _)) => {
            (CRASHED, Some(format!("the vm crashed: {reason}")))
        }
        Ok((other, _)) => (0, Some(format!("vm ended: {other:?}"))),
        Err(e) => (ERROR, Some(format!("error: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_follow_the_documented_table() {
        let status = |r| outcome(r).0;
        assert_eq!(
            status(Ok((ExitReason::Poweroff { code: 5 }, StopCause::Console))),
            5
        );
        // A guest power-off racing a signal keeps the guest's code.
        assert_eq!(
            status(Ok((ExitReason::Poweroff { code: 0 }, StopCause::Signal))),
            0
        );
        assert_eq!(status(Ok((ExitReason::Stopped, StopCause::Signal))), 143);
        assert_eq!(status(Ok((ExitReason::Stopped, StopCause::Console))), 0);
        assert_eq!(status(Ok((ExitReason::Reboot, StopCause::Console))), 0);
        assert_eq!(
            status(Ok((
                ExitReason::Crashed {
                    reason: "triple fault".into()
                },
                StopCause::Console
            ))),
            70
        );
        assert_eq!(status(Err("no /dev/kvm".into())), 1);
        for code in [ERROR, CRASHED, SIGNALLED] {
            let line = format!("  {code} ");
            assert!(VINFRA_VM_HELP.contains(&line), "{line:?} missing");
            assert!(VMFS_VM_HELP.contains(&line), "{line:?} missing");
        }
        assert!(VMFS_VM_HELP.contains(&format!("  {FENCED} ")));
        assert!(VINFRA_VM_HELP.contains(&format!("  {FENCED} ")));
        assert_eq!(
            status(Ok((ExitReason::Poweroff { code: 0 }, StopCause::Fenced))),
            FENCED
        );
    }
}
