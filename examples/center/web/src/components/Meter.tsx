// A usage bar with its figures: "CPU 23 % of 4 vCPUs".

export function Meter({ label, used, total, usedText, totalText }: { label: string; used?: number; total?: number; usedText: string; totalText?: string }) {
  const fraction = used !== undefined && total ? Math.min(1, Math.max(0, used / total)) : undefined;
  const level = fraction === undefined ? "" : fraction > 0.9 ? "high" : fraction > 0.7 ? "mid" : "low";
  return (
    <div class="meter">
      <div class="meter-head">
        <span class="meter-label">{label}</span>
        <span class="meter-figures">
          <strong>{usedText}</strong>
          {totalText && <span class="muted"> of {totalText}</span>}
        </span>
      </div>
      <div class="meter-bar">
        <div class={`meter-fill ${level}`} style={{ width: `${((fraction ?? 0) * 100).toFixed(1)}%` }} />
      </div>
    </div>
  );
}
