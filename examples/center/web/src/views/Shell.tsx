// The logged-in console: top bar, inventory tree on the left, the selected object in the
// middle, Recent tasks at the bottom. The inventory and tasks are read every few seconds
// and at once on every live event.

import { useCallback, useEffect, useRef } from "preact/hooks";
import { get } from "../api";
import { ErrorNote } from "../components/Card";
import { InventoryTree } from "../components/InventoryTree";
import { TaskPanel } from "../components/TaskPanel";
import { Toasts } from "../components/Toasts";
import { TopBar } from "../components/TopBar";
import type { ViewContext } from "../context";
import { useEventLog } from "../live/events";
import { loadInventory } from "../live/inventory";
import { usePoll } from "../live/poll";
import { list, task as readTask } from "../normalize";
import { useRoute } from "../route";
import type { Me } from "../types";
import { ClusterView } from "./ClusterView";
import { DatacenterView } from "./DatacenterView";
import { HostView } from "./HostView";
import { VmView } from "./VmView";

const INVENTORY_POLL_MS = 3000;
const TASK_POLL_MS = 1500;
const TASKS_SHOWN = 50;
const EVENT_REFRESH_MS = 1000;

export function Shell({ me, onLogout }: { me?: Me; onLogout: () => void }) {
  const route = useRoute();
  const events = useEventLog(true);
  const inventory = usePoll(loadInventory, INVENTORY_POLL_MS, "inventory");
  const tasks = usePoll(async () => {
    const all = list(await get("/api/cis/tasks"), "tasks").map(readTask);
    const order = (t: { started?: Date; id: string }) => t.started?.getTime() ?? (Number(t.id) || 0);
    return all.sort((a, b) => order(b) - order(a)).slice(0, TASKS_SHOWN);
  }, TASK_POLL_MS, "tasks");

  // The tab's title names the selected object, as the browser's history and tabs show it.
  useEffect(() => {
    const s = route.selection;
    document.title = s.kind === "none" ? "vinfra Center" : `${s.name} · vinfra Center`;
  }, [route.selection]);

  const marked = useRef(false);
  useEffect(() => {
    // "Interactive": the first inventory is on screen. The browser test reads this mark.
    if (inventory.data && !marked.current) {
      marked.current = true;
      performance.mark("vinfra-inventory-ready");
    }
  }, [inventory.data]);

  // A burst of events (a host's VMs restarted by HA) reads the inventory once, not once each.
  const lastEventRead = useRef(0);
  useEffect(() => {
    const wait = Math.max(0, lastEventRead.current + EVENT_REFRESH_MS - Date.now());
    const timer = setTimeout(() => {
      lastEventRead.current = Date.now();
      inventory.refresh();
      tasks.refresh();
    }, wait);
    return () => clearTimeout(timer);
  }, [events.generation]);

  const refresh = useCallback(() => {
    inventory.refresh();
    tasks.refresh();
  }, []);

  const tasksEnded = (tasks.data ?? []).filter((t) => t.state !== "running" && t.state !== "queued").map((t) => t.id).join(",");
  const inv = inventory.data;
  let main;
  if (!inv) {
    main = inventory.error ? <ErrorNote message={inventory.error} /> : <p class="muted pad">Loading the inventory…</p>;
  } else {
    // Without a known role the buttons stay on: the server decides and says why.
    const role = me?.role;
    const ctx: ViewContext = {
      inventory: inv,
      tasksEnded,
      events,
      tab: route.tab,
      refresh,
      canOperate: role !== "read_only",
      isAdmin: role === undefined || role === "administrator",
    };
    const s = route.selection;
    const dc = inv.datacenters[0]?.name ?? "datacenter";
    main =
      s.kind === "vm" ? <VmView key={s.name} name={s.name} ctx={ctx} />
      : s.kind === "host" ? <HostView key={s.name} name={s.name} ctx={ctx} />
      : s.kind === "cluster" ? <ClusterView key={s.name} name={s.name} ctx={ctx} />
      : <DatacenterView name={s.kind === "datacenter" ? s.name : dc} ctx={ctx} />;
  }

  return (
    <div class="shell">
      <TopBar me={me} stream={events.state} onLogout={onLogout} />
      <div class="shell-middle">
        <aside class="sidebar">
          {inv ? <InventoryTree inventory={inv} selection={route.selection} tab={route.tab} /> : <p class="muted pad">Loading…</p>}
          {inv && inv.problems.length > 0 && (
            <div class="problems" title={inv.problems.join("\n")}>
              {inv.problems.length} part{inv.problems.length === 1 ? "" : "s"} of the inventory could not be read
            </div>
          )}
        </aside>
        <main class="main-panel">{main}</main>
      </div>
      <TaskPanel tasks={tasks.data ?? []} error={tasks.error} />
      <Toasts />
    </div>
  );
}
