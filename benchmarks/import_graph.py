"""The size of gammaface's import graph, as import-linter's engine (grimp) sees it.

Counted twice: between modules, and between units (a subpackage or a top-level module, the
granularity the layering rules speak of). For each: nodes, arrows, levels (the longest chain
of arrows once every cycle is folded into one node, plus one), arrows inside a cycle, and the
units that import the pipeline.

    python benchmarks/import_graph.py
"""

from __future__ import annotations

import grimp

PACKAGE = "gammaface"


def unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (the graph is small, but recursion limits are not ours)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.add(w)
                        if w == node:
                            break
                    out.append(comp)
            elif nxt not in index:
                index[nxt] = low[nxt] = counter
                counter += 1
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(sorted(edges.get(nxt, ())))))
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
    return out


def measure(nodes: set[str], edges: dict[str, set[str]]) -> dict[str, int]:
    comps = strongly_connected(nodes, edges)
    where = {n: i for i, c in enumerate(comps) for n in c}
    cyclic = sum(1 for a, bs in edges.items() for b in bs if where[a] == where[b])
    folded: dict[int, set[int]] = {i: set() for i in range(len(comps))}
    for a, bs in edges.items():
        for b in bs:
            if where[a] != where[b]:
                folded[where[a]].add(where[b])
    depth: dict[int, int] = {}
    for i in range(len(comps)):  # Tarjan emits components importers-last: imports come first
        depth[i] = 1 + max((depth[j] for j in folded[i]), default=0)
    return {"nodes": len(nodes), "arrows": sum(len(b) for b in edges.values()),
            "levels": max(depth.values(), default=0), "arrows in cycles": cyclic,
            "cycles": sum(1 for c in comps if len(c) > 1)}


def main() -> None:
    graph = grimp.build_graph(PACKAGE, cache_dir=None)  # a stale cache would count old code
    modules = {m for m in graph.modules if m != PACKAGE}
    edges = {m: {b for b in graph.find_modules_directly_imported_by(m) if b in modules}
             for m in modules}
    units = {unit(m) for m in modules}
    unit_edges: dict[str, set[str]] = {u: set() for u in units}
    for a, bs in edges.items():
        for b in bs:
            if unit(a) != unit(b):
                unit_edges[unit(a)].add(unit(b))
    for label, (n, e) in {"modules": (modules, edges), "units": (units, unit_edges)}.items():
        figures = measure(n, e)
        print(f"{label:8s} " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    importers = sorted(u for u, bs in unit_edges.items() if f"{PACKAGE}.pipeline" in bs)
    print("units importing the pipeline:", ", ".join(importers) or "none")


if __name__ == "__main__":
    main()
