// A titled box of the summary pages, and its key/value rows.

import type { ComponentChildren } from "preact";

export function Card({ title, children, actions, class: cls }: { title: string; children: ComponentChildren; actions?: ComponentChildren; class?: string }) {
  return (
    <section class={`card ${cls ?? ""}`}>
      <header class="card-head">
        <h3>{title}</h3>
        {actions && <div class="card-actions">{actions}</div>}
      </header>
      <div class="card-body">{children}</div>
    </section>
  );
}

export function Props({ rows }: { rows: [string, ComponentChildren][] }) {
  return (
    <dl class="props">
      {rows.map(([k, v]) => (
        <div class="prop" key={k}>
          <dt>{k}</dt>
          <dd data-prop={k}>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

export function ErrorNote({ message }: { message?: string }) {
  if (!message) return null;
  return (
    <div class="error-note" role="alert">
      {message}
    </div>
  );
}
