// Resource pools and DRS rules as the console sees them, read leniently from the
// server's JSON (as `normalize.ts` does for the rest): a missing field degrades one value.

export interface PoolAllocation {
  reservation: number;
  limit: number | null;
  shares: number;
  expandable: boolean;
}

export interface Pool {
  name: string;
  cluster?: string;
  parent: string | null;
  cpu: PoolAllocation;
  memory: PoolAllocation;
  vms: string[];
  children: string[];
}

export interface Rule {
  name: string;
  kind: string;
  enabled: boolean;
  vms: string[];
  hosts: string[];
  mode?: string;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === "object" ? (v as Obj) : {});
const str = (v: unknown) => (typeof v === "string" ? v : undefined);
const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);

function allocation(v: unknown): PoolAllocation {
  const o = obj(v);
  return {
    reservation: num(o.reservation) ?? 0,
    limit: num(o.limit) ?? null,
    shares: num(o.shares) ?? 1000,
    expandable: o.expandable_reservation !== false,
  };
}

export function readPools(v: unknown): Pool[] {
  return (Array.isArray(v) ? v : []).flatMap((p) => {
    const o = obj(p);
    const name = str(o.name);
    if (!name) return [];
    return [{ name, cluster: str(o.cluster), parent: str(o.parent) ?? null, cpu: allocation(o.cpu_allocation), memory: allocation(o.memory_allocation), vms: strings(o.vms), children: strings(o.children) }];
  });
}

export function readRules(v: unknown): Rule[] {
  return (Array.isArray(v) ? v : []).flatMap((r) => {
    const o = obj(r);
    const name = str(o.name);
    if (!name) return [];
    return [{ name, kind: str(o.kind) ?? "unknown", enabled: o.enabled !== false, vms: strings(o.vms), hosts: strings(o.hosts), mode: str(o.mode) }];
  });
}

/** The pools in tree order (each under its parent), with their depth. */
export function poolTree(pools: Pool[]): { pool: Pool; depth: number }[] {
  const out: { pool: Pool; depth: number }[] = [];
  const names = new Set(pools.map((p) => p.name));
  const visit = (parent: string | null, depth: number) => {
    if (depth > pools.length) return;
    for (const p of pools.filter((q) => (parent === null ? q.parent === null || !names.has(q.parent) : q.parent === parent))) {
      out.push({ pool: p, depth });
      visit(p.name, depth + 1);
    }
  };
  visit(null, 0);
  return out;
}

/** The names of `pool` and every pool below it (a pool's parent cannot be one of them). */
export function descendants(pools: Pool[], pool: string): Set<string> {
  const out = new Set([pool]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of pools) {
      if (p.parent && out.has(p.parent) && !out.has(p.name)) {
        out.add(p.name);
        grew = true;
      }
    }
  }
  return out;
}

export const SHARE_LEVELS: [number, string][] = [
  [500, "Low"],
  [1000, "Normal"],
  [2000, "High"],
];

export const sharesLabel = (n: number) => SHARE_LEVELS.find(([v]) => v === n)?.[1] ?? `Custom (${n})`;

export const RULE_KINDS: [string, string][] = [
  ["affinity", "Keep VMs together"],
  ["anti_affinity", "Separate VMs"],
  ["vm_host", "VMs to hosts"],
];

export const VM_HOST_MODES: [string, string][] = [
  ["must_run_on", "Must run on"],
  ["should_run_on", "Should run on"],
  ["must_not_run_on", "Must not run on"],
  ["should_not_run_on", "Should not run on"],
];

export const ruleKindLabel = (k: string) => RULE_KINDS.find(([v]) => v === k)?.[1] ?? k;
export const modeLabel = (m?: string) => VM_HOST_MODES.find(([v]) => v === m)?.[1] ?? m ?? "";
