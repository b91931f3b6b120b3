// Enters or leaves maintenance mode; entering evacuates the host's VMs through DRS.

import { maintenance } from "../actions";
import { Dialog } from "../components/Dialog";
import { notify } from "../components/Toasts";

export function MaintenanceDialog({ host, enter, vmCount, onClose, onStarted }: { host: string; enter: boolean; vmCount: number; onClose: () => void; onStarted: () => void }) {
  return (
    <Dialog
      title={enter ? `Enter maintenance mode: ${host}` : `Exit maintenance mode: ${host}`}
      submitLabel={enter ? "Enter maintenance" : "Exit maintenance"}
      onClose={onClose}
      onSubmit={async () => {
        await maintenance(host, enter);
        notify(`${enter ? "Enter" : "Exit"} maintenance on ${host} started`);
        onStarted();
      }}
    >
      {enter ? (
        <p>
          The host takes no new VMs and HA places nothing on it.{" "}
          {vmCount > 0 ? `Its ${vmCount} running VM${vmCount === 1 ? "" : "s"} will be migrated to other hosts first.` : "It runs no VM."}
        </p>
      ) : (
        <p>The host takes VMs again.</p>
      )}
    </Dialog>
  );
}
