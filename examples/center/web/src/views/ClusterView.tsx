// A cluster: its resources in total, the HA card (admission control, failover capacity,
// the hosts' verdicts), the DRS card (settings, balance,
// recommendations to apply), its hosts and VMs; Summary and Events tabs.

import { useState } from "preact/hooks";
import { enc, get } from "../api";
import { Card, Empty, ErrorNote } from "../components/Card";
import { ClusterIcon, HostBadge, HostIcon, PowerBadge, VmIcon } from "../components/Icons";
import { Meter } from "../components/Meter";
import { Tabs } from "../components/Tabs";
import type { ViewContext } from "../context";
import { dash, mib, percent } from "../format";
import { usePoll } from "../live/poll";
import { cluster as readCluster } from "../normalize";
import { href } from "../route";
import { ClusterSettingsDialog } from "../dialogs/ClusterSettingsDialog";
import { DrsRecommendations } from "./DrsRecommendations";
import { EventsTab } from "./EventsTab";
import { HaCard } from "./HaCard";
import { HOST_STATE_LABEL } from "./HostView";
import { ObjectHeader } from "./ObjectHeader";
import { PoolsCard } from "./PoolsCard";
import { RulesCard } from "./RulesCard";
import { POWER_LABEL } from "./VmView";

export function ClusterView({ name, ctx }: { name: string; ctx: ViewContext }) {
  const detail = usePoll(async () => readCluster(await get(`/api/vcenter/cluster/${enc(name)}`)), 10_000, `cluster:${name}`);
  const cluster = detail.data ?? ctx.inventory.clusters.find((c) => c.name === name);
  const hosts = ctx.inventory.hosts.filter((h) => !h.cluster || h.cluster === name);
  const hostNames = new Set(hosts.map((h) => h.name));
  const vms = ctx.inventory.vms.filter((v) => !v.host || hostNames.has(v.host));
  const running = vms.filter((v) => v.power === "running").length;
  const cpus = hosts.reduce((s, h) => s + (h.cpus ?? 0), 0);
  const cpuUsed = hosts.reduce((s, h) => s + ((h.cpuPercent ?? 0) * (h.cpus ?? 0)) / 100, 0);
  const memory = hosts.reduce((s, h) => s + (h.memoryMib ?? 0), 0);
  const memoryUsed = hosts.reduce((s, h) => s + (h.memoryUsedMib ?? 0), 0);
  const sel = { kind: "cluster", name } as const;
  const tab = ["summary", "events"].includes(ctx.tab) ? ctx.tab : "summary";
  const [editing, setEditing] = useState(false);

  return (
    <div class="object-view" data-testid="cluster-view">
      <ObjectHeader
        kind="Cluster"
        locked={ctx.isAdmin ? undefined : "Only administrators change cluster settings"}
        title={name}
        icon={<span class="node-icon big"><ClusterIcon /></span>}
        status={
          <span class="muted">
            {hosts.length} hosts · {running} of {vms.length} VMs running
          </span>
        }
        actions={
          <button class="button" onClick={() => setEditing(true)} disabled={!cluster} data-action="cluster-settings">
            Edit settings
          </button>
        }
      />
      <Tabs
        active={tab}
        tabs={[
          { id: "summary", label: "Summary", href: href(sel) },
          { id: "events", label: "Events", href: href(sel, "events") },
        ]}
      />
      <div class="tab-body">
        {tab === "events" && <EventsTab events={ctx.events} />}
        {tab === "summary" && (
          <div class="summary-grid">
            <Card title="Resources">
              <Meter label="CPU" used={cpuUsed} total={cpus || undefined} usedText={cpus ? percent((cpuUsed / cpus) * 100) : dash} totalText={cpus ? `${cpus} CPUs` : undefined} />
              <Meter label="Memory" used={memoryUsed} total={memory || undefined} usedText={mib(memoryUsed)} totalText={memory ? mib(memory) : undefined} />
            </Card>
            {detail.error && !cluster && <ErrorNote message={detail.error} />}
            <HaCard cluster={name} ctx={ctx} />
            <DrsRecommendations cluster={name} automation={cluster?.drsAutomation} threshold={cluster?.drsThreshold} ctx={ctx} />
            <RulesCard cluster={name} vms={vms.map((v) => v.name)} hosts={hosts.map((h) => h.name)} ctx={ctx} />
            <PoolsCard cluster={name} vms={vms} ctx={ctx} />
            <Card title={`Hosts (${hosts.length})`}>
              {hosts.length === 0 ? (
                <Empty>No hosts.</Empty>
              ) : (
                <table class="grid compact">
                  <thead>
                    <tr>
                      <th>Host</th>
                      <th>State</th>
                      <th class="num">CPU</th>
                      <th class="num">Memory</th>
                      <th class="num">VMs</th>
                    </tr>
                  </thead>
                  <tbody>
                    {hosts.map((h) => (
                      <tr key={h.name}>
                        <td>
                          <a class="inline-vm" href={href({ kind: "host", name: h.name })}>
                            <span class="node-icon">
                              <HostIcon />
                              <HostBadge state={h.state} />
                            </span>
                            {h.name}
                          </a>
                        </td>
                        <td>{HOST_STATE_LABEL[h.state]}</td>
                        <td class="num">{percent(h.cpuPercent)}</td>
                        <td class="num">
                          {mib(h.memoryUsedMib)} / {mib(h.memoryMib)}
                        </td>
                        <td class="num">{ctx.inventory.vms.filter((v) => v.host === h.name).length}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </Card>
            <Card title={`Virtual machines (${vms.length})`}>
              {vms.length === 0 ? (
                <Empty>No VMs.</Empty>
              ) : (
                <table class="grid compact">
                  <thead>
                    <tr>
                      <th>VM</th>
                      <th>State</th>
                      <th>Host</th>
                      <th class="num">CPU</th>
                    </tr>
                  </thead>
                  <tbody>
                    {vms.map((v) => (
                      <tr key={v.name}>
                        <td>
                          <a class="inline-vm" href={href({ kind: "vm", name: v.name })}>
                            <span class="node-icon">
                              <VmIcon />
                              <PowerBadge state={v.power} />
                            </span>
                            {v.name}
                          </a>
                        </td>
                        <td>{POWER_LABEL[v.power]}</td>
                        <td>{v.host ?? dash}</td>
                        <td class="num">{percent(v.cpuPercent)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </Card>
          </div>
        )}
      </div>
      {editing && cluster && (
        <ClusterSettingsDialog
          cluster={cluster}
          hostCount={hosts.length}
          onClose={() => setEditing(false)}
          onSaved={() => {
            detail.refresh();
            ctx.refresh();
          }}
        />
      )}
    </div>
  );
}
