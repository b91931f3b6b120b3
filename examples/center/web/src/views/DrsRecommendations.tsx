// The cluster's DRS recommendations. The server's DRS routes come later (issue 14); until
// they answer, this card says so instead of failing.

import { enc, get } from "../api";
import { ApiError } from "../api";
import { Card, Empty } from "../components/Card";
import { usePoll } from "../live/poll";
import { list } from "../normalize";

interface Recommendation {
  id: string;
  text: string;
  reason?: string;
}

function read(v: unknown): Recommendation[] {
  return list(v, "recommendations").map((r, i) => {
    const o = (r && typeof r === "object" ? r : {}) as Record<string, unknown>;
    const vm = typeof o.vm === "string" ? o.vm : undefined;
    const to = typeof o.to === "string" ? o.to : typeof o.target === "string" ? o.target : undefined;
    const text = typeof o.description === "string" ? o.description : vm && to ? `Migrate ${vm} to ${to}` : JSON.stringify(o);
    return { id: String(o.id ?? i), text, reason: typeof o.reason === "string" ? o.reason : undefined };
  });
}

export function DrsRecommendations({ cluster }: { cluster: string }) {
  const recs = usePoll(async () => {
    try {
      return { items: read(await get(`/api/vcenter/cluster/${enc(cluster)}/drs/recommendations`)), missing: false };
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) return { items: [], missing: true };
      throw e;
    }
  }, 15_000, `drs:${cluster}`);
  return (
    <Card title="DRS recommendations" class="wide">
      {recs.data?.missing ? (
        <Empty>DRS recommendations are not served by this center yet.</Empty>
      ) : recs.error ? (
        <Empty>Recommendations cannot be read: {recs.error}</Empty>
      ) : (recs.data?.items.length ?? 0) === 0 ? (
        <Empty>{recs.loading ? "Loading…" : "No recommendations: the cluster is balanced."}</Empty>
      ) : (
        <ul class="plain-list" data-testid="drs-recommendations">
          {recs.data?.items.map((r) => (
            <li key={r.id}>
              <strong>{r.text}</strong>
              {r.reason && <span class="muted"> — {r.reason}</span>}
            </li>
          ))}
        </ul>
      )}
    </Card>
  );
}
