// The event log, live: the Server-Sent Events stream `GET /api/vinfra/events/stream`
// (events named `vinfra`, the stored ones first, then each new one; `EventSource` sends
// the session cookie and resumes with Last-Event-ID). When the stream does not open, the
// log is read page by page from `GET /api/vinfra/events?after=` every few seconds instead.

import { useEffect, useState } from "preact/hooks";
import { get } from "../api";
import { event as readEvent, list } from "../normalize";
import type { CenterEvent } from "../types";

/** Events kept in the browser (newest first). */
const KEEP = 500;
const FALLBACK_POLL_MS = 5000;
/** Arrivals are shown in batches: a backlog of thousands must not render thousands of times. */
const FLUSH_MS = 250;
const PAGES_PER_POLL = 20;
const STREAM = "/api/vinfra/events/stream";

export type StreamState = "connecting" | "live" | "polling" | "offline";

export interface EventLog {
  events: CenterEvent[];
  state: StreamState;
  /** Bumped when events other than guest console lines arrive: views reload on it. */
  generation: number;
}

/** A guest's console output line, which the hosts report as an event of its own. */
export function isConsoleLine(e: CenterEvent): boolean {
  return e.kind === "console" || e.kind === "vm_console";
}

function merge(old: CenterEvent[], fresh: CenterEvent[]): CenterEvent[] {
  const seen = new Set(old.map((e) => e.id));
  const added = fresh.filter((e) => !seen.has(e.id));
  if (added.length === 0) return old;
  return [...added.reverse(), ...old].slice(0, KEEP);
}

/** The whole log, or one object's events (`target`: a VM's or host's name). */
export function useEventLog(enabled: boolean, target?: string): EventLog {
  const [events, setEvents] = useState<CenterEvent[]>([]);
  const [state, setState] = useState<StreamState>("connecting");
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    if (!enabled) return;
    let closed = false;
    let source: EventSource | undefined;
    let poller: ReturnType<typeof setInterval> | undefined;
    let pending: CenterEvent[] = [];
    let lastId = 0;
    const only = target ? `&target=${encodeURIComponent(target)}` : "";

    const flush = () => {
      if (pending.length === 0 || closed) return;
      const fresh = pending.slice(-KEEP);
      pending = [];
      setEvents((old) => merge(old, fresh));
      // Guest console lines change nothing in the inventory.
      if (fresh.some((e) => !isConsoleLine(e))) setGeneration((g) => g + 1);
    };
    const flusher = setInterval(flush, FLUSH_MS);
    const take = (e: CenterEvent) => {
      const id = Number(e.id);
      if (Number.isFinite(id)) lastId = Math.max(lastId, id);
      pending.push(e);
    };

    const readPages = async () => {
      for (let i = 0; i < PAGES_PER_POLL; i += 1) {
        const page = list(await get(`/api/vinfra/events?after=${lastId}${only}`), "events").map(readEvent);
        const before = lastId;
        page.forEach(take);
        if (page.length === 0 || lastId === before) break;
      }
      setState("polling");
    };
    const startPolling = () => {
      if (poller || closed) return;
      setState("polling");
      const poll = () => readPages().catch(() => setState("offline"));
      void poll();
      poller = setInterval(poll, FALLBACK_POLL_MS);
    };

    if (typeof EventSource === "undefined") {
      startPolling();
    } else {
      source = new EventSource(`${STREAM}${target ? `?target=${encodeURIComponent(target)}` : ""}`);
      let opened = false;
      const onEvent = (m: MessageEvent<string>) => {
        try {
          take(readEvent(JSON.parse(m.data)));
        } catch {
          // A line the console cannot read: nothing to show.
        }
      };
      source.addEventListener("vinfra", onEvent as EventListener);
      source.onmessage = onEvent;
      source.onopen = () => {
        opened = true;
        setState("live");
      };
      source.onerror = () => {
        if (!opened) {
          // The stream is missing or refused: read the log instead.
          source?.close();
          startPolling();
        } else {
          setState("connecting"); // EventSource reconnects by itself.
        }
      };
    }

    return () => {
      closed = true;
      source?.close();
      clearInterval(flusher);
      if (poller) clearInterval(poller);
    };
  }, [enabled, target]);

  return { events, state, generation };
}
