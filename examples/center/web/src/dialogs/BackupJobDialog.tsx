// Makes a backup job or changes one: which VMs and which of their disks, the
// repository, the schedule, how many backups of each VM to keep, incremental or full,
// enabled.

import { useState } from "preact/hooks";
import { changeBackupJob, createBackupJob } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";
import type { BackupJob } from "../views/backupJobs";

const value = (e: Event) => (e.target as HTMLInputElement).value;
const checked = (e: Event) => (e.target as HTMLInputElement).checked;

/** "all" (or nothing): every disk, `[]`; "0, 2": those indexes; anything else: undefined. */
export function parseDisks(text: string): number[] | undefined {
  const t = text.trim().toLowerCase();
  if (t === "" || t === "all") return [];
  const parts = t.split(/[\s,]+/).filter((p) => p !== "");
  const disks = parts.map((p) => (/^\d{1,2}$/.test(p) ? Number(p) : NaN));
  return disks.every((d) => Number.isInteger(d)) ? disks : undefined;
}

/** `job` absent: a new one. */
export function BackupJobDialog({ job, vms, onClose, onDone }: { job?: BackupJob; vms: string[]; onClose: () => void; onDone: () => void }) {
  const [name, setName] = useState(job?.name ?? "");
  const [chosen, setChosen] = useState<string[]>(job?.vms ?? []);
  const [repository, setRepository] = useState(job?.repository ?? "/var/lib/vinfra/backups");
  const [schedule, setSchedule] = useState(job?.schedule ?? "daily 02:00");
  const [keepLast, setKeepLast] = useState(String(job?.keepLast ?? 7));
  const [incremental, setIncremental] = useState(job?.incremental ?? true);
  const [enabled, setEnabled] = useState(job?.enabled ?? true);
  const [diskText, setDiskText] = useState(job && job.disks.length > 0 ? job.disks.join(", ") : "all");
  const disks = parseDisks(diskText);
  // VMs of the job that left the inventory stay listed, so that saving keeps them visible.
  const all = [...new Set([...vms, ...chosen])].sort();
  const toggle = (vm: string, on: boolean) => setChosen(on ? [...chosen, vm] : chosen.filter((v) => v !== vm));
  return (
    <Dialog
      title={job ? `Edit backup job ${job.name}` : "New backup job"}
      submitLabel={job ? "Save" : "Create"}
      canSubmit={name.trim() !== "" && chosen.length > 0 && repository.trim() !== "" && schedule.trim() !== "" && disks !== undefined}
      onClose={onClose}
      onSubmit={async () => {
        const body = { vms: chosen, disks: disks ?? [], repository: repository.trim(), schedule: schedule.trim(), keep_last: Number(keepLast), incremental, enabled };
        if (job) await changeBackupJob(job.name, body);
        else await createBackupJob({ name: name.trim(), ...body });
        notify(job ? `Backup job ${job.name} saved` : `Backup job ${name.trim()} created`);
        onDone();
      }}
    >
      {!job && (
        <Field label="Name">
          <input value={name} onInput={(e) => setName(value(e))} required data-field="name" />
        </Field>
      )}
      <Field label="Virtual machines" hint="Each is backed up on the host that runs it.">
        <div class="vm-check-list" data-field="vms">
          {all.length === 0 && <span class="muted">No VMs in the inventory.</span>}
          {all.map((vm) => (
            <label class="check" key={vm}>
              <input type="checkbox" checked={chosen.includes(vm)} onChange={(e) => toggle(vm, checked(e))} />
              {vm}
            </label>
          ))}
        </div>
      </Field>
      <Field label="Disks" hint={'"all", or the disks\' numbers as in each VM\'s Disks ("0" for the system disk only; "0, 2").'}>
        <input value={diskText} onInput={(e) => setDiskText(value(e))} data-field="disks" aria-invalid={disks === undefined} />
      </Field>
      <Field label="Repository" hint="An absolute path on the hosts (shared, so that any host restores).">
        <input value={repository} onInput={(e) => setRepository(value(e))} required data-field="repository" />
      </Field>
      <Field label="Schedule" hint={'"every 6h", "every 30m" or "daily 02:00" (UTC).'}>
        <input value={schedule} onInput={(e) => setSchedule(value(e))} required data-field="schedule" />
      </Field>
      <Field label="Keep the last" hint="Backups of each VM kept after a run; older ones are forgotten and pruned (0: keep all).">
        <input type="number" min={0} value={keepLast} onInput={(e) => setKeepLast(value(e))} data-field="keep_last" />
      </Field>
      <label class="check">
        <input type="checkbox" checked={incremental} onChange={(e) => setIncremental(checked(e))} />
        Incremental (only the blocks changed since each VM's last backup)
      </label>
      <label class="check">
        <input type="checkbox" checked={enabled} onChange={(e) => setEnabled(checked(e))} />
        Enabled (run on the schedule)
      </label>
    </Dialog>
  );
}
