// Confirms a power operation; the hard ones (power off, reset) say what they lose. A
// power-on lets DRS choose the host (the default) or runs on a host the user picks.

import { useState } from "preact/hooks";
import { powerVm, type PowerAction } from "../actions";
import { Dialog } from "../components/Dialog";
import { HostIcon } from "../components/Icons";
import { notify } from "../components/Toasts";
import { mib, percent } from "../format";
import type { Host } from "../types";

const TEXT: Record<PowerAction, { title: string; button: string; body: string; danger: boolean }> = {
  start: { title: "Power on", button: "Power on", body: "Start the VM on the host DRS recommends, or on a host you pick.", danger: false },
  shutdown: { title: "Shut down guest", button: "Shut down", body: "Ask the guest to shut down cleanly.", danger: false },
  stop: { title: "Power off", button: "Power off", body: "Stop the VM at once, like pulling its power cord. Unsaved guest data is lost.", danger: true },
  reset: { title: "Reset", button: "Reset", body: "Restart the VM at once without a clean shutdown.", danger: true },
};

/** The choice that names no host: DRS places the VM. */
const DRS = "";

export function PowerDialog({ vm, action, hosts = [], onClose, onStarted }: { vm: string; action: PowerAction; hosts?: Host[]; onClose: () => void; onStarted: () => void }) {
  const t = TEXT[action];
  const [host, setHost] = useState(DRS);
  const usable = (h: Host) => h.state === "connected";
  return (
    <Dialog
      title={`${t.title}: ${vm}`}
      submitLabel={t.button}
      danger={t.danger}
      onClose={onClose}
      onSubmit={async () => {
        await powerVm(vm, action, action === "start" && host !== DRS ? host : undefined);
        notify(`${t.title} ${vm}${action === "start" ? (host === DRS ? " (placed by DRS)" : ` on ${host}`) : ""} started`);
        onStarted();
      }}
    >
      <p>{t.body}</p>
      {action === "start" && (
        <div class="choice-list" role="radiogroup" aria-label="Host">
          <label class={`choice ${host === DRS ? "chosen" : ""}`} data-host="">
            <input type="radio" name="host" value="" checked={host === DRS} onChange={() => setHost(DRS)} />
            <span class="drs-choice-icon">⚖</span>
            <span class="choice-name">Let DRS choose</span>
            <span class="choice-detail muted">recommended: the host that balances the cluster best</span>
          </label>
          {hosts.map((h) => (
            <label key={h.name} class={`choice ${usable(h) ? "" : "disabled"} ${host === h.name ? "chosen" : ""}`} data-host={h.name}>
              <input type="radio" name="host" value={h.name} checked={host === h.name} disabled={!usable(h)} onChange={() => setHost(h.name)} />
              <HostIcon />
              <span class="choice-name">{h.name}</span>
              <span class="choice-detail muted">
                {usable(h) ? `CPU ${percent(h.cpuPercent)} · memory ${mib(h.memoryUsedMib)} of ${mib(h.memoryMib)}` : h.state.replace(/_/g, " ")}
              </span>
            </label>
          ))}
        </div>
      )}
    </Dialog>
  );
}
