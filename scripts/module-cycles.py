#!/usr/bin/env python3
"""Reports import cycles between the modules of a crate (exit 1 if any).

Usage: scripts/module-cycles.py CRATE_SRC_DIR [...]

Nodes are module files (lib.rs excluded: the crate root only declares and re-exports).
An edge A -> B is a path `crate::b::...` or `super::...` in A (outside its
`#[cfg(test)]` module) that resolves to module B. Edges between a module and its own
ancestors or descendants are ignored (a parent declaring and re-exporting its children is
structure, not a cycle); cycles among the rest are reported with one example path.
"""
import os
import re
import sys

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]) or "bin" in rel[:1]:
                continue
            mods[tuple(rel)] = os.path.join(root, f)
    return mods


def strip_tests(text):
    m = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod \w+\s*(\{|;)", text, re.M)
    return text[: m.start()] if m else text


def expand_groups(text):
    """Turns `use crate::{a::X, b}` into `crate::a::X crate::b` (one level of braces)."""
    out = []
    for m in re.finditer(r"\b(crate|super)((?:::\w+)*)::\{([^{}]*)\}", text):
        for part in m.group(3).split(","):
            part = part.strip()
            if part:
                out.append(f"{m.group(1)}{m.group(2)}::{part}")
    return text + "\n" + "\n".join(out)


def resolve(mod, kind, rest, mods):
    parts = [p for p in rest.split("::") if p]
    if kind == "crate":
        base = ()
    else:
        base = mod[:-1]
        while parts and parts[0] == "super":
            base = base[:-1]
            parts = parts[1:]
    best = None
    for i in range(len(parts) + 1):
        cand = base + tuple(parts[:i])
        if cand in mods:
            best = cand
    return best


def related(a, b):
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def main():
    bad = 0
    for src in sys.argv[1:]:
        mods = modules(src)
        edges = {m: set() for m in mods}
        for m, path in mods.items():
            text = expand_groups(strip_tests(open(path).read()))
            for g in PATH.finditer(text):
                t = resolve(m, g.group(1), g.group(2), mods)
                if t and t != m and not related(m, t):
                    edges[m].add(t)
        # Tarjan's strongly connected components.
        index, low, stack, on, sccs = {}, {}, [], set(), []
        counter = [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in edges[v]:
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    sccs.append(comp)

        sys.setrecursionlimit(10000)
        for v in sorted(mods):
            if v not in index:
                visit(v)
        name = lambda m: "::".join(m)
        for comp in sccs:
            bad += 1
            print(f"{src}: cycle among {', '.join(sorted(name(m) for m in comp))}")
            for m in sorted(comp):
                inside = sorted(name(t) for t in edges[m] if t in comp)
                print(f"    {name(m)} -> {', '.join(inside)}")
        if not sccs:
            print(f"{src}: no import cycles between {len(mods)} modules")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
