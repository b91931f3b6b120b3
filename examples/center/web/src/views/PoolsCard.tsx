// The cluster's resource pools: the tree with each pool's CPU and memory reservation,
// limit and shares and its VMs, and the actions on it (new, edit, VMs, delete; operators).
// Deleting a pool moves its VMs and child pools to its parent.

import { useState } from "preact/hooks";
import { deletePool } from "../actions";
import { enc, get } from "../api";
import { Card, Empty, ErrorNote } from "../components/Card";
import { Dialog } from "../components/Dialog";
import { notify } from "../components/Toasts";
import type { ViewContext } from "../context";
import { PoolDialog } from "../dialogs/PoolDialog";
import { PoolVmsDialog } from "../dialogs/PoolVmsDialog";
import { usePoll } from "../live/poll";
import { poolTree, readPools, sharesLabel, type Pool, type PoolAllocation } from "../policy";
import type { Vm } from "../types";

type Open = { kind: "new"; parent?: string } | { kind: "edit" | "vms" | "delete"; pool: Pool };

const amount = (a: PoolAllocation, unit: string) => `${a.reservation}${a.limit === null ? "" : ` – ${a.limit}`} ${unit}${a.expandable ? "" : " fixed"}`;

export function PoolsCard({ cluster, vms, ctx }: { cluster: string; vms: Vm[]; ctx: ViewContext }) {
  const polled = usePoll(async () => readPools(await get(`/api/vcenter/resource-pool?cluster=${enc(cluster)}`)), 10_000, `pools:${cluster}`);
  const pools = polled.data ?? [];
  const [open, setOpen] = useState<Open | undefined>(undefined);
  const readOnly = ctx.canOperate ? undefined : "Only operators and administrators change resource pools";
  const saved = () => {
    polled.refresh();
    ctx.refresh();
  };
  const rows = poolTree(pools);
  return (
    <Card
      title={`Resource pools (${pools.length})`}
      class="wide-card"
      actions={
        <button class="button small" onClick={() => setOpen({ kind: "new" })} disabled={!!readOnly} title={readOnly} data-action="pool-new">
          New pool
        </button>
      }
    >
      {polled.error && <ErrorNote message={`Resource pools: ${polled.error}`} />}
      {rows.length === 0 ? (
        <Empty>{polled.loading ? "Loading…" : "No resource pools: every VM shares the cluster's root."}</Empty>
      ) : (
        <table class="grid compact" data-testid="resource-pools">
          <thead>
            <tr>
              <th>Pool</th>
              <th>CPU (MHz)</th>
              <th>Memory (MiB)</th>
              <th>Shares CPU / memory</th>
              <th>VMs</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {rows.map(({ pool: p, depth }) => (
              <tr key={p.name} data-pool={p.name}>
                <td style={{ paddingLeft: `${8 + depth * 16}px` }}>{p.name}</td>
                <td>{amount(p.cpu, "")}</td>
                <td>{amount(p.memory, "")}</td>
                <td>
                  {sharesLabel(p.cpu.shares)} / {sharesLabel(p.memory.shares)}
                </td>
                <td>{p.vms.length === 0 ? <span class="muted">none</span> : p.vms.join(", ")}</td>
                <td class="row-actions">
                  <button class="button small" onClick={() => setOpen({ kind: "edit", pool: p })} disabled={!!readOnly} title={readOnly} data-action="pool-edit">
                    Edit
                  </button>
                  <button class="button small" onClick={() => setOpen({ kind: "vms", pool: p })} disabled={!!readOnly} title={readOnly} data-action="pool-vms">
                    VMs
                  </button>
                  <button class="button small" onClick={() => setOpen({ kind: "new", parent: p.name })} disabled={!!readOnly} title={readOnly ?? "A child pool"} data-action="pool-child">
                    +
                  </button>
                  <button class="button small danger" onClick={() => setOpen({ kind: "delete", pool: p })} disabled={!!readOnly} title={readOnly} data-action="pool-delete">
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open?.kind === "new" && <PoolDialog cluster={cluster} pools={pools} parent={open.parent} onClose={() => setOpen(undefined)} onSaved={saved} />}
      {open?.kind === "edit" && <PoolDialog cluster={cluster} pools={pools} pool={open.pool} onClose={() => setOpen(undefined)} onSaved={saved} />}
      {open?.kind === "vms" && <PoolVmsDialog pool={open.pool} vms={vms} onClose={() => setOpen(undefined)} onSaved={saved} />}
      {open?.kind === "delete" && (
        <Dialog
          title={`Delete resource pool ${open.pool.name}`}
          submitLabel="Delete"
          danger
          onClose={() => setOpen(undefined)}
          onSubmit={async () => {
            await deletePool(open.pool.name);
            notify(`Resource pool ${open.pool.name} deleted`);
            saved();
          }}
        >
          <p>
            Its {open.pool.vms.length} VM(s) and {open.pool.children.length} child pool(s) move to {open.pool.parent ?? `the cluster ${cluster}`}.
          </p>
        </Dialog>
      )}
    </Card>
  );
}
