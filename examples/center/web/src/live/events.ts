// The event log, live: the last events from `GET /api/vinfra/events`, then every new one
// from the Server-Sent Events stream (`EventSource` sends the session cookie). When the
// stream is not available the log is read every few seconds instead.

import { useEffect, useRef, useState } from "preact/hooks";
import { get } from "../api";
import { event as readEvent, list } from "../normalize";
import type { CenterEvent } from "../types";

const KEEP = 500;
const FALLBACK_POLL_MS = 5000;
const STREAM = "/api/vinfra/events/stream";

export type StreamState = "connecting" | "live" | "polling" | "offline";

export interface EventLog {
  events: CenterEvent[];
  state: StreamState;
  /** Bumped on every new event: views that show derived state reload on it. */
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
  // Newest first, as the events tab lists them.
  return [...added.reverse(), ...old].slice(0, KEEP);
}

export function useEventLog(enabled: boolean): EventLog {
  const [events, setEvents] = useState<CenterEvent[]>([]);
  const [state, setState] = useState<StreamState>("connecting");
  const [generation, setGeneration] = useState(0);
  const lastId = useRef<string | undefined>(undefined);

  useEffect(() => {
    if (!enabled) return;
    let closed = false;
    let source: EventSource | undefined;
    let poller: ReturnType<typeof setInterval> | undefined;

    const add = (fresh: CenterEvent[]) => {
      if (fresh.length === 0 || closed) return;
      lastId.current = fresh[fresh.length - 1].id;
      setEvents((old) => merge(old, fresh));
      // Guest console lines (the hosts report each one) change nothing in the inventory.
      if (fresh.some((e) => !isConsoleLine(e))) setGeneration((g) => g + 1);
    };
    const readPage = async () => {
      const after = lastId.current && /^\d+$/.test(lastId.current) ? `?after=${lastId.current}` : "";
      const page = list(await get(`/api/vinfra/events${after}`), "events").map(readEvent);
      add(page.slice(-KEEP));
    };
    const startPolling = () => {
      if (poller || closed) return;
      setState("polling");
      poller = setInterval(() => readPage().catch(() => setState("offline")), FALLBACK_POLL_MS);
    };

    readPage()
      .catch(() => undefined)
      .finally(() => {
        if (closed) return;
        if (typeof EventSource === "undefined") return startPolling();
        source = new EventSource(STREAM);
        let opened = false;
        source.onopen = () => {
          opened = true;
          setState("live");
        };
        source.onmessage = (m: MessageEvent<string>) => {
          try {
            add([readEvent(JSON.parse(m.data))]);
          } catch {
            // A keep-alive or a line the console does not know: nothing to show.
          }
        };
        source.onerror = () => {
          if (!opened) {
            // The stream route is missing or refused: read the log instead.
            source?.close();
            startPolling();
          } else {
            setState("connecting"); // EventSource reconnects by itself.
          }
        };
      });

    return () => {
      closed = true;
      source?.close();
      if (poller) clearInterval(poller);
    };
  }, [enabled]);

  return { events, state, generation };
}
