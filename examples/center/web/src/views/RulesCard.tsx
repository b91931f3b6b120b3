// The cluster's DRS rules: keep VMs together, separate them, or bind them to hosts;
// enabled or not; new, edit and delete (operators). DRS honours the enabled ones; the
// DRS card shows the moves they need and the rules it had to leave out.

import { useState } from "preact/hooks";
import { deleteRule } from "../actions";
import { enc, get } from "../api";
import { Card, Empty, ErrorNote } from "../components/Card";
import { Dialog } from "../components/Dialog";
import { notify } from "../components/Toasts";
import type { ViewContext } from "../context";
import { RuleDialog } from "../dialogs/RuleDialog";
import { usePoll } from "../live/poll";
import { modeLabel, readRules, ruleKindLabel, type Rule } from "../policy";

type Open = { kind: "new" } | { kind: "edit" | "delete"; rule: Rule };

export function RulesCard({ cluster, vms, hosts, ctx }: { cluster: string; vms: string[]; hosts: string[]; ctx: ViewContext }) {
  const polled = usePoll(async () => readRules(await get(`/api/vcenter/cluster/${enc(cluster)}/rules`)), 10_000, `rules:${cluster}`);
  const rules = polled.data ?? [];
  const [open, setOpen] = useState<Open | undefined>(undefined);
  const readOnly = ctx.canOperate ? undefined : "Only operators and administrators change rules";
  const saved = () => {
    polled.refresh();
    ctx.refresh();
  };
  return (
    <Card
      title={`Rules (${rules.length})`}
      actions={
        <button class="button small" onClick={() => setOpen({ kind: "new" })} disabled={!!readOnly} title={readOnly} data-action="rule-new">
          New rule
        </button>
      }
    >
      {polled.error && <ErrorNote message={`Rules: ${polled.error}`} />}
      {rules.length === 0 ? (
        <Empty>{polled.loading ? "Loading…" : "No rules."}</Empty>
      ) : (
        <table class="grid compact" data-testid="drs-rules">
          <thead>
            <tr>
              <th>Rule</th>
              <th>Type</th>
              <th>Members</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {rules.map((r) => (
              <tr key={r.name} data-rule={r.name} class={r.enabled ? "" : "muted"}>
                <td>
                  {r.name}
                  {!r.enabled && <span class="chip">disabled</span>}
                </td>
                <td>{ruleKindLabel(r.kind)}</td>
                <td>
                  {r.vms.join(", ")}
                  {r.kind === "vm_host" && (
                    <span class="muted">
                      {" "}
                      {modeLabel(r.mode).toLowerCase()} {r.hosts.join(", ")}
                    </span>
                  )}
                </td>
                <td class="row-actions">
                  <button class="button small" onClick={() => setOpen({ kind: "edit", rule: r })} disabled={!!readOnly} title={readOnly} data-action="rule-edit">
                    Edit
                  </button>
                  <button class="button small danger" onClick={() => setOpen({ kind: "delete", rule: r })} disabled={!!readOnly} title={readOnly} data-action="rule-delete">
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open?.kind === "new" && <RuleDialog cluster={cluster} vms={vms} hosts={hosts} onClose={() => setOpen(undefined)} onSaved={saved} />}
      {open?.kind === "edit" && <RuleDialog cluster={cluster} rule={open.rule} vms={vms} hosts={hosts} onClose={() => setOpen(undefined)} onSaved={saved} />}
      {open?.kind === "delete" && (
        <Dialog
          title={`Delete rule ${open.rule.name}`}
          submitLabel="Delete"
          danger
          onClose={() => setOpen(undefined)}
          onSubmit={async () => {
            await deleteRule(cluster, open.rule.name);
            notify(`Rule ${open.rule.name} deleted`);
            saved();
          }}
        >
          <p>DRS no longer honours it.</p>
        </Dialog>
      )}
    </Card>
  );
}
