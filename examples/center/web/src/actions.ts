// The operations the console starts: each answers `202 {"task": id}` and the task then
// shows in the Recent tasks panel.

import { enc, patch, post, taskId } from "./api";

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
