// The operations the console starts: each answers `202 {"task": id}` and the task then
// shows in the Recent tasks panel.

import { del, enc, patch, post, taskId } from "./api";

export type PowerAction = "start" | "stop" | "reset" | "shutdown";

const started = async (answer: Promise<unknown>): Promise<string | undefined> => taskId(await answer);

/** `host`: where a start runs; none lets DRS place it. */
export const powerVm = (vm: string, action: PowerAction, host?: string) =>
  started(post(`/api/vcenter/vm/${enc(vm)}/power?action=${action}${host ? `&host=${enc(host)}` : ""}`));
export const relocateVm = (vm: string, host: string) => started(post(`/api/vcenter/vm/${enc(vm)}?action=relocate`, { host }));
export const snapshotVm = (vm: string, name?: string) => started(post(`/api/vcenter/vm/${enc(vm)}?action=snapshot`, name ? { name } : {}));
export const revertVm = (vm: string, snapshot?: string) => started(post(`/api/vcenter/vm/${enc(vm)}?action=revert`, snapshot ? { snapshot } : {}));
export const cloneVm = (vm: string, name: string, full: boolean) => started(post(`/api/vcenter/vm/${enc(vm)}?action=clone`, { name, full }));
export const backupVm = (vm: string, repository: string, incremental: boolean) =>
  started(post(`/api/vcenter/vm/${enc(vm)}?action=backup`, { repository, incremental }));
/** `PATCH /api/vcenter/cluster/{cluster}` (administrators; answers at once, no task). */
export const setClusterSettings = (
  cluster: string,
  settings: {
    drs: { automation: string; threshold: number };
    ha: { admission_control: boolean; failures_tolerated: number; policy?: string; cpu_failover_percent?: number; memory_failover_percent?: number };
  },
) => patch(`/api/vcenter/cluster/${enc(cluster)}`, settings);
/** `PATCH /api/vcenter/vm/{vm}` (operators): HA restart priority and isolation response, kept by the hosts. */
export const setVmHa = (vm: string, ha: { priority: string; isolation_response: string }) => patch(`/api/vcenter/vm/${enc(vm)}`, { ha });
export const maintenance = (host: string, enter: boolean) =>
  started(post(`/api/vcenter/host/${enc(host)}?action=${enter ? "enter-maintenance" : "exit-maintenance"}`));
/** Applies one DRS recommendation (operators): a `vm.relocate` task. */
export const applyDrs = (cluster: string, vm: string, to: string) =>
  started(post(`/api/vcenter/cluster/${enc(cluster)}/drs/recommendations?action=apply`, { vm, to }));
/** A DRS pass now (operators); answers the pass, `applied` the migrations it started. */
export const runDrs = (cluster: string) => post(`/api/vcenter/cluster/${enc(cluster)}/drs?action=run`);

// Resource pools and DRS rules (operators; answer at once, no task).

/** One resource of a pool as the server takes it (CPU MHz, memory MiB). */
export interface PoolAllocationBody {
  reservation: number;
  limit: number | null;
  shares: number;
  expandable_reservation: boolean;
}

export interface PoolBody {
  parent: string | null;
  cpu_allocation: PoolAllocationBody;
  memory_allocation: PoolAllocationBody;
}

export const createPool = (cluster: string, name: string, body: PoolBody) => post(`/api/vcenter/resource-pool`, { name, cluster, ...body });
export const updatePool = (pool: string, body: PoolBody) => patch(`/api/vcenter/resource-pool/${enc(pool)}`, body);
export const deletePool = (pool: string) => del(`/api/vcenter/resource-pool/${enc(pool)}`);
/** Moves VMs into the pool (`add_vms`) or out of it to the cluster's root (`remove_vms`). */
export const movePoolVms = (pool: string, action: "add_vms" | "remove_vms", vms: string[]) =>
  post(`/api/vcenter/resource-pool/${enc(pool)}?action=${action}`, { vms });

export interface RuleBody {
  kind: string;
  enabled: boolean;
  vms: string[];
  hosts?: string[];
  mode?: string;
}

export const createRule = (cluster: string, name: string, body: RuleBody) => post(`/api/vcenter/cluster/${enc(cluster)}/rules`, { name, ...body });
export const updateRule = (cluster: string, rule: string, body: RuleBody) => patch(`/api/vcenter/cluster/${enc(cluster)}/rules/${enc(rule)}`, body);
export const deleteRule = (cluster: string, rule: string) => del(`/api/vcenter/cluster/${enc(cluster)}/rules/${enc(rule)}`);
/** A new VM `name` from backup `backup` of `vm` (the latest when none is named). */
export const restoreVm = (vm: string, repository: string, name: string, backup?: string) =>
  started(post(`/api/vcenter/vm/${enc(vm)}?action=restore`, backup ? { repository, name, backup } : { repository, name }));
/** Disk `disk` of `vm` written back from backup `backup` (the VM must be off). */
export const restoreDisk = (vm: string, repository: string, disk: number, backup: string) =>
  started(post(`/api/vcenter/vm/${enc(vm)}?action=restore-disk`, { repository, disk, backup }));
/** A backup job's definition as `POST /api/vinfra/backup/job` takes it. */
export interface BackupJobInput {
  name: string;
  vms: string[];
  repository: string;
  schedule: string;
  keep_last: number;
  incremental: boolean;
  /** Disk indexes of each VM; empty: all. */
  disks: number[];
  enabled: boolean;
}
export const createBackupJob = (job: BackupJobInput) => post(`/api/vinfra/backup/job`, job);
export const changeBackupJob = (name: string, job: Omit<BackupJobInput, "name">) => patch(`/api/vinfra/backup/job/${enc(name)}`, job);
export const deleteBackupJob = (name: string) => del(`/api/vinfra/backup/job/${enc(name)}`);
/** Runs a job now (operators): answers `{job, tasks, refused}`. */
export const runBackupJob = (name: string) => post<{ tasks?: unknown[]; refused?: unknown[] }>(`/api/vinfra/backup/job/${enc(name)}?action=run`);
