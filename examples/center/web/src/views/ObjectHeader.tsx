// The main panel's header: the object's icon and name, a status line, its action buttons.

import type { ComponentChildren } from "preact";

export function ObjectHeader({ icon, title, kind, status, actions }: { icon: ComponentChildren; title: string; kind: string; status?: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <header class="object-header">
      <div class="object-icon">{icon}</div>
      <div class="object-title">
        <div class="object-kind">{kind}</div>
        <h1 data-testid="object-name">{title}</h1>
        {status && <div class="object-status">{status}</div>}
      </div>
      {actions && <div class="toolbar">{actions}</div>}
    </header>
  );
}
