// The selection and tab live in the URL's hash (`#/vm/web-1/console`), so that reload,
// back and a shared link keep the place, and the server needs no route per view.

import { useEffect, useState } from "preact/hooks";
import type { Selection } from "./types";

export interface Route {
  selection: Selection;
  tab: string;
}

export function parse(hash: string): Route {
  const [kind, name, tab] = hash.replace(/^#\/?/, "").split("/").map((p) => decodeURIComponent(p));
  const t = tab ?? "summary";
  if (name && (kind === "vm" || kind === "host" || kind === "cluster" || kind === "datacenter")) {
    return { selection: { kind, name }, tab: t };
  }
  return { selection: { kind: "none" }, tab: t };
}

export function href(selection: Selection, tab?: string): string {
  if (selection.kind === "none") return "#/";
  const base = `#/${selection.kind}/${encodeURIComponent(selection.name)}`;
  return tab && tab !== "summary" ? `${base}/${tab}` : base;
}

export function go(selection: Selection, tab?: string): void {
  location.hash = href(selection, tab);
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(location.hash));
  useEffect(() => {
    const changed = () => setRoute(parse(location.hash));
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}
