// A host's Summary tab: identity, capacity and load, page-sharing savings, how its HA
// agent sees every host, and the VMs it runs.

import { Card, Empty, Props } from "../components/Card";
import { PowerBadge, VmIcon } from "../components/Icons";
import { Meter } from "../components/Meter";
import { bytes, dash, duration, mib, percent, words } from "../format";
import { href } from "../route";
import type { Host, Vm } from "../types";
import { HOST_STATE_LABEL } from "./HostView";

const VERDICT_HELP: Record<string, string> = {
  alive: "heard on the network",
  partitioned: "silent on the network, datastore heartbeat moves",
  failed: "silent on both channels: its VMs restart elsewhere",
  unknown: "silent, datastore unreadable: nothing is done",
  isolated: "hears no peer and no isolation address",
  fenced: "its volume lease lapsed",
};

export function HostSummary({ host, vms }: { host: Host; vms: Vm[] }) {
  return (
    <div class="summary-grid">
      {host.state === "not_responding" && (
        <div class="error-note wide-note" role="status">
          {host.name} does not answer the center: what follows is its last report. HA restarts its VMs on the other hosts once they judge it failed.
        </div>
      )}
      <Card title="Host details">
        <Props
          rows={[
            ["State", <span class={`chip host-${host.state}`}>{HOST_STATE_LABEL[host.state]}</span>],
            ["API address", host.address ?? dash],
            ["Version", host.version ?? dash],
            ["Uptime", duration(host.uptimeMs)],
            ["Logical CPUs", host.cpus ?? dash],
            ["Memory", mib(host.memoryMib)],
          ]}
        />
      </Card>
      <Card title="Capacity and usage">
        <Meter label="CPU" used={host.cpuPercent} total={100} usedText={percent(host.cpuPercent)} totalText={host.cpus ? `${host.cpus} CPUs` : undefined} />
        <Meter label="Memory" used={host.memoryUsedMib} total={host.memoryMib} usedText={mib(host.memoryUsedMib)} totalText={mib(host.memoryMib)} />
        <div class="stat-row">
          <div class="stat">
            <div class="stat-value">{bytes(host.ksmSavedBytes)}</div>
            <div class="stat-label">saved by page sharing (KSM)</div>
          </div>
          <div class="stat">
            <div class="stat-value">{host.ksmPagesSharing ?? dash}</div>
            <div class="stat-label">pages sharing</div>
          </div>
        </div>
      </Card>
      <Card title="HA: how this host sees the cluster">
        {host.ha.length === 0 ? (
          <Empty>No HA verdicts reported.</Empty>
        ) : (
          <table class="grid compact">
            <thead>
              <tr>
                <th>Host</th>
                <th>Verdict</th>
                <th>Meaning</th>
              </tr>
            </thead>
            <tbody>
              {host.ha.map((p) => (
                <tr key={p.host} data-ha-host={p.host} data-verdict={p.verdict}>
                  <td>{p.host}</td>
                  <td>
                    <span class={`chip verdict-${p.verdict}`}>{words(p.verdict)}</span>
                  </td>
                  <td class="muted">{VERDICT_HELP[p.verdict] ?? ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
      <Card title={`Virtual machines (${vms.length})`}>
        {vms.length === 0 ? (
          <Empty>This host runs no VM.</Empty>
        ) : (
          <table class="grid compact">
            <thead>
              <tr>
                <th>Name</th>
                <th class="num">CPU</th>
                <th class="num">Memory</th>
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
                  <td class="num">{percent(v.cpuPercent)}</td>
                  <td class="num">{mib(v.memoryUsedMib)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
    </div>
  );
}
