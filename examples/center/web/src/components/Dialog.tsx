// A modal dialog around one action: its form, a confirm button that runs the action, the
// server's error shown in place (the dialog stays open so the user can correct the input).

import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

export interface DialogProps {
  title: string;
  submitLabel: string;
  danger?: boolean;
  /** Runs the action; a thrown error is shown in the dialog. */
  onSubmit: () => Promise<void>;
  onClose: () => void;
  canSubmit?: boolean;
  children?: ComponentChildren;
}

export function Dialog({ title, submitLabel, danger, onSubmit, onClose, canSubmit = true, children }: DialogProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const box = useRef<HTMLFormElement>(null);

  useEffect(() => {
    const first = box.current?.querySelector<HTMLElement>("input, select, button.primary, button.danger");
    first?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape" && !busy) onClose();
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [busy, onClose]);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (busy || !canSubmit) return;
    setBusy(true);
    setError(undefined);
    try {
      await onSubmit();
      onClose();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setBusy(false);
    }
  };

  return (
    <div class="modal-backdrop" role="dialog" aria-modal="true" onMouseDown={(e) => e.target === e.currentTarget && !busy && onClose()}>
      <form class="modal" aria-label={title} ref={box} onSubmit={submit} data-testid="dialog">
        <header class="modal-head">
          <h2>{title}</h2>
          <button type="button" class="icon-button" aria-label="Close" onClick={onClose} disabled={busy}>
            ×
          </button>
        </header>
        <div class="modal-body">
          {children}
          {error && (
            <div class="error-note" role="alert" data-testid="dialog-error">
              {error}
            </div>
          )}
        </div>
        <footer class="modal-foot">
          <button type="button" class="button" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" class={danger ? "button danger" : "button primary"} disabled={busy || !canSubmit} data-testid="dialog-submit">
            {busy ? "Working…" : submitLabel}
          </button>
        </footer>
      </form>
    </div>
  );
}

export function Field({ label, hint, children }: { label: string; hint?: string; children: ComponentChildren }) {
  return (
    <label class="field">
      <span class="field-label">{label}</span>
      {children}
      {hint && <span class="field-hint">{hint}</span>}
    </label>
  );
}
