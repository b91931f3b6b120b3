// The bottom "Recent tasks" panel, as vSphere's: newest first, with progress, initiator
// and times; it can be folded away.

import { useState } from "preact/hooks";
import { dash, taskLabel, time } from "../format";
import type { Task } from "../types";

const STATE_LABEL: Record<Task["state"], string> = {
  queued: "Queued",
  running: "Running",
  success: "Completed",
  error: "Failed",
  unknown: "Unknown",
};

export function TaskPanel({ tasks, error }: { tasks: Task[]; error?: string }) {
  const [open, setOpen] = useState(true);
  const running = tasks.filter((t) => t.state === "running" || t.state === "queued").length;
  return (
    <section class={`tasks-panel ${open ? "open" : "folded"}`} data-testid="recent-tasks">
      <header class="tasks-head" onClick={() => setOpen(!open)}>
        <h3>Recent tasks</h3>
        {running > 0 && <span class="pill running">{running} running</span>}
        {error && <span class="pill error" title={error}>tasks unavailable</span>}
        <span class="tasks-toggle">{open ? "▾" : "▴"}</span>
      </header>
      {open && (
        <div class="tasks-body">
          <table class="grid">
            <thead>
              <tr>
                <th>Task</th>
                <th>Target</th>
                <th>Status</th>
                <th>Initiator</th>
                <th>Started</th>
                <th>Completed</th>
              </tr>
            </thead>
            <tbody>
              {tasks.length === 0 && (
                <tr>
                  <td colSpan={6} class="muted">
                    {error ? `Tasks cannot be read: ${error}` : "No tasks yet."}
                  </td>
                </tr>
              )}
              {tasks.map((t) => (
                <tr key={t.id} data-task={t.id} data-state={t.state} data-kind={t.kind} data-target={t.target}>
                  <td>{taskLabel(t.kind)}</td>
                  <td>{t.target || dash}</td>
                  <td>
                    <TaskStatus task={t} />
                  </td>
                  <td>{t.user ?? dash}</td>
                  <td>{time(t.started)}</td>
                  <td>{time(t.ended)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function TaskStatus({ task }: { task: Task }) {
  if (task.state === "running" || task.state === "queued") {
    const p = Math.round((task.progress ?? 0) * 100);
    return (
      <span class="task-status running" title={task.message}>
        <span class="progress">
          <span class="progress-fill" style={{ width: `${p}%` }} />
        </span>
        <span>{p} %</span>
        {task.message && <span class="muted task-message">{task.message}</span>}
      </span>
    );
  }
  return (
    <span class={`task-status ${task.state}`} title={task.error ?? task.message}>
      <span class="status-dot" />
      {STATE_LABEL[task.state]}
      {task.error && <span class="task-error">: {task.error}</span>}
    </span>
  );
}
