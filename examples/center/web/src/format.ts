// Numbers and times as people read them.

export const dash = "—";

export function mib(v: number | undefined): string {
  if (v === undefined) return dash;
  if (v >= 1024 * 1024) return `${(v / 1024 / 1024).toFixed(1)} TiB`;
  if (v >= 1024) return `${(v / 1024).toFixed(1)} GiB`;
  return `${Math.round(v)} MiB`;
}

export function bytes(v: number | undefined): string {
  if (v === undefined) return dash;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let x = v;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${x >= 100 || i === 0 ? Math.round(x) : x.toFixed(1)} ${units[i]}`;
}

export function percent(v: number | undefined): string {
  return v === undefined ? dash : `${v.toFixed(v < 10 ? 1 : 0)} %`;
}

export function duration(ms: number | undefined): string {
  if (ms === undefined) return dash;
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

export function time(d: Date | undefined): string {
  if (!d) return dash;
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

export function dateTime(d: Date | undefined): string {
  if (!d) return dash;
  return `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${time(d)}`;
}

export function words(s: string): string {
  const w = s.replace(/[_-]+/g, " ").trim();
  return w.charAt(0).toUpperCase() + w.slice(1);
}

/** Task kinds as vSphere names them ("vm.relocate" → "Migrate virtual machine"). */
const TASK_LABELS: Record<string, string> = {
  "vm.start": "Power on virtual machine",
  "vm.stop": "Power off virtual machine",
  "vm.reset": "Reset virtual machine",
  "vm.shutdown": "Shut down guest",
  "vm.relocate": "Migrate virtual machine",
  "vm.snapshot": "Take snapshot",
  "vm.revert": "Revert to snapshot",
  "vm.clone": "Clone virtual machine",
  "vm.backup": "Back up virtual machine",
  "vm.restore": "Restore virtual machine",
  "vm.create": "Create virtual machine",
  "vm.delete": "Delete virtual machine",
  "host.enter_maintenance": "Enter maintenance mode",
  "host.exit_maintenance": "Exit maintenance mode",
};

export function taskLabel(kind: string): string {
  return TASK_LABELS[kind] ?? words(kind.replace(/\./g, " "));
}
