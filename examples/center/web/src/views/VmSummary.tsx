// A VM's Summary tab: state and placement, CPU and memory use, disks, NICs, snapshots.

import type { ComponentChildren } from "preact";
import { Card, Empty, Props } from "../components/Card";
import { Meter } from "../components/Meter";
import { dash, mib, percent, words } from "../format";
import { href } from "../route";
import type { Vm } from "../types";
import { POWER_LABEL } from "./VmView";

/** `onRevert` and `onEditHa` are absent when the user's role may not act; `children`: more cards. */
export function VmSummary({ vm, onRevert, onEditHa, children }: { vm: Vm; onRevert?: () => void; onEditHa?: () => void; children?: ComponentChildren }) {
  // The hosts measure CPU in percent of one core; a VM can use up to 100 % per vCPU.
  const cpuMax = (vm.vcpus ?? 1) * 100;
  return (
    <div class="summary-grid">
      <Card title="Virtual machine details">
        <Props
          rows={[
            ["Power state", <span class={`chip power-${vm.power}`}>{POWER_LABEL[vm.power]}</span>],
            ["Host", vm.host ? <a href={href({ kind: "host", name: vm.host })} data-testid="vm-host">{vm.host}</a> : <span data-testid="vm-host">{dash}</span>],
            ["vCPUs", vm.vcpus ?? dash],
            ["Memory", mib(vm.memoryMib)],
            ["Resource pool", vm.pool ?? dash],
          ]}
        />
      </Card>
      <Card
        title="HA"
        actions={
          <button class="button small" onClick={onEditHa} disabled={!onEditHa} title={onEditHa ? undefined : "Your role (read-only) cannot change VMs"} data-action="edit-ha">
            Edit
          </button>
        }
      >
        <Props
          rows={[
            ["Restart priority", <span data-testid="vm-ha-priority">{vm.haPriority ? words(vm.haPriority) : dash}</span>],
            ["Isolation response", vm.haIsolationResponse ? words(vm.haIsolationResponse) : dash],
          ]}
        />
      </Card>
      <Card title="Usage">
        {vm.power === "running" || vm.power === "paused" ? (
          <>
            <Meter label="CPU" used={vm.cpuPercent} total={cpuMax} usedText={percent(vm.cpuPercent)} totalText={`${cpuMax} % (${vm.vcpus ?? 1} vCPU)`} />
            <Meter label="Memory" used={vm.memoryUsedMib} total={vm.memoryMib} usedText={mib(vm.memoryUsedMib)} totalText={mib(vm.memoryMib)} />
          </>
        ) : (
          <Empty>The VM is not running: no usage to show.</Empty>
        )}
      </Card>
      <Card title="Disks">
        {vm.disks.length === 0 ? (
          <Empty>No disks.</Empty>
        ) : (
          <table class="grid compact">
            <thead>
              <tr>
                <th>Disk</th>
                <th class="num">Size</th>
              </tr>
            </thead>
            <tbody>
              {vm.disks.map((d) => (
                <tr key={d.label}>
                  <td>{d.label}</td>
                  <td class="num">{mib(d.sizeMib)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
      <Card title="Network adapters">
        {vm.nics.length === 0 ? (
          <Empty>No network adapters.</Empty>
        ) : (
          <table class="grid compact">
            <thead>
              <tr>
                <th>Adapter</th>
                <th>Port group</th>
                <th>MAC</th>
              </tr>
            </thead>
            <tbody>
              {vm.nics.map((n) => (
                <tr key={n.label}>
                  <td>{n.label}</td>
                  <td>{n.portgroup ?? dash}</td>
                  <td class="mono">{n.mac ?? dash}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
      <Card
        title="Snapshots"
        actions={
          <button class="button small" onClick={onRevert} disabled={!onRevert || vm.power !== "shut_off"} title={vm.power !== "shut_off" ? "Shut the VM off to revert it" : undefined} data-action="revert">
            Revert to latest
          </button>
        }
      >
        {vm.snapshots === undefined ? (
          <Empty>Take a snapshot from the toolbar; this center does not list them yet.</Empty>
        ) : vm.snapshots.length === 0 ? (
          <Empty>No snapshots.</Empty>
        ) : (
          <ul class="plain-list">
            {vm.snapshots.map((s) => (
              <li key={s.name}>
                <strong>{s.name}</strong> {s.time && <span class="muted">{s.time}</span>}
              </li>
            ))}
          </ul>
        )}
      </Card>
      {children}
    </div>
  );
}
