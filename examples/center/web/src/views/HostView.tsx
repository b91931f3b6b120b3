// A host: its state and maintenance action, and the Summary / Monitor / Events tabs.

import { useEffect, useState } from "preact/hooks";
import { enc, get } from "../api";
import { ErrorNote } from "../components/Card";
import { HostBadge, HostIcon } from "../components/Icons";
import { Tabs } from "../components/Tabs";
import type { ViewContext } from "../context";
import { MaintenanceDialog } from "../dialogs/MaintenanceDialog";
import { usePoll } from "../live/poll";
import { host as readHost } from "../normalize";
import { href } from "../route";
import type { Host } from "../types";
import { EventsTab } from "./EventsTab";
import { HostSummary } from "./HostSummary";
import { MonitorTab } from "./MonitorTab";
import { ObjectHeader } from "./ObjectHeader";

export const HOST_STATE_LABEL: Record<Host["state"], string> = {
  connected: "Connected",
  maintenance: "Maintenance mode",
  not_responding: "Not responding",
  unknown: "Unknown",
};

export function HostView({ name, ctx }: { name: string; ctx: ViewContext }) {
  const fromTree = ctx.inventory.hosts.find((h) => h.name === name);
  const ids = new Map(ctx.inventory.hosts.flatMap((h) => (h.id ? [[h.id, h.name] as [string, string]] : [])));
  const detail = usePoll(async () => readHost(await get(`/api/vcenter/host/${enc(name)}`), ids), 3000, `host:${name}`);
  useEffect(() => detail.refresh(), [ctx.events.generation]);
  const [dialog, setDialog] = useState<"enter" | "exit" | null>(null);
  const host = detail.data ?? fromTree;
  if (!host) {
    return (
      <div class="object-view">
        <ErrorNote message={detail.error ?? (detail.loading ? undefined : `host ${name} is not in the inventory`)} />
      </div>
    );
  }
  const vms = ctx.inventory.vms.filter((v) => v.host === host.name);
  const sel = { kind: "host", name } as const;
  const tab = ["summary", "monitor", "events"].includes(ctx.tab) ? ctx.tab : "summary";
  const inMaintenance = host.state === "maintenance";

  return (
    <div class="object-view" data-testid="host-view" data-host={host.name} data-state={host.state}>
      <ObjectHeader
        kind="Host"
        locked={ctx.canOperate ? undefined : "Your role (read-only) cannot change hosts"}
        title={host.name}
        icon={
          <span class="node-icon big">
            <HostIcon />
            <HostBadge state={host.state} />
          </span>
        }
        status={
          <>
            <span class={`chip host-${host.state}`}>{HOST_STATE_LABEL[host.state]}</span>
            <span class="muted">
              {vms.length} VM{vms.length === 1 ? "" : "s"} running
            </span>
          </>
        }
        actions={
          <button class="button" onClick={() => setDialog(inMaintenance ? "exit" : "enter")} disabled={host.state === "not_responding"} data-action="maintenance">
            {inMaintenance ? "Exit maintenance mode" : "Enter maintenance mode"}
          </button>
        }
      />
      <Tabs
        active={tab}
        tabs={[
          { id: "summary", label: "Summary", href: href(sel) },
          { id: "monitor", label: "Monitor", href: href(sel, "monitor") },
          { id: "events", label: "Events", href: href(sel, "events") },
        ]}
      />
      {detail.error && detail.data === undefined && <ErrorNote message={`Showing the inventory's copy: ${detail.error}`} />}
      <div class="tab-body">
        {tab === "summary" && <HostSummary host={host} vms={vms} />}
        {tab === "monitor" && <MonitorTab kind="host" name={host.name} />}
        {tab === "events" && <EventsTab events={ctx.events} targets={[host.name, ...vms.map((v) => v.name)]} />}
      </div>
      {dialog && (
        <MaintenanceDialog
          host={host.name}
          enter={dialog === "enter"}
          vmCount={vms.length}
          onClose={() => setDialog(null)}
          onStarted={() => {
            ctx.refresh();
            detail.refresh();
          }}
        />
      )}
    </div>
  );
}
