// Reverts a shut-off VM's disks to a snapshot (the latest when none is named).

import { revertVm } from "../actions";
import { Dialog } from "../components/Dialog";
import { notify } from "../components/Toasts";

export function RevertDialog({ vm, snapshot, onClose, onStarted }: { vm: string; snapshot?: string; onClose: () => void; onStarted: () => void }) {
  const which = snapshot ? `snapshot ${snapshot}` : "its latest snapshot";
  return (
    <Dialog
      title={`Revert ${vm}`}
      submitLabel="Revert"
      danger
      onClose={onClose}
      onSubmit={async () => {
        await revertVm(vm, snapshot);
        notify(`Revert of ${vm} to ${which} started`);
        onStarted();
      }}
    >
      <p>
        Put the disks of {vm} back as they were at {which}. What was written since is lost. The VM must be shut off.
      </p>
    </Dialog>
  );
}
