// Creates or edits a DRS rule of a cluster: keep VMs together (affinity), separate them
// (anti-affinity), or bind them to a group of hosts (must/should run on, or not); the VMs
// and hosts picked from the cluster's.

import { useState } from "preact/hooks";
import { createRule, updateRule } from "../actions";
import { Dialog, Field } from "../components/Dialog";
import { notify } from "../components/Toasts";
import { RULE_KINDS, VM_HOST_MODES, type Rule } from "../policy";

function Picks({ names, chosen, onChange, testid }: { names: string[]; chosen: string[]; onChange: (v: string[]) => void; testid: string }) {
  return (
    <div class="pick-list" data-testid={testid}>
      {names.length === 0 && <p class="empty">None.</p>}
      {names.map((n) => (
        <label class="check" key={n}>
          <input
            type="checkbox"
            value={n}
            checked={chosen.includes(n)}
            onChange={(e) => onChange((e.target as HTMLInputElement).checked ? [...chosen, n] : chosen.filter((c) => c !== n))}
          />
          {n}
        </label>
      ))}
    </div>
  );
}

export function RuleDialog({ cluster, rule, vms, hosts, onClose, onSaved }: { cluster: string; rule?: Rule; vms: string[]; hosts: string[]; onClose: () => void; onSaved: () => void }) {
  const [name, setName] = useState(rule?.name ?? "");
  const [kind, setKind] = useState(rule?.kind ?? "anti_affinity");
  const [enabled, setEnabled] = useState(rule?.enabled ?? true);
  const [chosenVms, setVms] = useState(rule?.vms ?? []);
  const [chosenHosts, setHosts] = useState(rule?.hosts ?? []);
  const [mode, setMode] = useState(rule?.mode ?? "should_run_on");
  const vmHost = kind === "vm_host";
  // A VM the rule names that left the inventory still shows, so it can be unpicked.
  const vmNames = [...new Set([...vms, ...(rule?.vms ?? [])])];
  return (
    <Dialog
      title={rule ? `Edit rule ${rule.name}` : `New DRS rule in ${cluster}`}
      submitLabel={rule ? "Save" : "Create"}
      canSubmit={name.trim() !== ""}
      onClose={onClose}
      onSubmit={async () => {
        const body = vmHost ? { kind, enabled, vms: chosenVms, hosts: chosenHosts, mode } : { kind, enabled, vms: chosenVms, hosts: [] };
        if (rule) await updateRule(cluster, rule.name, body);
        else await createRule(cluster, name.trim(), body);
        notify(rule ? `Rule ${rule.name} saved` : `Rule ${name.trim()} created`);
        onSaved();
      }}
    >
      {!rule && (
        <Field label="Name">
          <input value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} data-field="rule-name" />
        </Field>
      )}
      <Field label="Type">
        <select value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value)} data-field="rule-kind">
          {RULE_KINDS.map(([v, l]) => (
            <option key={v} value={v}>
              {l}
            </option>
          ))}
        </select>
      </Field>
      <label class="check">
        <input type="checkbox" checked={enabled} onChange={(e) => setEnabled((e.target as HTMLInputElement).checked)} />
        Enabled
      </label>
      <Field label="VMs" hint={vmHost ? "At least one." : "At least two."}>
        <Picks names={vmNames} chosen={chosenVms} onChange={setVms} testid="rule-vms" />
      </Field>
      {vmHost && (
        <>
          <Field label="How">
            <select value={mode} onChange={(e) => setMode((e.target as HTMLSelectElement).value)}>
              {VM_HOST_MODES.map(([v, l]) => (
                <option key={v} value={v}>
                  {l}
                </option>
              ))}
            </select>
          </Field>
          <Field label="Hosts">
            <Picks names={hosts} chosen={chosenHosts} onChange={setHosts} testid="rule-hosts" />
          </Field>
        </>
      )}
    </Dialog>
  );
}
