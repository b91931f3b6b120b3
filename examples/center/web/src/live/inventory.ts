// The whole inventory (datacenters, clusters, hosts, VMs) read in one go: the tree, the
// summaries and the dialogs' choices all come from it. A list route that fails leaves its
// part empty and says why in `problems`, so one missing route does not blank the console.

import { get } from "../api";
import * as n from "../normalize";
import type { Inventory } from "../types";

export interface LoadedInventory extends Inventory {
  problems: string[];
}

async function part(path: string, problems: string[]): Promise<unknown[]> {
  try {
    return n.list(await get(path));
  } catch (e) {
    problems.push(`${path}: ${e instanceof Error ? e.message : String(e)}`);
    return [];
  }
}

export async function loadInventory(): Promise<LoadedInventory> {
  const problems: string[] = [];
  const [dcs, clusters, hosts, vms] = await Promise.all([
    part("/api/vcenter/datacenter", problems),
    part("/api/vcenter/cluster", problems),
    part("/api/vcenter/host", problems),
    part("/api/vcenter/vm", problems),
  ]);
  const ids = n.hostIds(hosts);
  const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name, undefined, { numeric: true });
  return {
    datacenters: dcs.map(n.datacenter).sort(byName),
    clusters: clusters.map(n.cluster).sort(byName),
    hosts: hosts.map((h) => n.host(h, ids)).sort(byName),
    vms: vms.map((v) => n.vm(v, ids)).sort(byName),
    problems,
  };
}
