// One uPlot line chart over time, sized to its box.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

export interface Series {
  label: string;
  color: string;
  values: (number | null)[];
}

const HEIGHT = 200;

export function Chart({ title, unit, times, series, format, floor = 1 }: { title: string; unit: string; times: number[]; series: Series[]; format?: (v: number) => string; floor?: number }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = series.map((s) => s.label).join("|");

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const fmt = format ?? ((v: number) => `${v}`);
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: HEIGHT,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), Math.max(max * 1.1, floor)] } },
      axes: [
        { stroke: "#5b6b7c", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dde3ea" } },
        { stroke: "#5b6b7c", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dde3ea" }, size: 64, values: (_u, vals) => vals.map((v) => (v === null ? "" : fmt(v))) },
      ],
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.6, fill: `${s.color}1a`, value: (_u: uPlot, v: number | null) => (v === null ? "—" : fmt(v)) }))],
    };
    const u = new uPlot(opts, [times, ...series.map((s) => s.values)] as uPlot.AlignedData, el);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height: HEIGHT }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Rebuilt only when the series change; new data goes through setData below.
  }, [shape]);

  useEffect(() => {
    plot.current?.setData([times, ...series.map((s) => s.values)] as uPlot.AlignedData);
  }, [times, series]);

  return (
    <figure class="chart">
      <figcaption>
        {title} <span class="muted">({unit})</span>
      </figcaption>
      <div ref={box} class="chart-box" />
    </figure>
  );
}
