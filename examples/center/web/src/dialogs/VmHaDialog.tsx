// Edits a VM's HA settings (operators): its restart priority (the order HA restarts VMs
// after a host failure; disabled: never) and its isolation response (what a host cut
// from the storage does with it). The hosts keep them on the shared volume; their HA
// agents use them at the next failover.

import { useState } from "preact/hooks";
import { setVmHa } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";
import type { Vm } from "../types";

const PRIORITIES = [
  { id: "high", label: "High: restarted first" },
  { id: "medium", label: "Medium (default)" },
  { id: "low", label: "Low: restarted last" },
  { id: "disabled", label: "Disabled: never restarted by HA" },
];

const RESPONSES = [
  { id: "leave_on", label: "Leave powered on (default; powered off once the host loses its storage)" },
  { id: "shut_down", label: "Shut down the guest, then power off" },
  { id: "power_off", label: "Power off" },
];

export function VmHaDialog({ vm, onClose, onSaved }: { vm: Vm; onClose: () => void; onSaved: () => void }) {
  const [priority, setPriority] = useState(vm.haPriority ?? "medium");
  const [response, setResponse] = useState(vm.haIsolationResponse ?? "leave_on");
  return (
    <Dialog
      title={`HA settings of ${vm.name}`}
      submitLabel="Save"
      onClose={onClose}
      onSubmit={async () => {
        await setVmHa(vm.name, { priority, isolation_response: response });
        notify(`HA settings of ${vm.name} saved`);
        onSaved();
      }}
    >
      <Field label="Restart priority" hint="The order in which HA restarts VMs after a host failure.">
        <select value={priority} onChange={(e) => setPriority((e.target as HTMLSelectElement).value)} data-field="ha-priority">
          {PRIORITIES.map((p) => (
            <option key={p.id} value={p.id}>
              {p.label}
            </option>
          ))}
        </select>
      </Field>
      <Field label="Isolation response" hint="What its host does with it when the host is cut from the shared storage.">
        <select value={response} onChange={(e) => setResponse((e.target as HTMLSelectElement).value)} data-field="ha-isolation">
          {RESPONSES.map((r) => (
            <option key={r.id} value={r.id}>
              {r.label}
            </option>
          ))}
        </select>
      </Field>
    </Dialog>
  );
}
