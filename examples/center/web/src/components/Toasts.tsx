// Short notices in the corner ("Migrate web-1 started"), gone after a few seconds.

import { useEffect, useState } from "preact/hooks";

export interface Toast {
  id: number;
  text: string;
  kind: "info" | "error";
}

let next = 1;
const listeners = new Set<(t: Toast) => void>();

export function notify(text: string, kind: Toast["kind"] = "info"): void {
  const toast = { id: next++, text, kind };
  listeners.forEach((l) => l(toast));
}

const SHOW_MS = 5000;
const MAX_SHOWN = 4;

export function Toasts() {
  const [toasts, setToasts] = useState<Toast[]>([]);
  useEffect(() => {
    const add = (t: Toast) => {
      setToasts((old) => [...old, t].slice(-MAX_SHOWN));
      setTimeout(() => setToasts((old) => old.filter((o) => o.id !== t.id)), SHOW_MS);
    };
    listeners.add(add);
    return () => {
      listeners.delete(add);
    };
  }, []);
  return (
    <div class="toasts" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.id} class={`toast toast-${t.kind}`}>
          {t.text}
        </div>
      ))}
    </div>
  );
}
