// The cluster's DRS card: the imbalance now against the target the threshold aims at,
// the automation level and threshold, the recommended migrations (VMware's priority
// 1 … 5, 1 the most needed) each with Apply, "Run DRS now", the rules no migration can
// repair and the VMs left out because a task of theirs still runs. Read every few
// seconds, and again when a task ends or an event arrives.

import { useEffect, useState } from "preact/hooks";
import { applyDrs, runDrs } from "../actions";
import { enc, get } from "../api";
import { ApiError } from "../api";
import { Card, Empty, ErrorNote, Props } from "../components/Card";
import { notify } from "../components/Toasts";
import type { ViewContext } from "../context";
import { dash, words } from "../format";
import { usePoll } from "../live/poll";
import { href } from "../route";

export interface DrsRecommendation {
  vm: string;
  from: string;
  to: string;
  priority: number;
  gain?: number;
  reason?: string;
  automatic: boolean;
}

export interface DrsPass {
  automation?: string;
  threshold?: number;
  imbalance?: number;
  imbalanceAfter?: number;
  target?: number;
  recommendations: DrsRecommendation[];
  unresolved: string[];
  applied: DrsRecommendation[];
  busy: string[];
}

const POLL_MS = 5000;
const str = (v: unknown) => (typeof v === "string" ? v : undefined);
const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const arr = (v: unknown) => (Array.isArray(v) ? v : []);

function readRec(v: unknown): DrsRecommendation | undefined {
  const o = (v && typeof v === "object" ? v : {}) as Record<string, unknown>;
  const vm = str(o.vm);
  const to = str(o.to);
  if (!vm || !to) return undefined;
  return { vm, to, from: str(o.from) ?? dash, priority: num(o.priority) ?? 5, gain: num(o.gain), reason: str(o.reason), automatic: o.automatic === true };
}

export function readPass(v: unknown): DrsPass {
  const o = (v && typeof v === "object" ? v : {}) as Record<string, unknown>;
  const recs = (x: unknown) => arr(x).map(readRec).filter((r): r is DrsRecommendation => r !== undefined);
  return {
    automation: str(o.automation),
    threshold: num(o.threshold),
    imbalance: num(o.imbalance),
    imbalanceAfter: num(o.imbalance_after),
    target: num(o.target),
    recommendations: recs(o.recommendations),
    unresolved: arr(o.unresolved).map(String),
    applied: recs(o.applied),
    busy: arr(o.busy).map(String),
  };
}

/** VMware's wording of a recommendation's priority. */
const PRIORITY: Record<number, string> = {
  1: "mandatory: a broken rule or a host over capacity",
  2: "significant improvement",
  3: "good improvement",
  4: "moderate improvement",
  5: "slight improvement",
};

const fixed = (v: number | undefined) => (v === undefined ? dash : v.toFixed(3));

/** A gain to three places; a positive one too small for them reads "< 0.001", not as
 * no gain at all. */
function gainText(gain: number): string {
  return gain > 0 && gain < 0.0005 ? "< 0.001" : gain.toFixed(3);
}

/** The imbalance on a bar: green at or under the target, amber above it. */
function Balance({ pass }: { pass: DrsPass }) {
  const { imbalance, target, imbalanceAfter } = pass;
  if (imbalance === undefined) return null;
  const scale = Math.max(imbalance, target ?? 0, 0.0001) * 1.15;
  const over = target !== undefined && imbalance > target;
  return (
    <div class="drs-balance" data-testid="drs-balance" data-over={over ? "true" : "false"}>
      <div class="meter-head">
        <span class="meter-label">Load imbalance</span>
        <span>
          <strong data-testid="drs-imbalance">{fixed(imbalance)}</strong>
          <span class="muted"> · target ≤ {fixed(target)}</span>
        </span>
      </div>
      <div class="meter-bar drs-bar">
        <div class={`meter-fill ${over ? "mid" : ""}`} style={{ width: `${(imbalance / scale) * 100}%` }} />
        {target !== undefined && <div class="drs-target" style={{ left: `${(target / scale) * 100}%` }} title={`target ${fixed(target)}`} />}
      </div>
      <div class="drs-verdict">
        {over ? (
          <span class="warn-text">
            Imbalanced{imbalanceAfter !== undefined && pass.recommendations.length > 0 ? ` — ${fixed(imbalanceAfter)} after the recommendations` : ""}
          </span>
        ) : (
          <span class="ok-note">Balanced: within the threshold's target</span>
        )}
      </div>
    </div>
  );
}

export function DrsRecommendations({ cluster, automation, threshold, ctx }: { cluster: string; automation?: string; threshold?: number; ctx: ViewContext }) {
  const recs = usePoll(async () => {
    try {
      return readPass(await get(`/api/vcenter/cluster/${enc(cluster)}/drs/recommendations`));
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) return undefined;
      throw e;
    }
  }, POLL_MS, `drs:${cluster}`);
  // A migration that ended, or anything the event log says, changes the pass.
  useEffect(() => recs.refresh(), [ctx.tasksEnded, ctx.events.generation, automation, threshold]);
  const [applying, setApplying] = useState<string | undefined>(undefined);
  const [running, setRunning] = useState(false);
  const [failure, setFailure] = useState<string | undefined>(undefined);
  const [lastRun, setLastRun] = useState<string | undefined>(undefined);
  const pass = recs.data;
  const readOnly = ctx.canOperate ? undefined : "Your role (read-only) cannot apply DRS recommendations";
  // The pass is read more often than the cluster (and again when its settings change).
  const level = pass?.automation ?? automation;
  const thresh = pass?.threshold ?? threshold;

  const apply = async (r: DrsRecommendation) => {
    setApplying(r.vm);
    setFailure(undefined);
    try {
      await applyDrs(cluster, r.vm, r.to);
      notify(`Migrate ${r.vm} to ${r.to} started (DRS)`);
      ctx.refresh();
    } catch (e) {
      setFailure(`Apply ${r.vm} → ${r.to}: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      setApplying(undefined);
      recs.refresh();
    }
  };
  const run = async () => {
    setRunning(true);
    setFailure(undefined);
    try {
      const done = readPass(await runDrs(cluster));
      const n = done.applied.length;
      const text =
        n > 0
          ? `DRS pass: ${n} migration${n === 1 ? "" : "s"} started`
          : `DRS pass: nothing started (${done.recommendations.length} recommendation${done.recommendations.length === 1 ? "" : "s"}${level && level !== "fully_automated" ? ", applied by hand at this automation level" : ""})`;
      setLastRun(text);
      notify(text);
      ctx.refresh();
    } catch (e) {
      setFailure(`Run DRS: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      setRunning(false);
      recs.refresh();
    }
  };

  const unavailable = recs.data === undefined && !recs.loading && !recs.error;
  return (
    <Card
      title="DRS"
      class="wide drs-card"
      actions={
        <button class="button small" onClick={run} disabled={!!readOnly || running || unavailable} title={readOnly} data-action="drs-run">
          {running ? "Running…" : "Run DRS now"}
        </button>
      }
    >
      <div class="drs-top">
        <Props
          rows={[
            ["Automation level", level ? words(level) : dash],
            ["Migration threshold", thresh ?? dash],
          ]}
        />
        {pass && <Balance pass={pass} />}
      </div>
      <ErrorNote message={failure} />
      {lastRun && <div class="info-note" data-testid="drs-last-run">{lastRun}</div>}
      {unavailable ? (
        <Empty>DRS is not served by this center.</Empty>
      ) : recs.error && !pass ? (
        <Empty>Recommendations cannot be read: {recs.error}</Empty>
      ) : !pass ? (
        <Empty>Loading…</Empty>
      ) : pass.recommendations.length === 0 ? (
        <Empty>No recommendations{pass.busy.length > 0 ? " now" : ": the cluster is balanced"}.</Empty>
      ) : (
        <table class="grid compact drs-recs" data-testid="drs-recommendations">
          <thead>
            <tr>
              <th title="1 = mandatory … 5 = slight improvement">Priority</th>
              <th>VM</th>
              <th>Migration</th>
              <th>Reason</th>
              <th class="num">Gain</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {pass.recommendations.map((r) => (
              <tr key={`${r.vm}>${r.to}`} data-drs-vm={r.vm} data-from={r.from} data-to={r.to} data-priority={r.priority}>
                <td>
                  <span class={`drs-priority p${r.priority}`} title={PRIORITY[r.priority] ?? ""}>
                    {r.priority}
                  </span>
                  {r.automatic && <span class="muted drs-auto" title="A fully automated cluster applies it on its own (within the threshold)">auto</span>}
                </td>
                <td>
                  <a href={href({ kind: "vm", name: r.vm })}>{r.vm}</a>
                </td>
                <td class="nowrap">
                  {r.from} <span class="muted">→</span> <strong>{r.to}</strong>
                </td>
                <td>{r.reason ?? dash}</td>
                <td class="num">{r.gain === undefined ? dash : gainText(r.gain)}</td>
                <td class="num">
                  <button class="button small primary" onClick={() => apply(r)} disabled={!!readOnly || applying !== undefined} title={readOnly} data-action="drs-apply">
                    {applying === r.vm ? "Applying…" : "Apply"}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {pass && pass.unresolved.length > 0 && (
        <div class="drs-section" data-testid="drs-unresolved">
          <h4>Rules DRS cannot satisfy</h4>
          <ul class="plain-list">
            {pass.unresolved.map((u) => (
              <li key={u} class="warn-text">
                {u}
              </li>
            ))}
          </ul>
        </div>
      )}
      {pass && pass.busy.length > 0 && (
        <div class="drs-section muted" data-testid="drs-busy">
          Left out while a task of theirs runs:{" "}
          {pass.busy.map((vm, i) => (
            <span key={vm}>
              {i > 0 && ", "}
              <a href={href({ kind: "vm", name: vm })}>{vm}</a>
            </span>
          ))}
        </div>
      )}
    </Card>
  );
}
