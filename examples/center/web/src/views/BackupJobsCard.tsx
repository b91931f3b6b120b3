// The datacenter's Backup jobs card: each job's VMs, schedule, repository, retention, last
// result and next run, with Run now, Edit and Delete, and New job. Read every 5 s, and
// again when a task ends or an event arrives.

import { useEffect, useState } from "preact/hooks";
import { deleteBackupJob, runBackupJob } from "../actions";
import { get } from "../api";
import { Card, Empty, ErrorNote } from "../components/Card";
import { notify } from "../components/Toasts";
import type { ViewContext } from "../context";
import { BackupJobDialog } from "../dialogs/BackupJobDialog";
import { dash, dateTime } from "../format";
import { usePoll } from "../live/poll";
import { href } from "../route";
import { type BackupJob, readJobs } from "./backupJobs";

const POLL_MS = 5000;

function LastResult({ job }: { job: BackupJob }) {
  const state = job.running ? "running" : job.lastState;
  if (!state) return <span class="muted">never run</span>;
  return (
    <span class={`chip job-${state}`} title={job.lastMessage} data-testid="job-result">
      {state === "succeeded" ? "Succeeded" : state === "running" ? "Running" : "Failed"}
    </span>
  );
}

export function BackupJobsCard({ ctx }: { ctx: ViewContext }) {
  const jobs = usePoll(async () => readJobs(await get("/api/vinfra/backup/job")), POLL_MS, "backup-jobs");
  useEffect(() => jobs.refresh(), [ctx.tasksEnded, ctx.events.generation]);
  const [editing, setEditing] = useState<BackupJob | "new" | null>(null);
  const [error, setError] = useState<string | undefined>(undefined);
  const readOnly = ctx.canOperate ? undefined : "Your role (read-only) cannot change or run backup jobs";
  const act = async (what: () => Promise<unknown>, done: string) => {
    setError(undefined);
    try {
      await what();
      notify(done);
      ctx.refresh();
      jobs.refresh();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  };
  const list = jobs.data ?? [];
  return (
    <Card
      title="Backup jobs"
      class="wide"
      actions={
        <button class="button small" onClick={() => setEditing("new")} disabled={!!readOnly} title={readOnly} data-action="backup-job-new">
          New job
        </button>
      }
    >
      <ErrorNote message={error ?? (jobs.data === undefined ? jobs.error : undefined)} />
      {jobs.data !== undefined && list.length === 0 && <Empty>No backup jobs. A job backs VMs up on a schedule and keeps the last N backups of each.</Empty>}
      {list.length > 0 && (
        <table class="grid compact" data-testid="backup-jobs">
          <thead>
            <tr>
              <th>Job</th>
              <th>VMs</th>
              <th>Schedule</th>
              <th>Repository</th>
              <th class="num">Keep</th>
              <th>Last result</th>
              <th>Last run</th>
              <th>Next run</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.map((j) => (
              <tr key={j.name} data-job={j.name}>
                <td>
                  <strong>{j.name}</strong> {j.incremental ? <span class="muted">incremental</span> : <span class="muted">full</span>}
                  {j.disks.length > 0 && <div class="muted small-text">disk{j.disks.length > 1 ? "s" : ""} {j.disks.join(", ")}</div>}
                </td>
                <td>
                  {j.vms.map((vm, i) => (
                    <span key={vm}>
                      {i > 0 && ", "}
                      <a href={href({ kind: "vm", name: vm })}>{vm}</a>
                    </span>
                  ))}
                </td>
                <td>{j.schedule}</td>
                <td class="mono">{j.repository}</td>
                <td class="num">{j.keepLast === 0 ? "all" : j.keepLast}</td>
                <td>
                  <LastResult job={j} />
                  {j.lastMessage && !j.running && <div class="muted small-text">{j.lastMessage}</div>}
                </td>
                <td>{j.lastRun ? dateTime(j.lastRun) : dash}</td>
                <td>{j.enabled ? (j.nextRun ? dateTime(j.nextRun) : dash) : <span class="muted">disabled</span>}</td>
                <td class="row-actions">
                  <button
                    class="button small primary"
                    disabled={!!readOnly || j.running}
                    title={readOnly ?? (j.running ? "A run is in progress" : undefined)}
                    onClick={() =>
                      act(async () => {
                        const r = await runBackupJob(j.name);
                        const refused = (r?.refused ?? []).map(String);
                        if (refused.length > 0) throw new Error(`Some backups did not start: ${refused.join("; ")}`);
                      }, `Backup job ${j.name} started`)
                    }
                    data-action="backup-job-run"
                  >
                    Run now
                  </button>{" "}
                  <button class="button small" disabled={!!readOnly} title={readOnly} onClick={() => setEditing(j)} data-action="backup-job-edit">
                    Edit
                  </button>{" "}
                  <button
                    class="button small"
                    disabled={!!readOnly}
                    title={readOnly}
                    onClick={() => confirm(`Delete backup job ${j.name}? Its backups stay in the repository.`) && act(() => deleteBackupJob(j.name), `Backup job ${j.name} deleted`)}
                    data-action="backup-job-delete"
                  >
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {editing && (
        <BackupJobDialog
          job={editing === "new" ? undefined : editing}
          vms={ctx.inventory.vms.map((v) => v.name)}
          onClose={() => setEditing(null)}
          onDone={() => jobs.refresh()}
        />
      )}
    </Card>
  );
}
