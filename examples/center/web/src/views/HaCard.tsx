// The cluster's HA card: admission control on or off and its policy, the host failures
// the cluster tolerates now against those its policy asks, the failover capacity (slots
// or reserved percentages) and each host's HA verdict as the hosts' agents see it. Read
// every few seconds (`GET …/ha`), and again when a task ends or an event arrives.

import { useEffect } from "preact/hooks";
import { ApiError, enc, get } from "../api";
import { Card, Empty, Props } from "../components/Card";
import { Meter } from "../components/Meter";
import type { ViewContext } from "../context";
import { dash, duration, mib, percent, words } from "../format";
import { usePoll } from "../live/poll";
import { href } from "../route";

export interface HaHost {
  name: string;
  state: string;
  verdict?: string;
  views: { by: string; verdict: string }[];
  heardMsAgo?: number;
  seenMsAgo?: number;
}

export interface HaStatus {
  admissionControl: boolean;
  policy: string;
  failuresAsked?: number;
  failuresTolerated?: number;
  satisfied: boolean;
  slots: { cpuMhz?: number; memoryMib?: number; total?: number; used?: number; failover?: number };
  percentage: { cpuFree?: number; memoryFree?: number; cpuAsked?: number; memoryAsked?: number; memoryCapacityMib?: number; memoryReservedMib?: number };
  hosts: HaHost[];
}

const POLL_MS = 5000;
const obj = (v: unknown) => (v && typeof v === "object" ? v : {}) as Record<string, unknown>;
const str = (v: unknown) => (typeof v === "string" ? v : undefined);
const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const arr = (v: unknown) => (Array.isArray(v) ? v : []);

export function readHa(v: unknown): HaStatus {
  const o = obj(v);
  const s = obj(o.slots);
  const p = obj(o.percentage);
  return {
    admissionControl: o.admission_control === true,
    policy: str(o.policy) ?? "slots",
    failuresAsked: num(o.failures_asked),
    failuresTolerated: num(o.failures_tolerated),
    satisfied: o.satisfied === true,
    slots: { cpuMhz: num(s.slot_cpu_mhz), memoryMib: num(s.slot_memory_mib), total: num(s.total), used: num(s.used), failover: num(s.failover) },
    percentage: {
      cpuFree: num(p.cpu_free_percent),
      memoryFree: num(p.memory_free_percent),
      cpuAsked: num(p.cpu_asked_percent),
      memoryAsked: num(p.memory_asked_percent),
      memoryCapacityMib: num(p.memory_capacity_mib),
      memoryReservedMib: num(p.memory_reserved_mib),
    },
    hosts: arr(o.hosts).map((h) => {
      const x = obj(h);
      return {
        name: str(x.name) ?? "?",
        state: str(x.state) ?? "not_responding",
        verdict: str(x.verdict),
        views: arr(x.views).map((w) => ({ by: str(obj(w).by) ?? "?", verdict: str(obj(w).verdict) ?? "unknown" })),
        heardMsAgo: num(x.heard_ms_ago),
        seenMsAgo: num(x.seen_ms_ago),
      };
    }),
  };
}

/** Heartbeats come every 250 ms: under a second in ms. */
const ago = (ms: number | undefined) => (ms === undefined ? dash : ms < 1000 ? `${Math.round(ms)} ms ago` : `${duration(ms)} ago`);

function Capacity({ ha }: { ha: HaStatus }) {
  if (ha.policy === "percentage") {
    const p = ha.percentage;
    return (
      <Props
        rows={[
          ["CPU unreserved", `${percent(p.cpuFree)} (keeps ${p.cpuAsked ?? dash} %)`],
          ["Memory unreserved", `${percent(p.memoryFree)} (keeps ${p.memoryAsked ?? dash} %)`],
        ]}
      />
    );
  }
  const s = ha.slots;
  return (
    <>
      <Meter label="Slots used" used={s.used} total={s.total || undefined} usedText={`${s.used ?? dash}`} totalText={s.total !== undefined ? `${s.total} slots` : undefined} />
      <Props
        rows={[
          ["Slot size", s.cpuMhz !== undefined ? `${s.cpuMhz} MHz · ${mib(s.memoryMib)}` : dash],
          [`Slots left after ${ha.failuresAsked ?? dash} failure${ha.failuresAsked === 1 ? "" : "s"}`, s.failover ?? dash],
        ]}
      />
    </>
  );
}

export function HaCard({ cluster, ctx }: { cluster: string; ctx: ViewContext }) {
  const status = usePoll(async () => {
    try {
      return readHa(await get(`/api/vcenter/cluster/${enc(cluster)}/ha`));
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) return undefined;
      throw e;
    }
  }, POLL_MS, `ha:${cluster}`);
  // A power-on, a failover or a settings change moves the numbers.
  useEffect(() => status.refresh(), [ctx.tasksEnded, ctx.events.generation]);
  const ha = status.data;
  return (
    <Card title="HA" class="ha-card">
      {status.error && !ha ? (
        <Empty>HA status cannot be read: {status.error}</Empty>
      ) : !ha ? (
        <Empty>{status.loading ? "Loading…" : "HA status is not served by this center."}</Empty>
      ) : (
        <div data-testid="ha-card">
          <Props
            rows={[
              ["Admission control", <span class={`chip ${ha.admissionControl ? "verdict-alive" : "warn"}`} data-testid="ha-admission">{ha.admissionControl ? "On" : "Off"}</span>],
              ["Policy", ha.policy === "percentage" ? "Percentage of cluster resources" : "Host failures (slots)"],
              [
                "Host failures tolerated",
                <span data-testid="ha-failures">
                  <strong>{ha.failuresTolerated ?? dash}</strong>
                  <span class="muted"> now · {ha.failuresAsked ?? dash} asked</span>
                </span>,
              ],
            ]}
          />
          <Capacity ha={ha} />
          {ha.satisfied ? (
            <div class="ok-note">Failover capacity meets the policy</div>
          ) : (
            <div class="warn-text" data-testid="ha-short">
              Not enough failover capacity for the policy{ha.admissionControl ? ": power-ons are refused" : ""}
            </div>
          )}
          {ha.hosts.length === 0 ? (
            <Empty>No hosts.</Empty>
          ) : (
            <table class="grid compact" data-testid="ha-hosts">
              <thead>
                <tr>
                  <th>Host</th>
                  <th>HA verdict</th>
                  <th>Seen by</th>
                  <th class="num">Last heartbeat</th>
                  <th class="num">Last answer</th>
                </tr>
              </thead>
              <tbody>
                {ha.hosts.map((h) => (
                  <tr key={h.name} data-host={h.name}>
                    <td>
                      <a href={href({ kind: "host", name: h.name })}>{h.name}</a>
                    </td>
                    <td>{h.verdict ? <span class={`chip verdict-${h.verdict}`}>{words(h.verdict)}</span> : dash}</td>
                    <td class="muted">{h.views.length ? h.views.map((v) => `${v.by}: ${words(v.verdict)}`).join(", ") : dash}</td>
                    <td class="num">{ago(h.heardMsAgo)}</td>
                    <td class="num">{ago(h.seenMsAgo)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </Card>
  );
}
