// A VM's Backups card: its backups in a repository (those of the jobs that back it up,
// or one typed in), newest first, each with "Browse files" (single files out of the
// backup), "Restore disk" (one disk written back into this VM, off) and "Restore as new
// VM".

import { useEffect, useState } from "preact/hooks";
import { enc, get } from "../api";
import { Card, Empty, ErrorNote } from "../components/Card";
import type { ViewContext } from "../context";
import { BackupFilesDialog } from "../dialogs/BackupFilesDialog";
import { RestoreDialog } from "../dialogs/RestoreDialog";
import { RestoreDiskDialog } from "../dialogs/RestoreDiskDialog";
import { bytes, dash, dateTime } from "../format";
import { usePoll } from "../live/poll";
import { type Backup, readBackups, readJobs } from "./backupJobs";

/** `poweredOff`: whether a disk may be written back now; `hasSnapshots`: whether a revert can undo that. */
export function VmBackups({
  vm,
  ctx,
  onStarted,
  poweredOff,
  hasSnapshots,
}: {
  vm: string;
  ctx: ViewContext;
  onStarted: () => void;
  poweredOff: boolean;
  hasSnapshots: boolean;
}) {
  const jobs = usePoll(async () => readJobs(await get("/api/vinfra/backup/job")), 30_000, `vm-backup-jobs:${vm}`);
  const repositories = [...new Set((jobs.data ?? []).filter((j) => j.vms.includes(vm)).map((j) => j.repository))];
  const [typed, setTyped] = useState("");
  const [repository, setRepository] = useState<string | undefined>(undefined);
  const repo = repository ?? repositories[0];
  const backups = usePoll(
    async () => (repo ? readBackups(await get(`/api/vinfra/backup/backups?repository=${enc(repo)}&vm=${enc(vm)}`)).reverse() : []),
    30_000,
    `vm-backups:${vm}:${repo ?? ""}`,
  );
  useEffect(() => backups.refresh(), [ctx.tasksEnded, repo]);
  const [restoring, setRestoring] = useState<Backup | null>(null);
  const [browsing, setBrowsing] = useState<Backup | null>(null);
  const [restoringDisk, setRestoringDisk] = useState<Backup | null>(null);
  const readOnly = ctx.canOperate ? undefined : "Your role (read-only) cannot restore VMs";
  const diskRefused = readOnly ?? (poweredOff ? undefined : "Power the VM off to write a disk back into it");
  return (
    <Card title="Backups" class="wide">
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          if (typed.trim()) setRepository(typed.trim());
        }}
      >
        <span class="muted">Repository</span>
        <select value={repo ?? ""} onChange={(e) => setRepository((e.target as HTMLSelectElement).value || undefined)} data-field="repository">
          {repo === undefined && <option value="">none</option>}
          {[...new Set([...repositories, ...(repo ? [repo] : [])])].map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
        <input placeholder="another path" value={typed} onInput={(e) => setTyped((e.target as HTMLInputElement).value)} />
        <button class="button small" type="submit">
          Show
        </button>
      </form>
      {repo === undefined ? (
        <Empty>No backup job backs this VM up: type a repository to list its backups.</Empty>
      ) : (
        <>
          <ErrorNote message={backups.error} />
          {backups.data !== undefined && backups.data.length === 0 && !backups.error && <Empty>No backups of {vm} in {repo}.</Empty>}
          {(backups.data ?? []).length > 0 && (
            <table class="grid compact" data-testid="vm-backups">
              <thead>
                <tr>
                  <th>Taken</th>
                  <th>Backup</th>
                  <th>Kind</th>
                  <th class="num">Size</th>
                  <th class="num">New data</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {(backups.data ?? []).map((b) => (
                  <tr key={b.id} data-backup={b.id}>
                    <td>{b.time ? dateTime(b.time) : dash}</td>
                    <td class="mono" title={b.id}>
                      {b.id.slice(0, 12)}
                    </td>
                    <td>{b.incremental ? "incremental" : "full"}</td>
                    <td class="num">{bytes(b.bytes)}</td>
                    <td class="num">{bytes(b.bytesNew)}</td>
                    <td class="row-actions">
                      <button class="button small" onClick={() => setBrowsing(b)} data-action="browse-files">
                        Browse files
                      </button>
                      <button class="button small" disabled={!!diskRefused} title={diskRefused} onClick={() => setRestoringDisk(b)} data-action="restore-disk">
                        Restore disk
                      </button>
                      <button class="button small" disabled={!!readOnly} title={readOnly} onClick={() => setRestoring(b)} data-action="restore">
                        Restore as new VM
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
      {browsing && repo && <BackupFilesDialog vm={vm} repository={repo} backup={browsing} canDownload={ctx.canOperate} onClose={() => setBrowsing(null)} />}
      {restoringDisk && repo && (
        <RestoreDiskDialog vm={vm} repository={repo} backup={restoringDisk} hasSnapshots={hasSnapshots} onClose={() => setRestoringDisk(null)} onStarted={onStarted} />
      )}
      {restoring && repo && <RestoreDialog vm={vm} repository={repo} backup={restoring} onClose={() => setRestoring(null)} onStarted={onStarted} />}
    </Card>
  );
}
