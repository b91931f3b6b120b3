// The top bar: product name, where the live event stream stands, the user and log out.

import type { StreamState } from "../live/events";
import type { Me } from "../types";
import { Logo } from "./Icons";

const STREAM_LABEL: Record<StreamState, string> = {
  connecting: "Connecting…",
  live: "Live",
  polling: "Polling",
  offline: "Offline",
};

export function TopBar({ me, stream, onLogout }: { me?: Me; stream: StreamState; onLogout: () => void }) {
  return (
    <header class="topbar">
      <a class="brand" href="#/">
        <Logo />
        <span>
          vinfra <strong>Center</strong>
        </span>
      </a>
      <div class="topbar-spacer" />
      <span class={`stream stream-${stream}`} title="Event stream">
        <span class="dot" />
        {STREAM_LABEL[stream]}
      </span>
      <span class="user" data-testid="current-user">
        <span class="avatar">{(me?.user ?? "?").charAt(0).toUpperCase()}</span>
        <span>
          {me?.user ?? "…"}
          {me?.role && <span class="role"> · {me.role.replace(/_/g, "-")}</span>}
        </span>
      </span>
      <button class="button ghost" onClick={onLogout} data-testid="logout">
        Log out
      </button>
    </header>
  );
}
