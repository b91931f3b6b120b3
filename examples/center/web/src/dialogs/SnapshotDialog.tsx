// Takes a snapshot; the host names it when the name is left empty.

import { useState } from "preact/hooks";
import { snapshotVm } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";

export function SnapshotDialog({ vm, onClose, onStarted }: { vm: string; onClose: () => void; onStarted: () => void }) {
  const [name, setName] = useState("");
  return (
    <Dialog
      title={`Take snapshot of ${vm}`}
      submitLabel="Take snapshot"
      onClose={onClose}
      onSubmit={async () => {
        await snapshotVm(vm, name.trim() || undefined);
        notify(`Snapshot of ${vm} started`);
        onStarted();
      }}
    >
      <Field label="Snapshot name" hint="Leave empty to let the host name it.">
        <input value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} placeholder="before-upgrade" />
      </Field>
    </Dialog>
  );
}
