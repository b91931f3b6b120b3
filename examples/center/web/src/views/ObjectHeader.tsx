// The main panel's header: the object's icon and name, a status line, its action buttons
// (disabled, with the reason, when the user's role may not use them).

import type { ComponentChildren } from "preact";

export function ObjectHeader({ icon, title, kind, status, actions, locked }: { icon: ComponentChildren; title: string; kind: string; status?: ComponentChildren; actions?: ComponentChildren; locked?: string }) {
  return (
    <header class="object-header">
      <div class="object-icon">{icon}</div>
      <div class="object-title">
        <div class="object-kind">{kind}</div>
        <h1 data-testid="object-name">{title}</h1>
        {status && <div class="object-status">{status}</div>}
      </div>
      {actions && (
        // A fieldset disables every button at once when the user's role may not act.
        <fieldset class="toolbar" disabled={locked !== undefined} title={locked}>
          {actions}
        </fieldset>
      )}
    </header>
  );
}
