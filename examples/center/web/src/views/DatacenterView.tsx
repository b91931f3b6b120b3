// The datacenter (and the landing page): counts, what needs attention, recent events.

import { Card, Props } from "../components/Card";
import { DatacenterIcon } from "../components/Icons";
import { Tabs } from "../components/Tabs";
import type { ViewContext } from "../context";
import { isConsoleLine } from "../live/events";
import { time } from "../format";
import { href } from "../route";
import { BackupJobsCard } from "./BackupJobsCard";
import { EventsTab } from "./EventsTab";
import { ObjectHeader } from "./ObjectHeader";

export function DatacenterView({ name, ctx }: { name: string; ctx: ViewContext }) {
  const inv = ctx.inventory;
  const running = inv.vms.filter((v) => v.power === "running").length;
  const attention = [
    ...inv.hosts.filter((h) => h.state === "not_responding").map((h) => `Host ${h.name} is not responding`),
    ...inv.hosts.filter((h) => h.state === "maintenance").map((h) => `Host ${h.name} is in maintenance mode`),
    ...inv.vms.filter((v) => v.power === "crashed").map((v) => `VM ${v.name} crashed`),
  ];
  const sel = { kind: "datacenter", name } as const;
  const tab = ctx.tab === "events" ? "events" : "summary";
  return (
    <div class="object-view" data-testid="datacenter-view">
      <ObjectHeader kind="Datacenter" title={name} icon={<span class="node-icon big"><DatacenterIcon /></span>} />
      <Tabs
        active={tab}
        tabs={[
          { id: "summary", label: "Summary", href: href(sel) },
          { id: "events", label: "Events", href: href(sel, "events") },
        ]}
      />
      <div class="tab-body">
        {tab === "events" ? (
          <EventsTab events={ctx.events} />
        ) : (
          <div class="summary-grid">
            <Card title="Inventory">
              <div class="stat-row">
                <div class="stat">
                  <div class="stat-value">{inv.clusters.length}</div>
                  <div class="stat-label">clusters</div>
                </div>
                <div class="stat">
                  <div class="stat-value" data-testid="host-count">{inv.hosts.length}</div>
                  <div class="stat-label">hosts</div>
                </div>
                <div class="stat">
                  <div class="stat-value" data-testid="vm-count">{inv.vms.length}</div>
                  <div class="stat-label">virtual machines</div>
                </div>
                <div class="stat">
                  <div class="stat-value">{running}</div>
                  <div class="stat-label">running</div>
                </div>
              </div>
            </Card>
            <Card title="Needs attention">
              {attention.length === 0 ? (
                <p class="ok-note">All hosts connected, no VM crashed.</p>
              ) : (
                <ul class="plain-list">
                  {attention.map((a) => (
                    <li key={a} class="warn-text">
                      {a}
                    </li>
                  ))}
                </ul>
              )}
            </Card>
            <BackupJobsCard ctx={ctx} />
            <Card title="Latest events" class="wide">
              <Props rows={ctx.events.events.filter((e) => !isConsoleLine(e)).slice(0, 8).map((e) => [time(e.time), e.message] as [string, string])} />
            </Card>
          </div>
        )}
      </div>
    </div>
  );
}
