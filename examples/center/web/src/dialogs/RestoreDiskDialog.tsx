// Writes one disk of a backup back into the VM it came from (the VM must be off): its
// current contents of that disk are replaced; its snapshots stay, so reverting to the
// latest one undoes the restore.

import { useState } from "preact/hooks";
import { restoreDisk } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";
import { dateTime } from "../format";
import type { Backup } from "../views/backupJobs";

/** The VM's disk index of a backup's disk name (`disk2` → 2). */
const indexOf = (name: string) => {
  const m = /^disk(\d+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
};

export function RestoreDiskDialog({
  vm,
  repository,
  backup,
  hasSnapshots,
  onClose,
  onStarted,
}: {
  vm: string;
  repository: string;
  backup: Backup;
  hasSnapshots: boolean;
  onClose: () => void;
  onStarted: () => void;
}) {
  const disks = backup.disks.flatMap((d) => {
    const i = indexOf(d);
    return i === undefined ? [] : [i];
  });
  const [disk, setDisk] = useState(disks[0] ?? 0);
  return (
    <Dialog
      title={`Restore a disk of ${vm}`}
      submitLabel="Restore disk"
      danger
      canSubmit={disks.includes(disk)}
      onClose={onClose}
      onSubmit={async () => {
        await restoreDisk(vm, repository, disk, backup.id);
        notify(`Restore of disk ${disk} of ${vm} started`);
        onStarted();
      }}
    >
      <p class="muted">
        Backup {backup.id.slice(0, 12)} of {backup.time ? dateTime(backup.time) : "unknown time"} from {repository}.
      </p>
      <Field label="Disk" hint="The VM's disk of this number is overwritten with its contents in the backup.">
        <select value={String(disk)} onChange={(e) => setDisk(Number((e.target as HTMLSelectElement).value))} data-field="disk">
          {disks.map((d) => (
            <option key={d} value={String(d)}>
              Disk {d}
            </option>
          ))}
        </select>
      </Field>
      <p class="sev-warning" data-testid="restore-disk-warning">
        What the disk holds now is replaced.{" "}
        {hasSnapshots ? "The VM's snapshots stay: reverting to the latest one undoes the restore." : "The VM has no snapshot to go back to: take one first to be able to undo."}
      </p>
    </Dialog>
  );
}
