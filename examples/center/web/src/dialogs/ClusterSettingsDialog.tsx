// Edits a cluster's DRS automation and threshold and its HA admission control (on or
// off, failures to tolerate, the slot or percentage policy)
// (administrators; the server names the field it refuses).

import { useState } from "preact/hooks";
import { setClusterSettings } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";
import type { Cluster } from "../types";

const LEVELS = [
  { id: "manual", label: "Manual: recommendations only" },
  { id: "partially_automated", label: "Partially automated: initial placement" },
  { id: "fully_automated", label: "Fully automated: migrations applied" },
];

export function ClusterSettingsDialog({ cluster, hostCount, onClose, onSaved }: { cluster: Cluster; hostCount: number; onClose: () => void; onSaved: () => void }) {
  const [automation, setAutomation] = useState(cluster.drsAutomation ?? "manual");
  const [threshold, setThreshold] = useState(cluster.drsThreshold ?? 3);
  const [admission, setAdmission] = useState(cluster.haAdmissionControl ?? true);
  const [failures, setFailures] = useState(cluster.haFailuresTolerated ?? 1);
  const [policy, setPolicy] = useState(cluster.haPolicy ?? "slots");
  const [cpuPercent, setCpuPercent] = useState(cluster.haCpuFailoverPercent ?? 25);
  const [memoryPercent, setMemoryPercent] = useState(cluster.haMemoryFailoverPercent ?? 25);
  return (
    <Dialog
      title={`Settings of ${cluster.name}`}
      submitLabel="Save"
      onClose={onClose}
      onSubmit={async () => {
        await setClusterSettings(cluster.name, {
          drs: { automation, threshold },
          ha: {
            admission_control: admission,
            failures_tolerated: failures,
            policy,
            cpu_failover_percent: cpuPercent,
            memory_failover_percent: memoryPercent,
          },
        });
        notify(`Settings of ${cluster.name} saved`);
        onSaved();
      }}
    >
      <Field label="DRS automation level">
        <select value={automation} onChange={(e) => setAutomation((e.target as HTMLSelectElement).value)}>
          {LEVELS.map((l) => (
            <option key={l.id} value={l.id}>
              {l.label}
            </option>
          ))}
        </select>
      </Field>
      <Field label={`DRS migration threshold: ${threshold}`} hint="1 applies only the most needed moves, 5 balances aggressively.">
        <input type="range" min={1} max={5} step={1} value={threshold} onInput={(e) => setThreshold(Number((e.target as HTMLInputElement).value))} />
      </Field>
      <label class="check">
        <input type="checkbox" checked={admission} onChange={(e) => setAdmission((e.target as HTMLInputElement).checked)} />
        HA admission control: refuse power-ons that would break failover capacity
      </label>
      <Field label="Host failures the cluster tolerates" hint={`At most ${Math.max(1, hostCount - 1)} with ${hostCount} hosts.`}>
        <input type="number" min={0} max={Math.max(1, hostCount - 1)} value={failures} onInput={(e) => setFailures(Number((e.target as HTMLInputElement).value))} />
      </Field>
      <Field label="HA admission policy" hint={policy === "slots" ? "Every running VM keeps a slot after the host failures above." : "Reservations leave these shares of the cluster free for failover."}>
        <select value={policy} onChange={(e) => setPolicy((e.target as HTMLSelectElement).value)} data-field="ha-policy">
          <option value="slots">Host failures (slots)</option>
          <option value="percentage">Percentage of cluster resources</option>
        </select>
      </Field>
      {policy === "percentage" && (
        <>
          <Field label="CPU kept free for failover (%)">
            <input type="number" min={0} max={100} value={cpuPercent} onInput={(e) => setCpuPercent(Number((e.target as HTMLInputElement).value))} />
          </Field>
          <Field label="Memory kept free for failover (%)">
            <input type="number" min={0} max={100} value={memoryPercent} onInput={(e) => setMemoryPercent(Number((e.target as HTMLInputElement).value))} />
          </Field>
        </>
      )}
    </Dialog>
  );
}
