//! Graceful shutdown through the guest (`POST /vms/NAME/shutdown`), as QEMU's
//! `system_powerdown`: the VM's process presses the guest's ACPI power button (its
//! control socket's `power_button`), then the task waits, without holding the loop, for
//! the guest to power off (the process exits 0 and is reaped as any guest power-off:
//! `desired_on` becomes false). A guest that has not powered off within the request's
//! `timeout_ms` fails the task with `guest_timeout` and keeps running, or with
//! `force_after` is stopped hard as `stop` does.

use std::collections::BTreeMap;
use std::time::Instant;

use vinfra_ha::Event;

use super::Host;
use crate::api::{ApiError, ShutdownRequest, TaskHandle};
use crate::vm_process::Exit;

/// A shutdown waiting for its guest.
pub(super) struct Pending {
    task: TaskHandle,
    asked: Instant,
    timeout_ms: u64,
    force_after: bool,
}

/// The shutdowns in progress, per VM.
pub(super) type Shutdowns = BTreeMap<String, Pending>;

impl Host {
    /// Presses the power button of `name` (running here: the caller checked) and
    /// records the task, which [`Host::shutdown_ended`] or [`Host::shutdown_overdue`]
    /// finishes.
    pub(super) fn start_shutdown(
        &mut self,
        name: &str,
        req: ShutdownRequest,
        task: TaskHandle,
    ) -> Result<(), ApiError> {
        if self.shutdowns.contains_key(name) {
            return Err(ApiError::WrongState {
                vm: name.to_string(),
                state: crate::api::PowerState::Running,
                needed: "a shutdown of it is already in progress".into(),
            });
        }
        self.vms
            .press_power_button(name)
            .map_err(|e| ApiError::Internal(format!("press the power button: {e}")))?;
        let timeout_ms = req.timeout_ms();
        self.report.event(
            "vm_shutdown_asked",
            serde_json::json!({"vm": name, "why": "api", "timeout_ms": timeout_ms}),
        );
        task.progress(
            0.0,
            "ACPI power button pressed; waiting for the guest to power off",
        );
        self.shutdowns.insert(
            name.to_string(),
            Pending {
                task,
                asked: Instant::now(),
                timeout_ms,
                force_after: req.force_after,
            },
        );
        Ok(())
    }

    /// The VM's process ended (reaped): a shutdown waiting for it is done.
    pub(super) fn shutdown_ended(&mut self, name: &str, exit: &Exit) {
        let Some(p) = self.shutdowns.remove(name) else {
            return;
        };
        let waited_ms = u64::try_from(p.asked.elapsed().as_millis()).unwrap_or(u64::MAX);
        if exit.code == Some(0) {
            p.task
                .succeed(serde_json::json!({"exit": exit, "waited_ms": waited_ms}));
        } else {
            p.task.fail(&ApiError::Internal(format!(
                "the VM's process ended during the shutdown, not by a guest power-off: {exit:?}"
            )));
        }
    }

    /// Each tick: shutdowns whose VM went another way (a stop, a migration), and
    /// those past their wait.
    pub(super) fn shutdown_overdue(&mut self) {
        let due: Vec<String> = self
            .shutdowns
            .iter()
            .filter(|(name, p)| {
                self.vms.pid(name).is_none()
                    || self.vms.migrating(name)
                    || p.asked.elapsed().as_millis() >= u128::from(p.timeout_ms)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let Some(p) = self.shutdowns.remove(&name) else {
                continue;
            };
            if self.vms.pid(&name).is_none() || self.vms.migrating(&name) {
                p.task.fail(&ApiError::Internal(format!(
                    "{name} was stopped or moved by another request during the shutdown"
                )));
            } else if p.force_after {
                self.force_off(&name, p);
            } else {
                self.report.event(
                    "vm_shutdown_timed_out",
                    serde_json::json!({"vm": name, "timeout_ms": p.timeout_ms}),
                );
                p.task.fail(&ApiError::GuestTimeout {
                    vm: name,
                    timeout_ms: p.timeout_ms,
                });
            }
        }
    }

    /// `force_after`: the stop a `stop` request does.
    fn force_off(&mut self, name: &str, p: Pending) {
        if let Err(e) = self.set_desired(name, false) {
            return p.task.fail(&e);
        }
        let exit = self.vms.power_off(name);
        self.report.event(
            "vm_powered_off",
            serde_json::json!({"vm": name, "why": "shutdown timed out", "exit": exit}),
        );
        self.refresh();
        self.feed(Event::VmStopped {
            vm: name.to_string(),
        });
        p.task
            .succeed(serde_json::json!({"exit": exit, "forced": true,
                                          "waited_ms": p.timeout_ms}));
    }
}
