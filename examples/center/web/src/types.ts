// The console's view of the center's resources. The server's JSON is read through
// `normalize.ts`, so a renamed or missing field degrades one value, not the page.

export type PowerState =
  | "running"
  | "paused"
  | "shutting_down"
  | "shut_off"
  | "crashed"
  | "unknown";

export type HostState = "connected" | "not_responding" | "maintenance" | "unknown";

export interface Disk {
  label: string;
  sizeMib?: number;
}

export interface Nic {
  label: string;
  portgroup?: string;
  mac?: string;
}

export interface Snapshot {
  name: string;
  time?: string;
}

export interface Vm {
  name: string;
  power: PowerState;
  host?: string;
  stale: boolean;
  vcpus?: number;
  memoryMib?: number;
  cpuPercent?: number;
  memoryUsedMib?: number;
  disks: Disk[];
  nics: Nic[];
  /** Absent when the center does not report them. */
  snapshots?: Snapshot[];
  haPriority?: string;
  haIsolationResponse?: string;
  pool?: string;
}

export interface HaVerdict {
  host: string;
  verdict: string;
}

export interface Host {
  name: string;
  id?: string;
  cluster?: string;
  state: HostState;
  address?: string;
  version?: string;
  uptimeMs?: number;
  cpus?: number;
  memoryMib?: number;
  cpuPercent?: number;
  memoryUsedMib?: number;
  ksmSavedBytes?: number;
  ksmPagesSharing?: number;
  ha: HaVerdict[];
  vmsRunning?: number;
}

export interface Cluster {
  name: string;
  datacenter?: string;
  drsAutomation?: string;
  drsThreshold?: number;
  haEnabled?: boolean;
  haFailuresTolerated?: number;
  haAdmission?: string;
  haAdmissionControl?: boolean;
  /** HA admission policy: `slots` or `percentage`. */
  haPolicy?: string;
  haCpuFailoverPercent?: number;
  haMemoryFailoverPercent?: number;
  raw: Record<string, unknown>;
}

export interface Datacenter {
  name: string;
}

export type TaskState = "queued" | "running" | "success" | "error" | "unknown";

export interface Task {
  id: string;
  kind: string;
  target: string;
  user?: string;
  state: TaskState;
  progress?: number;
  message?: string;
  error?: string;
  started?: Date;
  ended?: Date;
}

export interface CenterEvent {
  id: string;
  time?: Date;
  severity: string;
  kind: string;
  target?: string;
  user?: string;
  message: string;
}

export interface StatPoint {
  time: number; // seconds since the epoch (uPlot's x unit)
  cpuPercent?: number;
  memoryMib?: number;
  diskReadBytes?: number;
  diskWrittenBytes?: number;
  netRxBytes?: number;
  netTxBytes?: number;
  /** Disk and network bytes in the period, both directions (the center's roll-ups). */
  diskBytes?: number;
  netBytes?: number;
}

export interface Me {
  user: string;
  role?: string;
}

export interface Inventory {
  datacenters: Datacenter[];
  clusters: Cluster[];
  hosts: Host[];
  vms: Vm[];
}

/** What the main panel shows, from the URL's hash. */
export type Selection =
  | { kind: "datacenter"; name: string }
  | { kind: "cluster"; name: string }
  | { kind: "host"; name: string }
  | { kind: "vm"; name: string }
  | { kind: "none" };
