// Backup jobs and backups as the server answers them (`GET /api/vinfra/backup/job`,
// `GET /api/vinfra/backup/backups`), read defensively into the console's shapes.

export interface BackupJob {
  name: string;
  vms: string[];
  repository: string;
  schedule: string;
  keepLast: number;
  incremental: boolean;
  /** Disk indexes; empty: all. */
  disks: number[];
  enabled: boolean;
  running: boolean;
  lastRun?: Date;
  nextRun?: Date;
  lastState?: string;
  lastMessage?: string;
}

export interface Backup {
  id: string;
  vm: string;
  time?: Date;
  host?: string;
  bytes?: number;
  bytesNew?: number;
  incremental: boolean;
  /** Its disks' names, in the order `disk=N` counts them. */
  disks: string[];
}

const str = (v: unknown) => (typeof v === "string" ? v : undefined);
const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const obj = (v: unknown) => (v && typeof v === "object" ? v : {}) as Record<string, unknown>;
const ms = (v: unknown) => (num(v) === undefined ? undefined : new Date(num(v) as number));

export function readJobs(v: unknown): BackupJob[] {
  return (Array.isArray(v) ? v : []).flatMap((x) => {
    const o = obj(x);
    const name = str(o.name);
    if (!name) return [];
    const last = obj(o.last_result);
    return [
      {
        name,
        vms: (Array.isArray(o.vms) ? o.vms : []).map(String),
        repository: str(o.repository) ?? "",
        schedule: str(o.schedule) ?? "",
        keepLast: num(o.keep_last) ?? 0,
        incremental: o.incremental === true,
        disks: (Array.isArray(o.disks) ? o.disks : []).filter((d): d is number => typeof d === "number"),
        enabled: o.enabled !== false,
        running: o.running === true,
        lastRun: ms(o.last_run_ms),
        nextRun: ms(o.next_run_ms),
        lastState: str(last.state),
        lastMessage: str(last.message),
      },
    ];
  });
}

export function readBackups(v: unknown): Backup[] {
  return (Array.isArray(v) ? v : []).flatMap((x) => {
    const o = obj(x);
    const id = str(o.id);
    if (!id) return [];
    const t = num(o.time_unix_s);
    return [
      {
        id,
        vm: str(o.vm) ?? "",
        time: t === undefined ? undefined : new Date(t * 1000),
        host: str(o.host),
        bytes: num(o.bytes),
        bytesNew: num(o.bytes_new),
        incremental: typeof o.parent === "string",
        disks: (Array.isArray(o.disks) ? o.disks : []).map(String),
      },
    ];
  });
}
