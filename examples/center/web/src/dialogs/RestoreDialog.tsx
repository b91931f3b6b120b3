// Restores a backup of a VM as a new VM (shut off, its disks copied out of the backup).

import { useState } from "preact/hooks";
import { restoreVm } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";
import { dateTime } from "../format";
import type { Backup } from "../views/backupJobs";

export function RestoreDialog({ vm, repository, backup, onClose, onStarted }: { vm: string; repository: string; backup: Backup; onClose: () => void; onStarted: () => void }) {
  const [name, setName] = useState(`${vm}-restored`);
  return (
    <Dialog
      title={`Restore ${vm} as a new VM`}
      submitLabel="Restore"
      canSubmit={name.trim() !== ""}
      onClose={onClose}
      onSubmit={async () => {
        await restoreVm(vm, repository, name.trim(), backup.id);
        notify(`Restore of ${vm} as ${name.trim()} started`);
        onStarted();
      }}
    >
      <p class="muted">
        Backup {backup.id.slice(0, 12)} of {backup.time ? dateTime(backup.time) : "unknown time"} from {repository}.
      </p>
      <Field label="New VM name" hint="The restored VM is created powered off.">
        <input value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} required data-field="name" />
      </Field>
    </Dialog>
  );
}
