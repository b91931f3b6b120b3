// Creates a resource pool under the cluster or another pool, or edits one: parent, and
// per resource the reservation, limit, shares and expandable reservation (the server
// checks the tree and names the field it refuses).

import { useState } from "preact/hooks";
import { createPool, updatePool, type PoolAllocationBody } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";
import { descendants, SHARE_LEVELS, type Pool, type PoolAllocation } from "../policy";

function AllocationFields({ label, unit, value, onChange }: { label: string; unit: string; value: PoolAllocationBody; onChange: (v: PoolAllocationBody) => void }) {
  const level = SHARE_LEVELS.some(([v]) => v === value.shares) ? String(value.shares) : "custom";
  return (
    <fieldset class="pool-resource">
      <legend>{label}</legend>
      <Field label={`Reservation (${unit})`}>
        <input type="number" min={0} value={value.reservation} onInput={(e) => onChange({ ...value, reservation: Number((e.target as HTMLInputElement).value) })} data-field={`${label}-reservation`} />
      </Field>
      <label class="check">
        <input type="checkbox" checked={value.limit === null} onChange={(e) => onChange({ ...value, limit: (e.target as HTMLInputElement).checked ? null : Math.max(value.reservation, 1) })} />
        Unlimited
      </label>
      {value.limit !== null && (
        <Field label={`Limit (${unit})`}>
          <input type="number" min={0} value={value.limit} onInput={(e) => onChange({ ...value, limit: Number((e.target as HTMLInputElement).value) })} />
        </Field>
      )}
      <Field label="Shares">
        <select value={level} onChange={(e) => {
          const v = (e.target as HTMLSelectElement).value;
          onChange({ ...value, shares: v === "custom" ? value.shares : Number(v) });
        }}>
          {SHARE_LEVELS.map(([v, l]) => (
            <option key={v} value={String(v)}>
              {l} ({v})
            </option>
          ))}
          <option value="custom">Custom</option>
        </select>
      </Field>
      {level === "custom" && (
        <Field label="Custom shares">
          <input type="number" min={1} value={value.shares} onInput={(e) => onChange({ ...value, shares: Number((e.target as HTMLInputElement).value) })} />
        </Field>
      )}
      <label class="check">
        <input type="checkbox" checked={value.expandable_reservation} onChange={(e) => onChange({ ...value, expandable_reservation: (e.target as HTMLInputElement).checked })} />
        Expandable reservation (borrow from the parent)
      </label>
    </fieldset>
  );
}

const body = (a?: PoolAllocation): PoolAllocationBody => ({
  reservation: a?.reservation ?? 0,
  limit: a ? a.limit : null,
  shares: a?.shares ?? 1000,
  expandable_reservation: a?.expandable ?? true,
});

/** `pool`: the pool to edit; none makes a new one (under `parent` when given). */
export function PoolDialog({ cluster, pools, pool, parent, onClose, onSaved }: { cluster: string; pools: Pool[]; pool?: Pool; parent?: string; onClose: () => void; onSaved: () => void }) {
  const [name, setName] = useState(pool?.name ?? "");
  const [parentName, setParent] = useState<string>(pool?.parent ?? parent ?? "");
  const [cpu, setCpu] = useState(body(pool?.cpu));
  const [memory, setMemory] = useState(body(pool?.memory));
  const excluded = pool ? descendants(pools, pool.name) : new Set<string>();
  return (
    <Dialog
      title={pool ? `Edit resource pool ${pool.name}` : `New resource pool in ${cluster}`}
      submitLabel={pool ? "Save" : "Create"}
      canSubmit={name.trim() !== ""}
      onClose={onClose}
      onSubmit={async () => {
        const b = { parent: parentName || null, cpu_allocation: cpu, memory_allocation: memory };
        if (pool) await updatePool(pool.name, b);
        else await createPool(cluster, name.trim(), b);
        notify(pool ? `Resource pool ${pool.name} saved` : `Resource pool ${name.trim()} created`);
        onSaved();
      }}
    >
      {!pool && (
        <Field label="Name">
          <input value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} data-field="pool-name" />
        </Field>
      )}
      <Field label="Parent">
        <select value={parentName} onChange={(e) => setParent((e.target as HTMLSelectElement).value)}>
          <option value="">{cluster} (the cluster)</option>
          {pools
            .filter((p) => !excluded.has(p.name))
            .map((p) => (
              <option key={p.name} value={p.name}>
                {p.name}
              </option>
            ))}
        </select>
      </Field>
      <AllocationFields label="CPU" unit="MHz, 1000 per CPU" value={cpu} onChange={setCpu} />
      <AllocationFields label="Memory" unit="MiB" value={memory} onChange={setMemory} />
    </Dialog>
  );
}
