// A VM: header with its power state and actions, and the Summary / Monitor / Console /
// Events tabs. Its record is read from `GET /api/vcenter/vm/{vm}` every few seconds (the
// inventory's copy is shown until the first answer).

import { useEffect, useState } from "preact/hooks";
import type { PowerAction } from "../actions";
import { enc, get } from "../api";
import { ErrorNote } from "../components/Card";
import { PowerBadge, VmIcon } from "../components/Icons";
import { Tabs } from "../components/Tabs";
import type { ViewContext } from "../context";
import { BackupDialog } from "../dialogs/BackupDialog";
import { CloneDialog } from "../dialogs/CloneDialog";
import { MigrateDialog } from "../dialogs/MigrateDialog";
import { PowerDialog } from "../dialogs/PowerDialog";
import { RevertDialog } from "../dialogs/RevertDialog";
import { SnapshotDialog } from "../dialogs/SnapshotDialog";
import { VmHaDialog } from "../dialogs/VmHaDialog";
import { usePoll } from "../live/poll";
import { vm as readVm } from "../normalize";
import { href } from "../route";
import type { Vm } from "../types";
import { ConsoleTab } from "./ConsoleTab";
import { TargetEvents } from "./EventsTab";
import { VmBackups } from "./VmBackups";
import { MonitorTab } from "./MonitorTab";
import { ObjectHeader } from "./ObjectHeader";
import { VmSummary } from "./VmSummary";

type Open = { kind: "power"; action: PowerAction } | { kind: "migrate" } | { kind: "snapshot" } | { kind: "revert" } | { kind: "clone" } | { kind: "backup" } | { kind: "ha" } | null;

export const POWER_LABEL: Record<Vm["power"], string> = {
  running: "Powered on",
  paused: "Paused",
  shutting_down: "Shutting down",
  shut_off: "Powered off",
  crashed: "Crashed",
  unknown: "Unknown",
};

export function VmView({ name, ctx }: { name: string; ctx: ViewContext }) {
  const fromTree = ctx.inventory.vms.find((v) => v.name === name);
  const ids = new Map(ctx.inventory.hosts.flatMap((h) => (h.id ? [[h.id, h.name] as [string, string]] : [])));
  const detail = usePoll(async () => readVm(await get(`/api/vcenter/vm/${enc(name)}`), ids), 3000, `vm:${name}`);
  const [open, setOpen] = useState<Open>(null);
  // A new event may be about this VM (migrated, powered off): read it again at once.
  useEffect(() => detail.refresh(), [ctx.events.generation]);
  const vm = detail.data ?? fromTree;

  if (!vm) {
    return (
      <div class="object-view">
        <ErrorNote message={detail.error ?? (detail.loading ? undefined : `VM ${name} is not in the inventory`)} />
        {detail.loading && <p class="muted pad">Loading {name}…</p>}
      </div>
    );
  }
  const on = vm.power === "running" || vm.power === "paused";
  const started = () => {
    ctx.refresh();
    detail.refresh();
  };
  const sel = { kind: "vm", name } as const;
  const tab = ["summary", "monitor", "console", "events"].includes(ctx.tab) ? ctx.tab : "summary";

  return (
    <div class="object-view" data-testid="vm-view" data-vm={vm.name} data-power={vm.power} data-host={vm.host ?? ""}>
      <ObjectHeader
        kind="Virtual machine"
        locked={ctx.canOperate ? undefined : "Your role (read-only) cannot change VMs"}
        title={vm.name}
        icon={
          <span class="node-icon big">
            <VmIcon />
            <PowerBadge state={vm.power} />
          </span>
        }
        status={
          <>
            <span class={`chip power-${vm.power}`}>{POWER_LABEL[vm.power]}</span>
            {vm.host && (
              <span class="muted">
                on <a href={href({ kind: "host", name: vm.host })}>{vm.host}</a>
              </span>
            )}
            {vm.stale && <span class="chip warn">stale: its host is not responding</span>}
          </>
        }
        actions={
          <>
            {!on && (
              <button class="button primary" onClick={() => setOpen({ kind: "power", action: "start" })} data-action="start">
                ▶ Power on
              </button>
            )}
            {on && (
              <button class="button" onClick={() => setOpen({ kind: "power", action: "shutdown" })} data-action="shutdown">
                Shut down
              </button>
            )}
            {on && (
              <button class="button" onClick={() => setOpen({ kind: "power", action: "stop" })} data-action="stop">
                ■ Power off
              </button>
            )}
            {on && (
              <button class="button" onClick={() => setOpen({ kind: "power", action: "reset" })} data-action="reset">
                ↻ Reset
              </button>
            )}
            <span class="toolbar-sep" />
            <button class="button" onClick={() => setOpen({ kind: "migrate" })} disabled={vm.power !== "running"} title={vm.power !== "running" ? "Only a running VM migrates live" : undefined} data-action="migrate">
              ⇄ Migrate
            </button>
            <button class="button" onClick={() => setOpen({ kind: "snapshot" })} data-action="snapshot">
              Snapshot
            </button>
            <button class="button" onClick={() => setOpen({ kind: "clone" })} data-action="clone">
              Clone
            </button>
            <button class="button" onClick={() => setOpen({ kind: "backup" })} data-action="backup">
              Back up
            </button>
          </>
        }
      />
      <Tabs
        active={tab}
        tabs={[
          { id: "summary", label: "Summary", href: href(sel) },
          { id: "monitor", label: "Monitor", href: href(sel, "monitor") },
          { id: "console", label: "Console", href: href(sel, "console") },
          { id: "events", label: "Events", href: href(sel, "events") },
        ]}
      />
      {detail.error && detail.data === undefined && <ErrorNote message={`Showing the inventory's copy: ${detail.error}`} />}
      <div class="tab-body">
        {tab === "summary" && (
          <VmSummary vm={vm} onRevert={ctx.canOperate ? () => setOpen({ kind: "revert" }) : undefined} onEditHa={ctx.canOperate ? () => setOpen({ kind: "ha" }) : undefined}>
            <VmBackups vm={vm.name} ctx={ctx} onStarted={started} poweredOff={vm.power === "shut_off"} hasSnapshots={(vm.snapshots ?? []).length > 0} />
          </VmSummary>
        )}
        {tab === "monitor" && <MonitorTab kind="vm" name={vm.name} />}
        {tab === "console" && <ConsoleTab vm={vm} />}
        {tab === "events" && <TargetEvents target={vm.name} />}
      </div>
      {open?.kind === "power" && <PowerDialog vm={vm.name} action={open.action} hosts={ctx.inventory.hosts} onClose={() => setOpen(null)} onStarted={started} />}
      {open?.kind === "migrate" && <MigrateDialog vm={vm} hosts={ctx.inventory.hosts} onClose={() => setOpen(null)} onStarted={started} />}
      {open?.kind === "snapshot" && <SnapshotDialog vm={vm.name} onClose={() => setOpen(null)} onStarted={started} />}
      {open?.kind === "revert" && <RevertDialog vm={vm.name} onClose={() => setOpen(null)} onStarted={started} />}
      {open?.kind === "clone" && <CloneDialog vm={vm.name} running={on} onClose={() => setOpen(null)} onStarted={started} />}
      {open?.kind === "ha" && <VmHaDialog vm={vm} onClose={() => setOpen(null)} onSaved={started} />}
      {open?.kind === "backup" && <BackupDialog vm={vm.name} onClose={() => setOpen(null)} onStarted={started} />}
    </div>
  );
}
