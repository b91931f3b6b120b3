// Live migration (VMotion) to a host the user picks; hosts that cannot take the VM are
// shown but not offered.

import { useState } from "preact/hooks";
import { relocateVm } from "../actions";
import { Dialog } from "../components/Dialog";
import { HostIcon } from "../components/Icons";
import { notify } from "../components/Toasts";
import { mib, percent } from "../format";
import type { Host, Vm } from "../types";

function whyNot(host: Host, vm: Vm): string | undefined {
  if (host.name === vm.host) return "runs it now";
  if (host.state === "maintenance") return "in maintenance mode";
  if (host.state === "not_responding") return "not responding";
  return undefined;
}

export function MigrateDialog({ vm, hosts, onClose, onStarted }: { vm: Vm; hosts: Host[]; onClose: () => void; onStarted: () => void }) {
  const candidates = hosts.filter((h) => !whyNot(h, vm));
  const [target, setTarget] = useState(candidates[0]?.name ?? "");
  return (
    <Dialog
      title={`Migrate ${vm.name}`}
      submitLabel="Migrate"
      canSubmit={target !== ""}
      onClose={onClose}
      onSubmit={async () => {
        await relocateVm(vm.name, target);
        notify(`Migrate ${vm.name} to ${target} started`);
        onStarted();
      }}
    >
      <p>
        Live-migrate the running VM from <strong>{vm.host ?? "—"}</strong> to another host. The guest keeps running.
      </p>
      <div class="choice-list" role="radiogroup" aria-label="Destination host">
        {hosts.map((h) => {
          const reason = whyNot(h, vm);
          return (
            <label key={h.name} class={`choice ${reason ? "disabled" : ""} ${target === h.name ? "chosen" : ""}`} data-host={h.name}>
              <input type="radio" name="target" value={h.name} checked={target === h.name} disabled={!!reason} onChange={() => setTarget(h.name)} />
              <HostIcon />
              <span class="choice-name">{h.name}</span>
              <span class="choice-detail muted">{reason ?? `CPU ${percent(h.cpuPercent)} · memory ${mib(h.memoryUsedMib)} of ${mib(h.memoryMib)}`}</span>
            </label>
          );
        })}
      </div>
      {candidates.length === 0 && <div class="info-note">No other host can take this VM now.</div>}
    </Dialog>
  );
}
