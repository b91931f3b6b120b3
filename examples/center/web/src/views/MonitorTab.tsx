// Performance charts of a host or VM from `GET /api/vinfra/stats/{kind}/{name}`, at the
// roll-up level that matches the chosen window (20 s samples for an hour, and so on).

import { useState } from "preact/hooks";
import { enc, get } from "../api";
import { Empty, ErrorNote } from "../components/Card";
import { Chart } from "../components/Chart";
import { bytes } from "../format";
import { usePoll } from "../live/poll";
import { stats } from "../normalize";

const WINDOWS = [
  { id: "1h", label: "Past hour" },
  { id: "1d", label: "Past day" },
  { id: "1w", label: "Past week" },
  { id: "1y", label: "Past year" },
];

const BLUE = "#2f7ed8";
const GREEN = "#3a9d5d";
const ORANGE = "#e08a1e";

export function MonitorTab({ kind, name }: { kind: "host" | "vm"; name: string }) {
  const [window, setWindow] = useState("1h");
  const data = usePoll(async () => stats(await get(`/api/vinfra/stats/${kind}/${enc(name)}?window=${window}`)), 20_000, `${kind}:${name}:${window}`);
  const points = data.data ?? [];
  const times = points.map((p) => p.time);
  const col = (f: (p: (typeof points)[number]) => number | undefined) => points.map((p) => f(p) ?? null);
  const has = (values: (number | null)[]) => values.some((v) => v !== null);
  const disk = [
    { label: "Read", color: BLUE, values: col((p) => p.diskReadBytes) },
    { label: "Written", color: ORANGE, values: col((p) => p.diskWrittenBytes) },
    { label: "Read + written", color: BLUE, values: col((p) => p.diskBytes) },
  ].filter((s) => has(s.values));
  const net = [
    { label: "Received", color: BLUE, values: col((p) => p.netRxBytes) },
    { label: "Sent", color: ORANGE, values: col((p) => p.netTxBytes) },
    { label: "Received + sent", color: BLUE, values: col((p) => p.netBytes) },
  ].filter((s) => has(s.values));
  const cpu = col((p) => p.cpuPercent);
  const memory = col((p) => p.memoryMib);

  return (
    <div class="monitor" data-testid="monitor">
      <div class="monitor-head">
        <h3>Performance</h3>
        <div class="segmented" role="radiogroup" aria-label="Time window">
          {WINDOWS.map((w) => (
            <button key={w.id} class={w.id === window ? "seg active" : "seg"} onClick={() => setWindow(w.id)} aria-pressed={w.id === window}>
              {w.label}
            </button>
          ))}
        </div>
      </div>
      <ErrorNote message={data.error && `Statistics cannot be read: ${data.error}`} />
      {!data.error && !data.loading && points.length === 0 && <Empty>No samples yet in this window: the first come after a poll interval.</Empty>}
      {points.length === 1 && (
        <Empty>
          One sample so far (CPU {points[0].cpuPercent?.toFixed(1) ?? "—"} %, memory {points[0].memoryMib?.toFixed(0) ?? "—"} MiB): the chart starts with the next one (every 20 s).
        </Empty>
      )}
      {points.length > 1 && (
        <div class="chart-grid">
          {has(cpu) && <Chart title="CPU" unit="%" times={times} series={[{ label: "CPU", color: BLUE, values: cpu }]} format={(v) => `${v.toFixed(v < 10 ? 1 : 0)} %`} />}
          {has(memory) && <Chart title="Memory" unit="MiB" times={times} series={[{ label: "Memory", color: GREEN, values: memory }]} format={(v) => `${v.toFixed(0)}`} />}
          {disk.length > 0 && <Chart title="Disk" unit="bytes" times={times} series={disk} format={bytes} floor={4096} />}
          {net.length > 0 && <Chart title="Network" unit="bytes" times={times} series={net} format={bytes} floor={4096} />}
        </div>
      )}
    </div>
  );
}
