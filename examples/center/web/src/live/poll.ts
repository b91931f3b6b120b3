// A value read from the API now and then every `intervalMs` while the component lives;
// `refresh()` reads it at once (after an action, on a live event).

import { useCallback, useEffect, useRef, useState } from "preact/hooks";

export interface Polled<T> {
  data: T | undefined;
  error: string | undefined;
  loading: boolean;
  refresh: () => void;
}

export function usePoll<T>(read: () => Promise<T>, intervalMs: number, key: string): Polled<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const readRef = useRef(read);
  readRef.current = read;
  const generation = useRef(0);
  const inFlight = useRef(false);

  const refresh = useCallback(() => {
    // One read at a time: a slow server must not pile requests up.
    if (inFlight.current) return;
    inFlight.current = true;
    const mine = generation.current;
    readRef
      .current()
      .then((v) => {
        if (mine !== generation.current) return;
        setData(v);
        setError(undefined);
      })
      .catch((e: unknown) => {
        if (mine !== generation.current) return;
        setError(e instanceof Error ? e.message : String(e));
      })
      .finally(() => {
        inFlight.current = false;
        if (mine === generation.current) setLoading(false);
      });
  }, []);

  useEffect(() => {
    generation.current += 1;
    inFlight.current = false;
    setData(undefined);
    setError(undefined);
    setLoading(true);
    refresh();
    const timer = setInterval(refresh, intervalMs);
    return () => {
      generation.current += 1;
      clearInterval(timer);
    };
  }, [key, intervalMs, refresh]);

  return { data, error, loading, refresh };
}
