// The left inventory tree: datacenter → cluster → hosts → the VMs each runs (VMs that run
// nowhere sit under their cluster), with power-state and host-state badges and a filter.

import { useState } from "preact/hooks";
import { href } from "../route";
import type { Cluster, Host, Inventory, Selection, Vm } from "../types";
import { ChevronIcon, ClusterIcon, DatacenterIcon, HostBadge, HostIcon, PowerBadge, VmIcon } from "./Icons";

interface Props {
  inventory: Inventory;
  selection: Selection;
  tab: string;
}

function same(a: Selection, kind: string, name: string): boolean {
  return a.kind === kind && "name" in a && a.name === name;
}

export function InventoryTree({ inventory, selection, tab }: Props) {
  const [filter, setFilter] = useState("");
  const [closed, setClosed] = useState<Set<string>>(new Set());
  const f = filter.trim().toLowerCase();
  const match = (name: string) => f === "" || name.toLowerCase().includes(f);
  const toggle = (key: string) =>
    setClosed((old) => {
      const next = new Set(old);
      if (next.has(key)) next.delete(key);
      else next.add(key);
      return next;
    });
  // Keep the tab when moving between objects of the same kind (Monitor → Monitor).
  const link = (kind: Selection["kind"], name: string) =>
    href({ kind, name } as Selection, selection.kind === kind ? tab : undefined);

  const vmNode = (vm: Vm, depth: number) =>
    match(vm.name) && (
      <li key={`vm:${vm.name}`}>
        <a
          class={`node depth-${depth} ${same(selection, "vm", vm.name) ? "selected" : ""} ${vm.stale ? "stale" : ""}`}
          href={link("vm", vm.name)}
          data-kind="vm"
          data-name={vm.name}
          data-power={vm.power}
          data-host={vm.host ?? ""}
        >
          <span class="twisty" />
          <span class="node-icon">
            <VmIcon />
            <PowerBadge state={vm.power} />
          </span>
          <span class="node-label">{vm.name}</span>
        </a>
      </li>
    );

  const hostNode = (host: Host, depth: number) => {
    const vms = inventory.vms.filter((v) => v.host === host.name);
    const key = `host:${host.name}`;
    const open = !closed.has(key);
    if (!match(host.name) && !vms.some((v) => match(v.name))) return null;
    return (
      <li key={key}>
        <a
          class={`node depth-${depth} ${same(selection, "host", host.name) ? "selected" : ""} host-${host.state}`}
          href={link("host", host.name)}
          data-kind="host"
          data-name={host.name}
          data-state={host.state}
        >
          <span class="twisty" onClick={(e) => (e.preventDefault(), toggle(key))}>
            {vms.length > 0 && <ChevronIcon open={open} />}
          </span>
          <span class="node-icon">
            <HostIcon />
            <HostBadge state={host.state} />
          </span>
          <span class="node-label">{host.name}</span>
          <span class="node-count">{vms.length || ""}</span>
        </a>
        {open && vms.length > 0 && <ul>{vms.map((v) => vmNode(v, depth + 1))}</ul>}
      </li>
    );
  };

  const clusterNode = (cluster: Cluster, hosts: Host[], vms: Vm[], depth: number) => {
    const key = `cluster:${cluster.name}`;
    const open = !closed.has(key);
    return (
      <li key={key}>
        <a class={`node depth-${depth} ${same(selection, "cluster", cluster.name) ? "selected" : ""}`} href={link("cluster", cluster.name)} data-kind="cluster" data-name={cluster.name}>
          <span class="twisty" onClick={(e) => (e.preventDefault(), toggle(key))}>
            <ChevronIcon open={open} />
          </span>
          <span class="node-icon">
            <ClusterIcon />
          </span>
          <span class="node-label">{cluster.name}</span>
        </a>
        {open && (
          <ul>
            {hosts.map((h) => hostNode(h, depth + 1))}
            {vms.map((v) => vmNode(v, depth + 1))}
          </ul>
        )}
      </li>
    );
  };

  const hostNames = new Set(inventory.hosts.map((h) => h.name));
  const homeless = inventory.vms.filter((v) => !v.host || !hostNames.has(v.host));
  const clusters = inventory.clusters.length > 0 ? inventory.clusters : [{ name: "cluster", raw: {} } as Cluster];
  const hostsOf = (c: Cluster) => inventory.hosts.filter((h) => h.cluster === c.name || (!h.cluster && c === clusters[0]));
  const dcs = inventory.datacenters.length > 0 ? inventory.datacenters : [{ name: clusters[0]?.datacenter ?? "datacenter" }];
  const clustersOf = (dc: string) => clusters.filter((c) => c.datacenter === dc || (!c.datacenter && dc === dcs[0].name) || dcs.length === 1);

  return (
    <div class="tree-pane">
      <div class="tree-filter">
        <input type="search" placeholder="Filter inventory" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} aria-label="Filter inventory" />
      </div>
      <ul class="tree" role="tree" data-testid="inventory-tree">
        {dcs.map((dc) => {
          const key = `dc:${dc.name}`;
          const open = !closed.has(key);
          return (
            <li key={key}>
              <a class={`node depth-0 ${same(selection, "datacenter", dc.name) ? "selected" : ""}`} href={link("datacenter", dc.name)} data-kind="datacenter" data-name={dc.name}>
                <span class="twisty" onClick={(e) => (e.preventDefault(), toggle(key))}>
                  <ChevronIcon open={open} />
                </span>
                <span class="node-icon">
                  <DatacenterIcon />
                </span>
                <span class="node-label">{dc.name}</span>
              </a>
              {open && <ul>{clustersOf(dc.name).map((c, i) => clusterNode(c, hostsOf(c), i === 0 ? homeless : [], 1))}</ul>}
            </li>
          );
        })}
      </ul>
    </div>
  );
}
