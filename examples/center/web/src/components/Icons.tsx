// Small inline SVG icons (16 px, currentColor): no icon font to load.

import type { JSX } from "preact";
import type { HostState, PowerState } from "../types";

type Props = { class?: string; title?: string };

const svg = (body: JSX.Element, { class: cls, title }: Props, extra = "") => (
  <svg class={`icon ${extra} ${cls ?? ""}`} viewBox="0 0 16 16" width="16" height="16" aria-hidden={title ? undefined : "true"} role={title ? "img" : undefined}>
    {title && <title>{title}</title>}
    {body}
  </svg>
);

export const DatacenterIcon = (p: Props) =>
  svg(
    <g fill="none" stroke="currentColor" stroke-width="1.3">
      <path d="M2 14V6l6-4 6 4v8z" />
      <path d="M5 14V9h6v5" />
    </g>,
    p,
  );

export const FolderIcon = (p: Props) =>
  svg(<path d="M1.5 4.5v8h13v-7H7.5L6 4H2z" fill="none" stroke="currentColor" stroke-width="1.3" stroke-linejoin="round" />, p);

export const FileIcon = (p: Props) =>
  svg(
    <g fill="none" stroke="currentColor" stroke-width="1.3" stroke-linejoin="round">
      <path d="M3.5 1.5h6l3 3v10h-9z" />
      <path d="M9.5 1.5v3h3" />
    </g>,
    p,
  );

export const ClusterIcon = (p: Props) =>
  svg(
    <g fill="none" stroke="currentColor" stroke-width="1.3">
      <rect x="1.5" y="2" width="13" height="4" rx="1" />
      <rect x="1.5" y="10" width="13" height="4" rx="1" />
      <path d="M8 6v4" />
    </g>,
    p,
  );

export const HostIcon = (p: Props) =>
  svg(
    <g fill="none" stroke="currentColor" stroke-width="1.3">
      <rect x="1.5" y="2.5" width="13" height="4.5" rx="1" />
      <rect x="1.5" y="9" width="13" height="4.5" rx="1" />
      <circle cx="4.5" cy="4.75" r=".6" fill="currentColor" />
      <circle cx="4.5" cy="11.25" r=".6" fill="currentColor" />
    </g>,
    p,
  );

export const VmIcon = (p: Props) =>
  svg(
    <g fill="none" stroke="currentColor" stroke-width="1.3">
      <rect x="1.5" y="2.5" width="13" height="9" rx="1" />
      <path d="M5 14h6M8 11.5V14" />
    </g>,
    p,
  );

/** The small badge on a VM's icon: a green triangle when running, and so on. */
export function PowerBadge({ state }: { state: PowerState }) {
  const label = { running: "running", paused: "paused", shutting_down: "shutting down", shut_off: "off", crashed: "crashed", unknown: "unknown" }[state];
  return (
    <span class={`power-badge power-${state}`} title={label} aria-label={label}>
      <svg viewBox="0 0 8 8" width="8" height="8" aria-hidden="true">
        {state === "running" && <path d="M1.5 0.5l6 3.5-6 3.5z" fill="currentColor" />}
        {state === "paused" && <path d="M1 1h2v6H1zM5 1h2v6H5z" fill="currentColor" />}
        {state === "shutting_down" && <path d="M1 1h6v6H1z" fill="currentColor" opacity=".6" />}
        {state === "shut_off" && <rect x="1" y="1" width="6" height="6" rx="1" fill="currentColor" />}
        {state === "crashed" && <path d="M1 1l6 6M7 1L1 7" stroke="currentColor" stroke-width="1.8" />}
        {state === "unknown" && <circle cx="4" cy="4" r="2.5" fill="currentColor" />}
      </svg>
    </span>
  );
}

export function HostBadge({ state }: { state: HostState }) {
  if (state === "connected") return null;
  const label = state === "maintenance" ? "maintenance mode" : state === "not_responding" ? "not responding" : "unknown";
  return (
    <span class={`host-badge host-${state}`} title={label} aria-label={label}>
      {state === "maintenance" ? "M" : "!"}
    </span>
  );
}

export const ChevronIcon = ({ open }: { open: boolean }) => (
  <svg class={`chevron ${open ? "open" : ""}`} viewBox="0 0 16 16" width="12" height="12" aria-hidden="true">
    <path d="M6 3l5 5-5 5" fill="none" stroke="currentColor" stroke-width="1.6" />
  </svg>
);

export const Logo = () => (
  <svg class="logo" viewBox="0 0 24 24" width="22" height="22" aria-hidden="true">
    <rect x="2" y="3" width="20" height="7" rx="2" fill="#4fa3ff" />
    <rect x="2" y="14" width="20" height="7" rx="2" fill="#9fd0ff" />
    <circle cx="6" cy="6.5" r="1.2" fill="#fff" />
    <circle cx="6" cy="17.5" r="1.2" fill="#1b4f8a" />
  </svg>
);
