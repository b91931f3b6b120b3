// Picks the VMs of a resource pool: checked VMs move into it (from wherever they were),
// unchecked ones that were in it go back to the cluster's root.

import { useState } from "preact/hooks";
import { movePoolVms } from "../actions";
import { Dialog } from "../components/Dialog";
import { notify } from "../components/Toasts";
import type { Pool } from "../policy";
import type { Vm } from "../types";

export function PoolVmsDialog({ pool, vms, onClose, onSaved }: { pool: Pool; vms: Vm[]; onClose: () => void; onSaved: () => void }) {
  const [chosen, setChosen] = useState(new Set(pool.vms));
  const toggle = (name: string, on: boolean) => {
    const next = new Set(chosen);
    if (on) next.add(name);
    else next.delete(name);
    setChosen(next);
  };
  return (
    <Dialog
      title={`VMs of resource pool ${pool.name}`}
      submitLabel="Save"
      onClose={onClose}
      onSubmit={async () => {
        const add = [...chosen].filter((v) => !pool.vms.includes(v));
        const remove = pool.vms.filter((v) => !chosen.has(v));
        if (add.length) await movePoolVms(pool.name, "add_vms", add);
        if (remove.length) await movePoolVms(pool.name, "remove_vms", remove);
        notify(`VMs of ${pool.name} saved`);
        onSaved();
      }}
    >
      {vms.length === 0 && <p class="empty">No VMs.</p>}
      <div class="pick-list" data-testid="pool-vms">
        {vms.map((v) => (
          <label class="check" key={v.name}>
            <input type="checkbox" checked={chosen.has(v.name)} onChange={(e) => toggle(v.name, (e.target as HTMLInputElement).checked)} value={v.name} />
            {v.name}
            {v.pool && v.pool !== pool.name && <span class="muted"> (now in {v.pool})</span>}
          </label>
        ))}
      </div>
    </Dialog>
  );
}
