//! One host's poller: every `poll_ms`, `GET /host`, `GET /vms` and the events after the
//! host's cursor, into the store. Three missed polls make the host `not_responding`;
//! its VMs keep their last known state (their `seen_ms` tells how old it is).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vinfra_host::api::client::{Client, ClientError};
use vinfra_host::api::{HostEvent, HostInfo, VmInfo, EVENTS_LIMIT_MAX};

use super::{names_by_id, vm_record, MISSED_POLLS_MAX};
use crate::clock::Clock;
use crate::events::Events;
use crate::model::{HostState, NewEvent, Severity, StatSample};
use crate::store::Store;

/// Pages of events read per poll at most (a host far ahead catches up over polls).
const EVENT_PAGES_MAX: usize = 10;
/// Host events not copied into the center's log.
const SKIPPED_EVENTS: [&str; 1] = ["console"];
/// How often the stop flag is looked at while waiting for the next poll.
const STOP_SLICE: Duration = Duration::from_millis(50);

pub(super) struct PollCtx {
    pub name: String,
    pub client: Client,
    pub store: std::sync::Arc<dyn Store>,
    pub events: Events,
    pub clock: Clock,
    pub poll_ms: u64,
}

/// What the last poll saw, so that an unchanged list is not written again.
#[derive(Default)]
struct Seen {
    vms: Option<Vec<VmInfo>>,
    names: HashMap<u32, String>,
}

pub(super) fn run(ctx: PollCtx, stop: &AtomicBool) {
    let mut missed = 0u32;
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        match poll(&ctx, &mut seen) {
            Ok(()) => missed = 0,
            Err(e) => {
                missed = missed.saturating_add(1);
                tracing::debug!(host = %ctx.name, missed, "poll failed: {e}");
                if missed == MISSED_POLLS_MAX {
                    not_responding(&ctx, &e);
                    // Whatever it says when it is back is news.
                    seen = Seen::default();
                }
            }
        }
        let mut waited = Duration::ZERO;
        while waited < Duration::from_millis(ctx.poll_ms) && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(STOP_SLICE);
            waited += STOP_SLICE;
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn not_responding(ctx: &PollCtx, why: &PollError) {
    let result = ctx
        .store
        .set_host_state(&ctx.name, HostState::NotResponding)
        .and_then(|()| {
            ctx.events.record(&NewEvent {
                time_ms: (ctx.clock)(),
                severity: Severity::Warning,
                kind: "host.not_responding".into(),
                target: ctx.name.clone(),
                user: None,
                host: Some(ctx.name.clone()),
                message: format!("host {} is not responding: {why}", ctx.name),
                data: serde_json::Value::Null,
            })
        });
    if let Err(e) = result {
        tracing::warn!(host = %ctx.name, "recording not responding: {e}");
    }
}

fn poll(ctx: &PollCtx, seen: &mut Seen) -> Result<(), PollError> {
    let info: HostInfo = ctx.client.get("/host")?;
    let now_ms = (ctx.clock)();
    let Some(before) = ctx.store.host(&ctx.name)? else {
        // Removed from the inventory meanwhile: its poller is being stopped.
        return Ok(());
    };
    let state = if info.maintenance {
        HostState::Maintenance
    } else {
        HostState::Connected
    };
    if before.state != state {
        ctx.events.record(&NewEvent {
            time_ms: now_ms,
            severity: Severity::Info,
            kind: format!("host.{}", state.as_str()),
            target: ctx.name.clone(),
            user: None,
            host: Some(ctx.name.clone()),
            message: format!("host {} is {}", ctx.name, state.as_str().replace('_', " ")),
            data: serde_json::json!({ "id": info.id }),
        })?;
    }
    // A host that restarted numbers its events from the start again.
    let restarted = before
        .report
        .as_ref()
        .is_some_and(|r| r.uptime_ms > info.uptime_ms);
    let cursor = if restarted { 0 } else { before.event_cursor };
    ctx.store.host_seen(&ctx.name, state, &info, now_ms)?;
    let period = now_ms - now_ms % crate::model::STAT_LEVELS[0].period_ms;
    let mut samples = vec![StatSample {
        entity: format!("host/{}", ctx.name),
        level: 0,
        time_ms: period,
        cpu_percent: info.load.cpu_percent,
        memory_mib: info.load.memory_used_mib as f64,
        disk_bytes: 0.0,
        net_bytes: 0.0,
    }];

    // Rows written after this (a create, a task's read-back) are newer than the list.
    let asked_ms = (ctx.clock)();
    let vms: Vec<VmInfo> = ctx.client.get("/vms")?;
    let names = names_by_id(ctx.store.as_ref())?;
    for vm in &vms {
        if let (Some(stats), true) = (&vm.stats, vm.host == Some(info.id)) {
            samples.push(StatSample {
                entity: format!("vm/{}", vm.spec.name),
                level: 0,
                time_ms: period,
                cpu_percent: stats.cpu_percent,
                memory_mib: stats.rss_bytes as f64 / (1024.0 * 1024.0),
                disk_bytes: (stats.disk_read_bytes + stats.disk_written_bytes) as f64,
                net_bytes: stats.console_bytes as f64,
            });
        }
    }
    // Every host reports every VM of the cluster at every poll, and mostly nothing
    // changed: only a list that differs from this host's last one is written.
    if seen.vms.as_ref() != Some(&vms) || seen.names != names {
        sync_vms(ctx, &vms, &names, info.id, asked_ms)?;
        seen.vms = Some(vms);
        seen.names = names;
    }
    ctx.store.add_samples(&samples)?;

    // Hosts time their events from their own start: the center's clock at that start.
    let host_start_ms = now_ms.saturating_sub(info.uptime_ms);
    let mut cursor = cursor;
    for _ in 0..EVENT_PAGES_MAX {
        let page: Vec<HostEvent> = ctx.client.get(&format!("/events?after={cursor}"))?;
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        let full = page.len() >= EVENTS_LIMIT_MAX;
        // A guest's console lines are output, not events: the console shows them.
        let new: Vec<NewEvent> = page
            .iter()
            .filter(|e| !SKIPPED_EVENTS.contains(&e.event.as_str()))
            .map(|e| copied(&ctx.name, e, host_start_ms))
            .collect();
        let recorded = ctx.store.host_events(&ctx.name, cursor, &new)?;
        ctx.events.announce(recorded);
        if !full {
            break;
        }
    }
    if restarted && cursor == 0 {
        ctx.store.host_events(&ctx.name, 0, &[])?;
    }
    Ok(())
}

/// Writes a host's list of the cluster's VMs.
fn sync_vms(
    ctx: &PollCtx,
    vms: &[VmInfo],
    names: &HashMap<u32, String>,
    host_id: u32,
    asked_ms: u64,
) -> Result<(), PollError> {
    let known: HashMap<String, crate::model::Vm> = ctx
        .store
        .vms()?
        .into_iter()
        .map(|v| (v.name.clone(), v))
        .collect();
    let records: Vec<_> = vms
        .iter()
        .map(|vm| {
            let mut vm = vm.clone();
            // Only the host that runs a VM measures it: keep what that host said.
            if vm.stats.is_none() && vm.host != Some(host_id) {
                if let Some(old) = known.get(&vm.spec.name) {
                    if old.info.host == vm.host {
                        vm.stats.clone_from(&old.info.stats);
                    }
                }
            }
            vm_record(vm, names, asked_ms)
        })
        .collect();
    Ok(ctx.store.sync_vms(&records, asked_ms)?)
}

/// A host's event as the center logs it (`host_start_ms`: when the host started, by the
/// center's clock; the host's `ms` counts from there).
fn copied(host: &str, e: &HostEvent, host_start_ms: u64) -> NewEvent {
    let target = e
        .data
        .get("vm")
        .and_then(|v| v.as_str())
        .unwrap_or(host)
        .to_string();
    let severity = if ["fail", "crash", "error"]
        .iter()
        .any(|w| e.event.contains(w))
    {
        Severity::Error
    } else if [
        "dead",
        "isolat",
        "lost",
        "not_responding",
        "refused",
        "unplaced",
    ]
    .iter()
    .any(|w| e.event.contains(w))
    {
        Severity::Warning
    } else {
        Severity::Info
    };
    NewEvent {
        time_ms: host_start_ms.saturating_add(e.ms),
        severity,
        kind: e.event.clone(),
        target: target.clone(),
        user: None,
        host: Some(host.to_string()),
        message: format!("{host}: {} {target}", e.event.replace('_', " ")),
        data: e.data.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::copied;
    use crate::model::Severity;
    use vinfra_host::api::HostEvent;

    fn event(name: &str, data: serde_json::Value) -> HostEvent {
        HostEvent {
            seq: 7,
            ms: 1500,
            event: name.into(),
            data,
        }
    }

    #[test]
    fn host_events_are_timed_by_the_center_and_named_after_their_vm() {
        let e = copied(
            "esx-1",
            &event("vm_started", serde_json::json!({"vm": "web"})),
            1_000_000,
        );
        assert_eq!(e.time_ms, 1_001_500);
        assert_eq!(e.target, "web");
        assert_eq!(e.host.as_deref(), Some("esx-1"));
        assert_eq!(e.user, None);
        assert_eq!(e.severity, Severity::Info);
        let e = copied(
            "esx-1",
            &event("migration_failed", serde_json::json!({})),
            0,
        );
        assert_eq!((e.severity, e.target.as_str()), (Severity::Error, "esx-1"));
        let e = copied("esx-2", &event("peer_dead", serde_json::json!({})), 0);
        assert_eq!(e.severity, Severity::Warning);
    }
}
