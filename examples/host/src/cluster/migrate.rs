//! Live migration between hosts through their APIs (examples/README.md, "Migration between
//! hosts"). The source host's task thread asks the destination's API for an address
//! (`POST /incoming`: the destination starts `vinfra-vm incoming` there), then asks its
//! own VM process to send the VM ([`crate::migration`]'s control request), turning the
//! progress events into the task's progress; the loop hears the outcome
//! ([`Inbound::Migrated`]) and releases the VM's lock, which the destination takes as
//! soon as the VM runs there ([`Vms::arrivals`](super::vms::Vms::arrivals)).
//!
//! A peer's API is found at its HA address with this host's API port: every host of a
//! cluster serves its API on the same port.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use vinfra_ha::datastore::VmfsDatastore;
use vinfra_ha::Event;

use super::vms::{read_definition, Arrival};
use super::{Host, Inbound};
use crate::api::{ApiError, ApiToken, IncomingReady, IncomingRequest, MigrateRequest, TaskHandle};
use crate::migration::{request, ControlEvent, ControlRequest, MigrateSettings};

/// How long a destination waits for a VM it was told to expect.
const ARRIVAL_PATIENCE: Duration = Duration::from_secs(120);
/// The downtime a migration aims at.
const DOWNTIME_MS: u64 = 300;
/// A migration that has not converged by then is abandoned (the VM runs on here).
const TIME_LIMIT_MS: u64 = 60_000;

/// What the sending thread tells the loop.
#[derive(Debug)]
pub enum Outcome {
    /// The VM runs on the destination; the migration's statistics.
    Moved(serde_json::Value),
    /// It failed; `in_doubt`: the VM is paused here and must never run here again.
    Failed {
        /// Why.
        error: String,
        /// See above.
        in_doubt: bool,
    },
}

impl Outcome {
    /// Ends the migration's task with this outcome.
    fn finish(&self, task: TaskHandle) {
        match self {
            Self::Moved(stats) => task.succeed(stats.clone()),
            Self::Failed { error, .. } => task.fail(&ApiError::Internal(error.clone())),
        }
    }
}

/// What a migration's sending thread needs.
struct Sender_ {
    vm: String,
    control: PathBuf,
    peer_api: String,
    token: ApiToken,
    key_file: Option<PathBuf>,
    tx: Sender<Inbound>,
    /// The destination's answer to `POST /incoming`.
    ready: Option<IncomingReady>,
}

/// A destination's refusal of `POST /incoming`.
#[derive(Debug)]
struct Refusal {
    status: u16,
    message: String,
}

impl Refusal {
    /// The source's answer: the destination's 409 and 422 are the request's 422 (it
    /// cannot go there), the rest a failure to ask.
    fn for_destination(self, to: u32) -> ApiError {
        match self.status {
            409 | 422 => ApiError::InvalidValue {
                field: "to".into(),
                why: format!("host {to} refuses the VM: {}", self.message),
            },
            404 => ApiError::InvalidValue {
                field: "to".into(),
                why: format!("host {to} does not know the VM: {}", self.message),
            },
            _ => ApiError::Internal(format!("host {to}: {}", self.message)),
        }
    }
}

impl Host {
    /// The host `to` names: an id (`2`) or a name (`host2`).
    fn peer(&self, to: &str) -> Option<(u32, SocketAddr)> {
        let id: u32 = to.strip_prefix("host").unwrap_or(to).parse().ok()?;
        self.peers.iter().find(|(h, _)| *h == id).copied()
    }

    /// `POST /vms/NAME/migrate`: checks, then sends the VM on a thread of its own.
    pub(super) fn start_migration(
        &mut self,
        name: &str,
        req: &MigrateRequest,
        task: TaskHandle,
    ) -> Result<(), ApiError> {
        let me = self.agent.host();
        let Some((to, ha_addr)) = self.peer(&req.to) else {
            return Err(ApiError::UnknownHost(req.to.clone()));
        };
        if to == me {
            return Err(ApiError::InvalidValue {
                field: "to".into(),
                why: format!("{name} runs on host {me} already"),
            });
        }
        if self.agent.verdict(to) != Some(vinfra_ha::Verdict::Alive) {
            return Err(ApiError::InvalidValue {
                field: "to".into(),
                why: format!("host {to} is not alive as HA sees it"),
            });
        }
        let Some(api) = &self.api else {
            return Err(ApiError::Unsupported("this host serves no API port".into()));
        };
        if self.vms.migrating(name) {
            return Err(ApiError::WrongState {
                vm: name.to_string(),
                state: crate::api::PowerState::Running,
                needed: "it is being migrated already".into(),
            });
        }
        if self.vms.pid(name).is_none() {
            return Err(ApiError::WrongState {
                vm: name.to_string(),
                state: crate::api::PowerState::ShutOff,
                needed: "it must run on this host".into(),
            });
        }
        let mut sender = Sender_ {
            vm: name.to_string(),
            control: PathBuf::new(),
            peer_api: format!("http://{}:{}", ha_addr.ip(), api.listen.port()),
            token: api.token.clone(),
            key_file: self.key_file.clone(),
            tx: self.tx.clone(),
            ready: None,
        };
        // The destination is asked now, so that its refusal (a VM running there, its
        // maintenance mode, CPU features it lacks) is this request's answer and nothing
        // moves. It answers from its own loop in milliseconds.
        let ready = self
            .off_loop(|| sender.prepare())
            .map_err(|e| e.for_destination(to))?;
        sender.ready = Some(ready);
        let Some(control) = self.vms.leave(name) else {
            return Err(ApiError::Internal(format!("{name} stopped meanwhile")));
        };
        sender.control = control;
        self.report.event(
            "migration_started",
            serde_json::json!({"vm": name, "to": to}),
        );
        std::thread::Builder::new()
            .name(format!("migrate-{name}"))
            .spawn(move || sender.run(task))
            .map(drop)
            .map_err(|e| {
                self.vms.left(name, false);
                ApiError::Internal(format!("spawn the migration thread: {e}"))
            })
    }

    /// The sender's verdict reached the loop. The task ends only now, once this host
    /// no longer counts the VM as its own: a client that sees the relocation done and
    /// asks this host gets the VM's new place, never the old one.
    pub(super) fn migration_ended(&mut self, vm: &str, outcome: &Outcome, task: TaskHandle) {
        let (moved_or_doubt, event) = match outcome {
            Outcome::Moved(_) => (true, serde_json::json!({"vm": vm, "moved": true})),
            Outcome::Failed { error, in_doubt } => (
                *in_doubt,
                serde_json::json!({"vm": vm, "moved": false, "error": error, "in_doubt": in_doubt}),
            ),
        };
        let exit = self.vms.left(vm, moved_or_doubt);
        self.report.event("migration_ended", event);
        if moved_or_doubt {
            // As for a stop: the reading first, so that the agent does not start the VM
            // again from its last one (this host owned it, it should run).
            self.refresh();
            self.feed(Event::VmStopped { vm: vm.to_string() });
            tracing::info!(vm, ?exit, "the VM left this host");
        }
        outcome.finish(task);
    }

    /// `POST /incoming`: starts `vinfra-vm incoming` on a free port of this host's
    /// VMotion address (or its HA address) and says where.
    pub(super) fn prepare_incoming(
        &mut self,
        request: &IncomingRequest,
    ) -> Result<IncomingReady, ApiError> {
        let vm = self.vm_info(&request.vm)?;
        self.refuse_in_maintenance(&request.vm, vm.state)?;
        // CPU features (as EVC): the VM's guest sees every bit its definition does not
        // hide; this host lacks the bits of `--hide-cpuid`.
        let config = read_definition(&self.volume, &request.vm).map_err(ApiError::Internal)?;
        let missing: Vec<String> = self
            .cpuid_missing
            .iter()
            .filter(|m| {
                !config.cpuid_hidden.iter().any(|h| {
                    h.function == m.function
                        && h.index == m.index
                        && h.register == m.register
                        && h.mask & m.mask == m.mask
                })
            })
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::CpuIncompatible {
                vm: request.vm.clone(),
                missing,
            });
        }
        if self.vms.pid(&request.vm).is_some() || self.vms.migrating(&request.vm) {
            return Err(ApiError::WrongState {
                vm: request.vm.clone(),
                state: vm.state,
                needed: "it must not run on the destination".into(),
            });
        }
        let me = self.agent.host();
        // The VMotion interface when the host has one, else its HA address.
        let ip: IpAddr = self.vmotion_address.unwrap_or_else(|| {
            self.peers
                .iter()
                .find(|(h, _)| *h == me)
                .map_or(IpAddr::from([127, 0, 0, 1]), |(_, a)| a.ip())
        });
        // A free port now; the child binds it a few ms later.
        let port = TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| ApiError::Internal(format!("a port on {ip}: {e}")))?
            .port();
        let address = SocketAddr::new(ip, port).to_string();
        // The incoming child refuses, in vmotion's own check, a VM shown these bits.
        let hide: Vec<std::ffi::OsString> = self
            .cpuid_missing
            .iter()
            .flat_map(|m| ["--hide-cpuid".into(), m.to_string().into()])
            .collect();
        self.vms
            .arrive(
                &request.vm,
                &address,
                self.key_file.clone(),
                hide,
                ARRIVAL_PATIENCE,
            )
            .map_err(ApiError::Internal)?;
        self.report.event(
            "migration_incoming",
            serde_json::json!({"vm": request.vm, "address": address}),
        );
        Ok(IncomingReady { address })
    }

    /// Each tick: VMs that arrived take their place (HA tracks them from now on).
    pub(super) fn arrivals(&mut self) {
        for (vm, arrival) in self.vms.arrivals() {
            match arrival {
                Arrival::Arrived => {
                    self.report.event(
                        "vm_arrived",
                        serde_json::json!({"vm": vm, "pid": self.vms.pid(&vm)}),
                    );
                    self.feed(Event::PowerOnResult {
                        vm: vm.clone(),
                        outcome: vinfra_ha::PowerOnOutcome::Started,
                    });
                    self.refresh();
                }
                Arrival::Failed(why) => {
                    self.report.event(
                        "migration_incoming_failed",
                        serde_json::json!({"vm": vm, "why": why}),
                    );
                }
            }
        }
    }
}

impl Host {
    /// 409 while this host is in maintenance mode (for `vm`, now `state`).
    pub(super) fn refuse_in_maintenance(
        &self,
        vm: &str,
        state: crate::api::PowerState,
    ) -> Result<(), ApiError> {
        if self.maintenance {
            return Err(ApiError::WrongState {
                vm: vm.to_string(),
                state,
                needed: format!(
                    "host {} is in maintenance mode and takes no VM",
                    self.agent.host()
                ),
            });
        }
        Ok(())
    }

    /// `POST /host/maintenance`. Entering marks the host on the volume (HA places
    /// nothing here from the next reading on), then a thread moves each VM to another
    /// live host, one at a time, through this host's own API; leaving takes effect at
    /// once.
    pub(super) fn maintenance(&mut self, enter: bool, task: TaskHandle) -> Result<(), ApiError> {
        let me = self.agent.host();
        let internal = |e: vinfra_ha::datastore::DatastoreError| ApiError::Internal(e.to_string());
        if !enter {
            VmfsDatastore::set_maintenance(&self.volume, me, false).map_err(internal)?;
            self.maintenance = false;
            self.refresh();
            self.report
                .event("maintenance", serde_json::json!({"enter": false}));
            task.succeed(serde_json::json!({"maintenance": false}));
            return Ok(());
        }
        let Some(api) = self.api.clone() else {
            return Err(ApiError::Unsupported("this host serves no API port".into()));
        };
        let away = VmfsDatastore::maintenance(&self.volume).map_err(internal)?;
        let targets: Vec<u32> = self
            .peers
            .iter()
            .map(|&(h, _)| h)
            .filter(|&h| h != me && !away.contains(&h))
            .filter(|&h| self.agent.verdict(h) == Some(vinfra_ha::Verdict::Alive))
            .collect();
        let vms: Vec<String> = self
            .vms
            .names()
            .into_iter()
            .filter(|v| !self.vms.migrating(v))
            .collect();
        if !vms.is_empty() && targets.is_empty() {
            return Err(ApiError::WrongState {
                vm: String::new(),
                state: crate::api::PowerState::Running,
                needed: format!(
                    "{} VMs run here and no other live host can take them",
                    vms.len()
                ),
            });
        }
        VmfsDatastore::set_maintenance(&self.volume, me, true).map_err(internal)?;
        self.maintenance = true;
        self.refresh();
        self.report.event(
            "maintenance",
            serde_json::json!({"enter": true, "vms": vms, "targets": targets}),
        );
        let own_api = format!("http://{}", api.listen);
        let token = api.token;
        std::thread::Builder::new()
            .name("maintenance".into())
            .spawn(move || evacuate(&own_api, &token, &vms, &targets, task))
            .map(drop)
            .map_err(|e| ApiError::Internal(format!("spawn the evacuation thread: {e}")))
    }
}

/// Moves `vms` off this host (its API at `api`), spreading them over `targets` in turn,
/// one migration at a time.
fn evacuate(api: &str, token: &ApiToken, vms: &[String], targets: &[u32], task: TaskHandle) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let auth = format!("Bearer {}", token.as_str());
    let started = std::time::Instant::now();
    let mut moved = Vec::new();
    for (i, vm) in vms.iter().enumerate() {
        let to = targets[i % targets.len()];
        #[allow(clippy::cast_precision_loss, reason = "a fraction for a bar")]
        task.progress(
            i as f64 / vms.len() as f64,
            format!("moving {vm} to host {to}"),
        );
        let result = (|| -> Result<(), String> {
            let url = format!("{api}/api/v1/vms/{vm}/migrate");
            let mut r = agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(serde_json::json!({"to": to.to_string()}).to_string())
                .map_err(|e| format!("{url}: {e}"))?;
            let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
            let started: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
            let Some(id) = started["task"].as_u64() else {
                return Err(format!("refused: {text}"));
            };
            let deadline =
                std::time::Instant::now() + Duration::from_millis(TIME_LIMIT_MS + 30_000);
            loop {
                let url = format!("{api}/api/v1/tasks/{id}");
                let mut r = agent
                    .get(&url)
                    .header("Authorization", &auth)
                    .call()
                    .map_err(|e| format!("{url}: {e}"))?;
                let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
                let t: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
                match t["state"].as_str() {
                    Some("success") => return Ok(()),
                    Some("error") => return Err(t["error"]["message"].to_string()),
                    _ if std::time::Instant::now() > deadline => {
                        return Err("the migration did not end in time".into())
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })();
        if let Err(e) = result {
            task.fail(&ApiError::Internal(format!(
                "moving {vm} to host {to}: {e} (moved so far: {moved:?}; the host stays in \
                 maintenance mode)"
            )));
            return;
        }
        moved.push(serde_json::json!({"vm": vm, "to": to}));
    }
    task.succeed(serde_json::json!({
        "maintenance": true,
        "moved": moved,
        "total_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }));
}

impl Sender_ {
    fn run(self, task: TaskHandle) {
        let outcome = match self.send(&task) {
            Ok(stats) => Outcome::Moved(stats),
            Err((error, in_doubt)) => Outcome::Failed { error, in_doubt },
        };
        // The loop ends the task once the VM is no longer this host's. The loop is gone
        // when the host shuts down (the VM stopped with it): the task ends here then.
        if let Err(mpsc::SendError(Inbound::Migrated { outcome, task, .. })) =
            self.tx.send(Inbound::Migrated {
                vm: self.vm,
                outcome,
                task,
            })
        {
            outcome.finish(task);
        }
    }

    /// The whole migration: `Ok` with the statistics, or the error and whether the VM is
    /// in doubt.
    fn send(&self, task: &TaskHandle) -> Result<serde_json::Value, (String, bool)> {
        let Some(ready) = &self.ready else {
            return Err(("the destination was never asked".into(), false));
        };
        task.progress(0.02, format!("sending to {}", ready.address));
        let settings = MigrateSettings {
            to: ready.address.clone(),
            key_file: self.key_file.clone(),
            plaintext: self.key_file.is_none(),
            downtime_ms: DOWNTIME_MS,
            bandwidth_bytes_per_s: None,
            time_limit_ms: TIME_LIMIT_MS,
            auto_converge: true,
        };
        let last = request(&self.control, &ControlRequest::Migrate(settings), |e| {
            if let ControlEvent::Progress(p) = e {
                #[allow(clippy::cast_precision_loss, reason = "a fraction for a bar")]
                let done = if p.pages_total == 0 {
                    0.0
                } else {
                    1.0 - p.pages_left as f64 / p.pages_total as f64
                };
                task.progress(
                    0.02 + 0.96 * done.clamp(0.0, 1.0),
                    format!("round {}, {} pages left", p.round, p.pages_left),
                );
            }
        })
        .map_err(|e| (e, false))?;
        match last {
            ControlEvent::Migrated(stats) => {
                Ok(serde_json::to_value(&stats).unwrap_or(serde_json::Value::Null))
            }
            ControlEvent::Failed { error, in_doubt } => Err((error, in_doubt)),
            other => Err((format!("unexpected answer {other:?}"), false)),
        }
    }

    /// `POST /incoming` on the destination.
    fn prepare(&self) -> Result<IncomingReady, Refusal> {
        let url = format!("{}/api/v1/incoming", self.peer_api);
        let failed = |message: String| Refusal { status: 0, message };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let body = serde_json::to_string(&IncomingRequest {
            vm: self.vm.clone(),
        })
        .map_err(|e| failed(e.to_string()))?;
        let mut response = agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token.as_str()))
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|e| failed(format!("{url}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| failed(format!("{url}: {e}")))?;
        if status != 200 {
            let message = serde_json::from_str::<crate::api::ErrorBody>(&text)
                .map_or(text, |b| b.error.message);
            return Err(Refusal { status, message });
        }
        serde_json::from_str(&text).map_err(|e| failed(format!("{url}: {e}: {text}")))
    }
}
