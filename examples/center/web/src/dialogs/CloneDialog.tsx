// Clones a VM: linked (shares the source's disks copy-on-write, instant) or full.

import { useState } from "preact/hooks";
import { cloneVm } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";

export function CloneDialog({ vm, running, onClose, onStarted }: { vm: string; running: boolean; onClose: () => void; onStarted: () => void }) {
  const [name, setName] = useState(`${vm}-clone`);
  const [full, setFull] = useState(false);
  return (
    <Dialog
      title={`Clone ${vm}`}
      submitLabel="Clone"
      canSubmit={name.trim() !== ""}
      onClose={onClose}
      onSubmit={async () => {
        await cloneVm(vm, name.trim(), full);
        notify(`Clone of ${vm} as ${name.trim()} started`);
        onStarted();
      }}
    >
      <Field label="New VM name">
        <input value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} required />
      </Field>
      <label class="check">
        <input type="checkbox" checked={full} onChange={(e) => setFull((e.target as HTMLInputElement).checked)} />
        Full clone (copy the disks instead of linking to them)
      </label>
      {running && <div class="info-note">The hosts clone a VM that is shut off: shut {vm} down first.</div>}
    </Dialog>
  );
}
