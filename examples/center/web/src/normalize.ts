// Reads the server's JSON into the console's types. The server's records follow the
// hosts' API (`spec`, `state`, `stats`, `capacity`, `load`, `ksm`, `ha`) and vSphere
// Automation's summaries (`power_state`, `cpu_count`, `memory_size_MiB`); both spellings
// are read so that a field the server names differently shows as "—", not as a crash.

import type {
  CenterEvent, Cluster, Datacenter, Disk, HaVerdict, Host, HostState, Nic, PowerState,
  Snapshot, StatPoint, Task, TaskState, Vm,
} from "./types";
import { dateTime } from "./format";

type Obj = Record<string, unknown>;

const obj = (v: unknown): Obj => (v && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (...vs: unknown[]): string | undefined => {
  for (const v of vs) {
    if (typeof v === "string" && v !== "") return v;
    if (typeof v === "number") return String(v);
  }
  return undefined;
};
const num = (...vs: unknown[]): number | undefined => {
  for (const v of vs) if (typeof v === "number" && Number.isFinite(v)) return v;
  return undefined;
};
const bool = (...vs: unknown[]): boolean | undefined => {
  for (const v of vs) if (typeof v === "boolean") return v;
  return undefined;
};

/** A list answer: a bare array, or one wrapped in a field (`{"value": [...]}`, `{"vms": [...]}`). */
export function list(v: unknown, ...keys: string[]): unknown[] {
  if (Array.isArray(v)) return v;
  const o = obj(v);
  for (const k of [...keys, "value", "items", "data"]) if (Array.isArray(o[k])) return o[k] as unknown[];
  return [];
}

/** Times before this are not wall-clock times (a host's ms since its start): unknown. */
const PLAUSIBLE_MS = Date.UTC(2001, 0, 1);

/** A wall-clock time: ms since the epoch (the center's `*_ms`) or an ISO string. */
function date(v: unknown): Date | undefined {
  let d: Date | undefined;
  if (typeof v === "number") d = new Date(v);
  else if (typeof v === "string" && v) d = new Date(v);
  if (!d || Number.isNaN(d.getTime()) || d.getTime() < PLAUSIBLE_MS) return undefined;
  return d;
}

export function powerState(v: unknown): PowerState {
  const s = String(v ?? "").toLowerCase().replace(/[\s-]/g, "_");
  switch (s) {
    case "running":
    case "powered_on":
    case "poweredon":
      return "running";
    case "paused":
    case "suspended":
      return "paused";
    case "shutting_down":
      return "shutting_down";
    case "shut_off":
    case "powered_off":
    case "poweredoff":
    case "stopped":
      return "shut_off";
    case "crashed":
      return "crashed";
    default:
      return "unknown";
  }
}

function hostState(v: unknown, maintenance: unknown): HostState {
  if (maintenance === true) return "maintenance";
  const s = String(v ?? "").toLowerCase();
  if (s === "connected" || s === "not_responding" || s === "maintenance") return s;
  if (s === "disconnected") return "not_responding";
  return "unknown";
}

/** A snapshot as the hosts list it (`name`, `taken_ms`). */
function snapshot(s: Obj): Snapshot {
  const taken = num(s.taken_ms);
  return { name: str(s.name) ?? "?", time: str(s.time, s.created) ?? (taken !== undefined ? dateTime(new Date(taken)) : undefined) };
}

export function vm(v: unknown, hostNames: Map<string, string> = new Map()): Vm {
  const o = obj(v);
  // The center's record wraps what the hosts report (`info`: spec, state, stats).
  const info = obj(o.info);
  const spec = obj(o.spec ?? info.spec ?? o.definition);
  const stats = obj(o.stats ?? info.stats ?? o.last_stats);
  const rawHost = o.host ?? o.host_name ?? info.host;
  const host = typeof rawHost === "number" ? (hostNames.get(String(rawHost)) ?? `host ${rawHost}`) : str(rawHost);
  const disks: Disk[] = arr(o.disks ?? spec.disks).map((d, i) => {
    const dd = obj(d);
    return { label: str(dd.label, dd.name, dd.path) ?? `disk ${i}`, sizeMib: num(dd.size_mib, dd.capacity_mib) };
  });
  const nics: Nic[] = arr(o.nics ?? spec.nics).map((n, i) => {
    const nn = obj(n);
    return { label: str(nn.label, nn.name) ?? `nic ${i}`, portgroup: str(nn.portgroup, nn.network), mac: str(nn.mac) };
  });
  const rawSnapshots = o.snapshots ?? info.snapshots;
  const snapshots: Snapshot[] | undefined = rawSnapshots === undefined ? undefined : arr(rawSnapshots).map((s) =>
    typeof s === "string" ? { name: s } : snapshot(obj(s)),
  );
  const rss = num(stats.rss_bytes);
  return {
    name: str(o.name, spec.name, o.vm) ?? "?",
    power: powerState(o.power_state ?? o.state ?? info.state),
    host,
    stale: o.stale === true,
    vcpus: num(o.cpu_count, o.vcpus, spec.vcpus),
    memoryMib: num(o.memory_size_MiB, o.memory_mib, spec.memory_mib),
    cpuPercent: num(stats.cpu_percent, o.cpu_percent),
    memoryUsedMib: rss !== undefined ? rss / (1024 * 1024) : num(stats.memory_mib, o.memory_used_mib),
    disks,
    nics,
    snapshots,
    haPriority: str(obj(spec.ha).priority),
    haIsolationResponse: str(obj(spec.ha).isolation_response),
    pool: str(o.resource_pool, o.pool),
  };
}

export function host(v: unknown, idNames: Map<string, string> = new Map()): Host {
  const o = obj(v);
  const report = obj(o.report ?? o.info ?? o.last_report);
  const pick = (k: string) => o[k] ?? report[k];
  const capacity = obj(pick("capacity"));
  const load = obj(pick("load"));
  const ksm = obj(pick("ksm"));
  const vms = obj(pick("vms"));
  const ha: HaVerdict[] = arr(pick("ha") ?? o.ha_verdicts).map((p) => {
    const pp = obj(p);
    const id = str(pp.host, pp.name, pp.id) ?? "?";
    return { host: idNames.get(id) ?? id, verdict: str(pp.verdict) ?? "unknown" };
  });
  return {
    name: str(o.name, o.host, report.name) ?? "?",
    id: str(o.id, report.id),
    cluster: str(o.cluster),
    state: hostState(o.state ?? o.connection_state, pick("maintenance")),
    address: str(o.address, o.api),
    version: str(pick("version")),
    uptimeMs: num(pick("uptime_ms")),
    cpus: num(capacity.cpus),
    memoryMib: num(capacity.memory_mib),
    cpuPercent: num(load.cpu_percent),
    memoryUsedMib: num(load.memory_used_mib),
    ksmSavedBytes: num(ksm.saved_bytes),
    ksmPagesSharing: num(ksm.pages_sharing),
    ha,
    vmsRunning: num(vms.running_here),
  };
}

/** Host id → name, for records that name a host by its number (HA verdicts, the hosts' VM records). */
export function hostIds(hosts: unknown[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const h of hosts) {
    const o = obj(h);
    const report = obj(o.report ?? o.info ?? o.last_report);
    const id = str(o.id, report.id);
    const name = str(o.name, report.name);
    if (id && name) m.set(id, name);
  }
  return m;
}

export function cluster(v: unknown): Cluster {
  const o = obj(v);
  const settings = obj(o.settings);
  const drs = obj(o.drs ?? settings.drs);
  const ha = obj(o.ha ?? settings.ha);
  const rawAdmission = ha.admission ?? ha.admission_control;
  const admission = typeof rawAdmission === "boolean" ? (rawAdmission ? "turned on" : "turned off") : rawAdmission;
  return {
    name: str(o.name, o.cluster) ?? "?",
    datacenter: str(o.datacenter),
    drsAutomation: str(drs.automation, drs.automation_level, drs.level),
    drsThreshold: num(drs.threshold, drs.migration_threshold),
    haEnabled: bool(ha.enabled),
    haFailuresTolerated: num(ha.failures_tolerated, ha.host_failures, obj(admission).failures_tolerated),
    haAdmission: str(admission, obj(admission).policy),
    haAdmissionControl: bool(rawAdmission),
    haPolicy: str(ha.policy),
    haCpuFailoverPercent: num(ha.cpu_failover_percent),
    haMemoryFailoverPercent: num(ha.memory_failover_percent),
    raw: o,
  };
}

export function datacenter(v: unknown): Datacenter {
  const o = obj(v);
  return { name: str(o.name, o.datacenter, v) ?? "?" };
}

function taskState(v: unknown): TaskState {
  const s = String(v ?? "").toLowerCase();
  if (s === "queued" || s === "pending") return "queued";
  if (s === "running" || s === "in_progress") return "running";
  if (s === "success" || s === "succeeded" || s === "done") return "success";
  if (s === "error" || s === "failed" || s === "failure") return "error";
  return "unknown";
}

function errorText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  const o = obj(v);
  return str(o.message, o.kind);
}

export function task(v: unknown): Task {
  const o = obj(v);
  const progress = num(o.progress);
  return {
    id: str(o.id, o.task) ?? "?",
    kind: str(o.kind, o.op, o.operation) ?? "task",
    target: str(o.target, o.vm, o.host, o.entity) ?? "",
    user: str(o.user),
    state: taskState(o.state ?? o.status),
    progress: progress !== undefined && progress > 1 ? progress / 100 : progress,
    message: str(o.message, o.description),
    error: errorText(o.error),
    started: date(o.started_ms ?? o.started ?? o.start_time ?? o.created),
    ended: date(o.ended ?? o.end_time ?? o.ended_ms),
  };
}

export function event(v: unknown): CenterEvent {
  const o = obj(v);
  const data = obj(o.data);
  const kind = str(o.kind, o.event, o.type) ?? "event";
  return {
    id: str(o.id, o.seq) ?? `${kind}-${str(o.time, o.ms) ?? ""}`,
    time: date(o.time_ms ?? o.time ?? o.ms ?? o.created),
    severity: str(o.severity, o.level) ?? "info",
    kind,
    target: str(o.target, o.vm, data.vm, o.host, data.host),
    user: str(o.user),
    message: str(o.message, o.description) ?? describe(kind, data),
  };
}

/** A readable line for an event that carries only its kind and data (as the hosts' events do). */
function describe(kind: string, data: Obj): string {
  const parts = Object.entries(data)
    .filter(([, v]) => typeof v !== "object")
    .map(([k, v]) => `${k}=${String(v)}`);
  return parts.length ? `${kind.replace(/_/g, " ")} (${parts.join(", ")})` : kind.replace(/_/g, " ");
}

/** `GET /api/vinfra/stats/...`: an array of samples, or columns (`{"time": [...], "cpu_percent": [...]}`). */
export function stats(v: unknown): StatPoint[] {
  const o = obj(v);
  const columns = Array.isArray(o.time) ? o : Array.isArray(obj(o.columns).time) ? obj(o.columns) : null;
  if (columns) {
    const times = arr(columns.time);
    const at = (k: string, i: number) => num(arr(columns[k])[i]);
    return times.map((t, i) => ({
      time: (date(t)?.getTime() ?? 0) / 1000,
      cpuPercent: at("cpu_percent", i),
      memoryMib: at("memory_mib", i),
      diskReadBytes: at("disk_read_bytes", i),
      diskWrittenBytes: at("disk_written_bytes", i),
      netRxBytes: at("net_rx_bytes", i),
      netTxBytes: at("net_tx_bytes", i),
    }));
  }
  return list(v, "samples", "stats")
    .map((s) => {
      const p = obj(s);
      const rss = num(p.rss_bytes);
      return {
        time: (date(p.time_ms ?? p.time ?? p.ms ?? p.t)?.getTime() ?? 0) / 1000,
        cpuPercent: num(p.cpu_percent, p.cpu),
        memoryMib: num(p.memory_mib, p.memory_used_mib, p.mem_mib) ?? (rss !== undefined ? rss / 1048576 : undefined),
        diskReadBytes: num(p.disk_read_bytes),
        diskWrittenBytes: num(p.disk_written_bytes),
        netRxBytes: num(p.net_rx_bytes),
        netTxBytes: num(p.net_tx_bytes),
        diskBytes: num(p.disk_bytes),
        netBytes: num(p.net_bytes),
      };
    })
    .filter((p) => p.time > 0)
    .sort((a, b) => a.time - b.time);
}
