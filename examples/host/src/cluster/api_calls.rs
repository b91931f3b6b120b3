//! The host loop's side of the host API ([`crate::api`]): each [`ApiCall`] the server's
//! [`LoopBridge`](crate::api::LoopBridge) hands over is answered here, on the loop's
//! thread, where the VM table, the VM locks and the agent live.
//!
//! Power operations change the VM's HA settings first (`desired_on`; a start right after
//! its child is spawned under the VM's lock, so as not to delay the guest), then act, then
//! feed the agent a fresh reading of the volume, so that neither this agent (from its
//! last reading) nor a peer's planner (settings of unowned VMs are read afresh) undoes
//! what the user asked for.

use vinfra_ha::datastore::{vm_dir, VmfsDatastore, VMS_DIR};
use vinfra_ha::{Action, Event, HaSettings, PowerOnOutcome, Verdict};
use vinfra_vmfs::Kind;
use vinfra_vmm_core::VmConfig;

use super::vms::{read_definition, write_definition};
use super::Host;
use crate::api::{
    console_pair, ApiCall, ApiError, HaPeer, HaSpec, HaVerdict, HostCapacity, HostInfo, HostLoad,
    IsolationResponse, KsmSavings, PowerState, ResourceSpec, RestartPriority, SnapshotInfo,
    TaskHandle, VmCounts, VmInfo, VmOp, VmSpec, VmStats, CONSOLE_QUEUE,
};

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

pub(super) fn priority_to_ha(p: RestartPriority) -> vinfra_ha::RestartPriority {
    match p {
        RestartPriority::Disabled => vinfra_ha::RestartPriority::Disabled,
        RestartPriority::Low => vinfra_ha::RestartPriority::Low,
        RestartPriority::Medium => vinfra_ha::RestartPriority::Medium,
        RestartPriority::High => vinfra_ha::RestartPriority::High,
    }
}

fn priority_from_ha(p: vinfra_ha::RestartPriority) -> RestartPriority {
    match p {
        vinfra_ha::RestartPriority::Disabled => RestartPriority::Disabled,
        vinfra_ha::RestartPriority::Low => RestartPriority::Low,
        vinfra_ha::RestartPriority::High => RestartPriority::High,
        _ => RestartPriority::Medium,
    }
}

pub(super) fn response_to_ha(r: IsolationResponse) -> vinfra_ha::IsolationResponse {
    match r {
        IsolationResponse::LeaveOn => vinfra_ha::IsolationResponse::LeaveOn,
        IsolationResponse::PowerOff => vinfra_ha::IsolationResponse::PowerOff,
        IsolationResponse::ShutDown => vinfra_ha::IsolationResponse::ShutDown,
    }
}

fn response_from_ha(r: vinfra_ha::IsolationResponse) -> IsolationResponse {
    match r {
        vinfra_ha::IsolationResponse::PowerOff => IsolationResponse::PowerOff,
        vinfra_ha::IsolationResponse::ShutDown => IsolationResponse::ShutDown,
        vinfra_ha::IsolationResponse::LeaveOn => IsolationResponse::LeaveOn,
    }
}

fn verdict(v: Verdict) -> HaVerdict {
    match v {
        Verdict::Alive => HaVerdict::Alive,
        Verdict::Partitioned => HaVerdict::Partitioned,
        Verdict::Failed => HaVerdict::Failed,
        Verdict::Isolated => HaVerdict::Isolated,
        Verdict::Fenced => HaVerdict::Fenced,
        Verdict::Unknown => HaVerdict::Unknown,
    }
}

/// The API's view of a definition and its settings.
fn spec_of(name: &str, config: &VmConfig, s: &HaSettings) -> VmSpec {
    let mut spec = VmSpec::new(
        name,
        config.kernel.display().to_string(),
        u32::try_from(config.memory_mib).unwrap_or(u32::MAX),
    );
    spec.initrd = config.initrd.as_ref().map(|p| p.display().to_string());
    spec.cmdline = config.cmdline.clone();
    spec.vcpus = config.vcpus;
    spec.ha = HaSpec {
        priority: priority_from_ha(s.priority),
        isolation_response: response_from_ha(s.isolation_response),
    };
    spec.resources = ResourceSpec {
        cpu_mhz: u32::try_from(s.cpu_mhz).unwrap_or(0),
        ..ResourceSpec::default()
    };
    spec
}

/// How long an operation waits for a just-started VM's control socket: the process
/// mounts the volume and builds the VM first (ms here, seconds on a loaded machine).
const CONTROL_START: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a delete waits for a peer's momentary hold on a file of the VM (an HA
/// reading of its settings: milliseconds).
const DELETE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

impl Host {
    /// Answers one API call.
    pub(super) fn api(&mut self, call: ApiCall) {
        match call {
            ApiCall::HostInfo(reply) => {
                reply.send(self.host_info());
            }
            ApiCall::ListVms(reply) => {
                reply.send(self.list_vms());
            }
            ApiCall::Vm { name, reply } => {
                reply.send(self.vm_info(&name));
            }
            ApiCall::CreateVm { spec, reply } => {
                reply.send(self.create_vm(&spec));
            }
            ApiCall::DeleteVm { name, reply } => {
                reply.send(self.delete_vm(&name));
            }
            ApiCall::StartOp {
                name,
                op,
                task,
                reply,
            } => {
                reply.send(self.start_op(&name, op, task));
            }
            ApiCall::Console { name, reply } => {
                let answer = if self.vms.pid(&name).is_some() {
                    let (viewer, guest) = console_pair(CONSOLE_QUEUE);
                    self.consoles.add(name, guest);
                    Ok(viewer)
                } else {
                    self.vm_info(&name).and_then(|vm| {
                        Err(match vm.host {
                            Some(h) => ApiError::RunningElsewhere {
                                vm: name.clone(),
                                host: h.to_string(),
                            },
                            None => ApiError::WrongState {
                                vm: name.clone(),
                                state: vm.state,
                                needed: "it must be running here".into(),
                            },
                        })
                    })
                };
                reply.send(answer);
            }
            ApiCall::Events {
                after,
                limit,
                reply,
            } => {
                reply.send(Ok(self.report.log().after(after, limit)));
            }
            ApiCall::PrepareIncoming { request, reply } => {
                reply.send(self.prepare_incoming(&request));
            }
            ApiCall::PatchVm { name, patch, reply } => {
                reply.send(self.patch_vm(&name, &patch));
            }
            ApiCall::Maintenance { enter, task, reply } => {
                reply.send(self.maintenance(enter, task));
            }
            // On a thread of its own: cluster/backup_files.rs.
            ApiCall::Backups { query, reply } => self.backups_listed(query, reply),
            ApiCall::ForgetBackups { request, reply } => {
                reply.send(self.forget_backups(&request));
            }
            // On threads of their own: cluster/backup_files.rs.
            ApiCall::BackupFiles { query, reply } => self.backup_files(query, reply),
            ApiCall::BackupFile { query, reply } => self.backup_file(query, reply),
        }
    }

    /// Hands a console line to the VM's viewers (dropping those that left).
    pub(super) fn console_out(&mut self, vm: &str, line: &str) {
        let vms = &mut self.vms;
        self.consoles.output(vm, line, |bytes| {
            if let Some(p) = vms.process_mut(vm) {
                if let Err(e) = p.send_console(bytes) {
                    tracing::debug!(vm, "console input: {e}");
                }
            }
        });
    }

    /// Carries what the viewers typed to their VMs; forgets the viewers of VMs that no
    /// longer run here.
    pub(super) fn console_in(&mut self) {
        let vms = &mut self.vms;
        self.consoles.keep_only(|vm| vms.pid(vm).is_some());
        self.consoles.input(|vm, bytes| {
            if let Some(p) = vms.process_mut(vm) {
                if let Err(e) = p.send_console(bytes) {
                    tracing::debug!(vm, "console input: {e}");
                }
            }
        });
    }

    fn host_info(&mut self) -> Result<HostInfo, ApiError> {
        let sample = self.meter.sample().map_err(internal)?;
        let mut info = HostInfo::new(
            self.agent.host(),
            format!("host{}", self.agent.host()),
            HostCapacity {
                cpus: sample.cpus,
                memory_mib: sample.memory_mib,
            },
        );
        info.uptime_ms = self.now_ms();
        info.load = HostLoad {
            cpu_percent: sample.cpu_busy * 100.0,
            memory_used_mib: sample.memory_used_mib,
        };
        info.ksm = KsmSavings {
            saved_bytes: sample.ksm_saved_bytes,
            pages_sharing: sample.ksm_saved_bytes / 4096,
        };
        let now = self.now_ms();
        info.ha = self
            .peers
            .iter()
            .map(|&(id, _)| HaPeer {
                id,
                verdict: verdict(self.agent.verdict(id).unwrap_or(Verdict::Unknown)),
                heard_ms_ago: self.agent.heard_ms(id).map(|t| now.saturating_sub(t)),
            })
            .collect();
        let inventory = self.agent.inventory();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        info.maintenance = self.maintenance;
        info.vms = VmCounts {
            defined: count(inventory.len()),
            running: count(inventory.iter().filter(|v| v.owner.is_some()).count()),
            running_here: count(self.vms.names().len()),
        };
        Ok(info)
    }

    fn names(&self) -> Result<Vec<String>, ApiError> {
        if !self.volume.exists(VMS_DIR).map_err(internal)? {
            return Ok(Vec::new());
        }
        Ok(self
            .volume
            .list(VMS_DIR)
            .map_err(internal)?
            .into_iter()
            .filter(|e| e.kind == Kind::Dir && e.name != "." && e.name != "..")
            .map(|e| e.name)
            .collect())
    }

    fn list_vms(&mut self) -> Result<Vec<VmInfo>, ApiError> {
        self.names()?.iter().map(|n| self.vm_info(n)).collect()
    }

    pub(super) fn vm_info(&mut self, name: &str) -> Result<VmInfo, ApiError> {
        if !self.volume.exists(&vm_dir(name)).map_err(internal)? {
            return Err(ApiError::VmNotFound(name.to_string()));
        }
        let settings = VmfsDatastore::read_settings(&self.volume, name).map_err(internal)?;
        let config = read_definition(&self.volume, name).map_err(internal)?;
        let owner = self
            .volume
            .lock_info(&vinfra_ha::datastore::lock_path(name))
            .map_err(internal)?
            .holders
            .first()
            .map(|h| h.host);
        let here = self.vms.pid(name).is_some();
        let state = if here || owner.is_some() {
            PowerState::Running
        } else {
            PowerState::ShutOff
        };
        let mut spec = spec_of(name, &config, &settings);
        let devices = super::devices::read(&self.volume, name)?;
        spec.disks = devices.disk_specs();
        spec.nics = devices.nic_specs();
        if let Some(r) = &devices.resources {
            spec.resources = r.clone();
        }
        let mut info = VmInfo::new(spec, state);
        info.snapshots = devices
            .snapshots
            .iter()
            .map(|s| SnapshotInfo {
                name: s.name.clone(),
                taken_ms: s.taken_ms,
            })
            .collect();
        info.host = if here { Some(self.agent.host()) } else { owner };
        if here {
            info.stats = self.vm_stats(name);
        }
        Ok(info)
    }

    /// The VM, or 409 when another host runs it (that host is the one to ask).
    pub(super) fn vm_not_elsewhere(&mut self, name: &str) -> Result<VmInfo, ApiError> {
        let vm = self.vm_info(name)?;
        match vm.host.filter(|&h| h != self.agent.host()) {
            Some(h) => Err(ApiError::RunningElsewhere {
                vm: name.to_string(),
                host: h.to_string(),
            }),
            None => Ok(vm),
        }
    }

    /// Waits (off the loop, for at most [`CONTROL_START`]) until a VM started here has
    /// published its control socket: a start succeeds once the process runs, and an
    /// operation asked for right after it (a backup job, a snapshot, a migration)
    /// would otherwise find no socket yet. At once for a VM that answered before or
    /// does not run here.
    pub(super) fn await_control(&mut self, name: &str) -> Result<(), ApiError> {
        let Some(wait) = self.vms.until_answering(name) else {
            return Ok(());
        };
        match self.off_loop(|| wait.wait(CONTROL_START)) {
            Ok(_) => {
                if let Some(p) = self.vms.process_mut(name) {
                    p.answered();
                }
                Ok(())
            }
            Err(e) => Err(ApiError::WrongState {
                vm: name.to_string(),
                state: PowerState::Running,
                needed: format!("its process must have started: {e}"),
            }),
        }
    }

    fn vm_stats(&mut self, name: &str) -> Option<VmStats> {
        let now = self.now_ms();
        let s = self.vms.stats(name)?;
        let mut stats = VmStats {
            rss_bytes: s.rss_bytes,
            ..VmStats::default()
        };
        // I/O as the VM's process counts it (its control socket, about a millisecond);
        // a process that does not answer leaves them 0.
        match self.vms.process_mut(name).map(|p| p.status()) {
            Some(Ok(st)) => {
                let io = st.io;
                stats.disk_reads = io.disk_reads;
                stats.disk_writes = io.disk_writes;
                stats.disk_flushes = io.disk_flushes;
                stats.disk_read_bytes = io.disk_read_bytes;
                stats.disk_written_bytes = io.disk_written_bytes;
                stats.console_in_bytes = io.console_in_bytes;
                stats.console_bytes = io.console_out_bytes;
            }
            Some(Err(e)) => tracing::debug!(vm = name, "status for the I/O counts: {e}"),
            None => {}
        }
        // CPU % over the time since this VM's previous reading.
        if let Some((t, cpu)) = self.cpu_seen.insert(name.to_string(), (now, s.cpu_ns)) {
            let dt_ns = now.saturating_sub(t).saturating_mul(1_000_000);
            if dt_ns > 0 {
                #[allow(clippy::cast_precision_loss, reason = "a percentage")]
                let pct = s.cpu_ns.saturating_sub(cpu) as f64 * 100.0 / dt_ns as f64;
                stats.cpu_percent = pct;
            }
        }
        Some(stats)
    }

    fn create_vm(&mut self, spec: &VmSpec) -> Result<VmInfo, ApiError> {
        if self.volume.exists(&vm_dir(&spec.name)).map_err(internal)? {
            return Err(ApiError::VmExists(spec.name.clone()));
        }
        let mut config = VmConfig::new(std::path::PathBuf::from(&spec.kernel));
        config.initrd = spec.initrd.clone().map(Into::into);
        config.cmdline = spec.cmdline.clone();
        config.memory_mib = u64::from(spec.memory_mib);
        config.vcpus = spec.vcpus;
        let settings = HaSettings {
            desired_on: false,
            priority: priority_to_ha(spec.ha.priority),
            isolation_response: response_to_ha(spec.ha.isolation_response),
            cpu_mhz: i64::from(spec.resources.cpu_mhz.max(1)),
            mem_mb: i64::from(spec.memory_mib),
        };
        VmfsDatastore::write_settings(&self.volume, &spec.name, &settings).map_err(internal)?;
        write_definition(&self.volume, &spec.name, &config).map_err(internal)?;
        self.create_devices(spec)?;
        self.report
            .event("vm_created", serde_json::json!({"vm": spec.name}));
        self.vm_info(&spec.name)
    }

    fn delete_vm(&mut self, name: &str) -> Result<(), ApiError> {
        self.refuse_during_backup(name)?;
        let vm = self.vm_info(name)?;
        if vm.state != PowerState::ShutOff {
            return Err(ApiError::WrongState {
                vm: name.to_string(),
                state: vm.state,
                needed: "it must be shut off".into(),
            });
        }
        self.check_deletable(name)?;
        let dir = vm_dir(name);
        for e in self.volume.list(&dir).map_err(internal)? {
            if e.name != "." && e.name != ".." {
                self.delete_file(&format!("{dir}/{}", e.name))?;
            }
        }
        self.volume.delete(&dir).map_err(internal)?;
        self.report
            .event("vm_deleted", serde_json::json!({"vm": name}));
        self.refresh();
        Ok(())
    }

    /// Deletes a file of a VM that runs nowhere. Every host's HA reading opens a VM's
    /// `ha.json` for a moment (a shared read), so a delete that meets such a lock tries
    /// again for a while (the VMs' leases fed meanwhile) instead of failing the request.
    fn delete_file(&mut self, path: &str) -> Result<(), ApiError> {
        let deadline = std::time::Instant::now() + DELETE_PATIENCE;
        loop {
            match self.volume.delete(path) {
                Err(vinfra_vmfs::Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    self.vms.keep_alive();
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                done => return done.map_err(internal),
            }
        }
    }

    /// Writes `desired_on` into the VM's settings.
    pub(super) fn set_desired(&mut self, name: &str, on: bool) -> Result<(), ApiError> {
        let mut s = VmfsDatastore::read_settings(&self.volume, name).map_err(internal)?;
        if s.desired_on != on {
            s.desired_on = on;
            VmfsDatastore::write_settings(&self.volume, name, &s).map_err(internal)?;
        }
        // The next reading must see it: the agent restarts a crashed VM of its own only
        // when its reading says the VM should run.
        self.datastore.forget(name);
        Ok(())
    }

    /// Feeds the agent a reading taken now.
    pub(super) fn refresh(&mut self) {
        self.act(Action::ReadDatastore);
    }

    fn start_op(&mut self, name: &str, op: VmOp, task: TaskHandle) -> Result<(), ApiError> {
        // NAME is the backed-up VM's, which need not exist any more (cluster/backup.rs).
        if let VmOp::Restore(req) = &op {
            return self.restore_vm(name, req, task);
        }
        self.refuse_during_backup(name)?;
        if !matches!(op, VmOp::Start | VmOp::Stop) {
            self.await_control(name)?;
        }
        let t_op = std::time::Instant::now();
        let vm = self.vm_info(name)?;
        let me = self.agent.host();
        let elsewhere = vm.host.filter(|&h| h != me);
        let wrong = |wanted: &'static str| ApiError::WrongState {
            vm: name.to_string(),
            state: vm.state,
            needed: wanted.to_string(),
        };
        match op {
            VmOp::Start => {
                if let Some(host) = elsewhere {
                    return Err(ApiError::RunningElsewhere {
                        vm: name.to_string(),
                        host: host.to_string(),
                    });
                }
                if vm.state == PowerState::Running {
                    return Err(wrong("it must be shut off"));
                }
                self.refuse_in_maintenance(name, vm.state)?;
                self.check_port_groups(name)?;
                let checks_ms = t_op.elapsed().as_secs_f64() * 1000.0;
                let t = std::time::Instant::now();
                let outcome = self.vms.power_on(name);
                let started = outcome == PowerOnOutcome::Started;
                let spawn_ms = t.elapsed().as_secs_f64() * 1000.0;
                if started {
                    // `desired_on` is written once the child runs (under the VM's lock,
                    // taken by power_on): its fdatasync on the volume then overlaps the
                    // guest's boot instead of delaying it. Nothing reads it meanwhile
                    // that could act: a peer sees the VM's lock held, and this agent
                    // hears of the VM only below.
                    let t = std::time::Instant::now();
                    if let Err(e) = self.set_desired(name, true) {
                        let exit = self.vms.power_off(name);
                        self.report.event(
                            "vm_powered_off",
                            serde_json::json!({"vm": name, "why": "start failed", "exit": exit}),
                        );
                        return Err(e);
                    }
                    self.report.event(
                        "vm_started",
                        serde_json::json!({"vm": name, "pid": self.vms.pid(name),
                                           "spawn_ms": spawn_ms,
                                           "checks_ms": checks_ms,
                                           "times": self.vms.last_start(),
                                           "desired_ms": t.elapsed().as_secs_f64() * 1000.0,
                                           "by": "api"}),
                    );
                }
                // No fresh reading here: the agent's last one (unowned, or not desired)
                // can only keep it from starting the VM again, and the guest's first
                // console lines wait while this loop reads the volume.
                self.feed(Event::PowerOnResult {
                    vm: name.to_string(),
                    outcome: outcome.clone(),
                });
                if started {
                    task.succeed(serde_json::json!({"pid": self.vms.pid(name), "host": me}));
                    Ok(())
                } else {
                    // Leave it off as it was: HA must not go on trying.
                    let _ = self.set_desired(name, false);
                    match outcome {
                        PowerOnOutcome::LockHeld { owner } => Err(ApiError::RunningElsewhere {
                            vm: name.to_string(),
                            host: owner.to_string(),
                        }),
                        other => Err(ApiError::Internal(format!("power on: {other:?}"))),
                    }
                }
            }
            VmOp::Stop | VmOp::Reset => {
                if let Some(host) = elsewhere {
                    return Err(ApiError::RunningElsewhere {
                        vm: name.to_string(),
                        host: host.to_string(),
                    });
                }
                if self.vms.pid(name).is_none() {
                    return Err(wrong("it must run on this host"));
                }
                if op == VmOp::Reset {
                    self.vms.reset(name).map_err(ApiError::Internal)?;
                    self.report
                        .event("vm_reset", serde_json::json!({"vm": name, "why": "api"}));
                    task.succeed(serde_json::json!({}));
                    return Ok(());
                }
                self.set_desired(name, false)?;
                self.ha_shutdowns.remove(name);
                let exit = self.vms.power_off(name);
                self.report.event(
                    "vm_powered_off",
                    serde_json::json!({"vm": name, "why": "api", "exit": exit}),
                );
                // The reading first: fed `VmStopped` with its last reading (this host
                // owns it, it should run), the agent would start it again at once.
                self.refresh();
                self.feed(Event::VmStopped {
                    vm: name.to_string(),
                });
                task.succeed(serde_json::json!({"exit": exit}));
                Ok(())
            }
            VmOp::Shutdown(req) => {
                if let Some(host) = elsewhere {
                    return Err(ApiError::RunningElsewhere {
                        vm: name.to_string(),
                        host: host.to_string(),
                    });
                }
                if self.vms.pid(name).is_none() || self.vms.migrating(name) {
                    return Err(wrong("it must run on this host"));
                }
                self.start_shutdown(name, req, task)
            }
            VmOp::Migrate(req) => {
                if let Some(host) = elsewhere {
                    return Err(ApiError::RunningElsewhere {
                        vm: name.to_string(),
                        host: host.to_string(),
                    });
                }
                self.start_migration(name, &req, task)
            }
            // Disk operations: cluster/vm_ops.rs.
            VmOp::Snapshot(req) => self.snapshot_vm(name, &req, task),
            VmOp::Revert(req) => self.revert_vm(name, &req, task),
            VmOp::Clone(req) => self.clone_vm(name, &req, task),
            // Backups: cluster/backup.rs.
            VmOp::Backup(req) => self.backup_vm(name, &req, task),
            VmOp::RestoreDisk(req) => self.restore_disk(name, &req, task),
            other => Err(ApiError::Unsupported(format!(
                "{:?} through vinfra-host's API is not wired yet",
                other.kind()
            ))),
        }
    }
}
