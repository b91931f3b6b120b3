// Confirms a power operation; the hard ones (power off, reset) say what they lose.

import { powerVm, type PowerAction } from "../actions";
import { Dialog } from "../components/Dialog";
import { notify } from "../components/Toasts";

const TEXT: Record<PowerAction, { title: string; button: string; body: string; danger: boolean }> = {
  start: { title: "Power on", button: "Power on", body: "Start the VM. DRS places it when it runs nowhere.", danger: false },
  shutdown: { title: "Shut down guest", button: "Shut down", body: "Ask the guest to shut down cleanly.", danger: false },
  stop: { title: "Power off", button: "Power off", body: "Stop the VM at once, like pulling its power cord. Unsaved guest data is lost.", danger: true },
  reset: { title: "Reset", button: "Reset", body: "Restart the VM at once without a clean shutdown.", danger: true },
};

export function PowerDialog({ vm, action, onClose, onStarted }: { vm: string; action: PowerAction; onClose: () => void; onStarted: () => void }) {
  const t = TEXT[action];
  return (
    <Dialog
      title={`${t.title}: ${vm}`}
      submitLabel={t.button}
      danger={t.danger}
      onClose={onClose}
      onSubmit={async () => {
        await powerVm(vm, action);
        notify(`${t.title} ${vm} started`);
        onStarted();
      }}
    >
      <p>{t.body}</p>
    </Dialog>
  );
}
