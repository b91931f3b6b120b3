// Backs a VM up into a repository through the hosts' backup (vcb) role.

import { useState } from "preact/hooks";
import { backupVm } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";

export function BackupDialog({ vm, onClose, onStarted }: { vm: string; onClose: () => void; onStarted: () => void }) {
  const [repository, setRepository] = useState("default");
  const [incremental, setIncremental] = useState(true);
  return (
    <Dialog
      title={`Back up ${vm}`}
      submitLabel="Back up"
      canSubmit={repository.trim() !== ""}
      onClose={onClose}
      onSubmit={async () => {
        await backupVm(vm, repository.trim(), incremental);
        notify(`Backup of ${vm} started`);
        onStarted();
      }}
    >
      <Field label="Repository" hint="A backup repository the hosts know.">
        <input value={repository} onInput={(e) => setRepository((e.target as HTMLInputElement).value)} required />
      </Field>
      <label class="check">
        <input type="checkbox" checked={incremental} onChange={(e) => setIncremental((e.target as HTMLInputElement).checked)} />
        Incremental (only the blocks changed since the last backup)
      </label>
    </Dialog>
  );
}
