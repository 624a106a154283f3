"""cetopt's import graph read from the source with :mod:`ast` (no code is imported): every ``import`` and
``from ... import`` in a package, at module level, inside functions and under ``if TYPE_CHECKING:``, relative
imports resolved. Used by tests/test_architecture_graph.py to hold the package to its floor order."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import networkx as nx


@dataclass(frozen=True)
class ImportSite:
    """One import statement: the importing module, the module it reaches, and where it is written."""

    source: str
    target: str
    path: str
    line: int


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package_dir`` (a package's ``__init__.py`` is the
    package itself)."""
    root = package_dir.parent
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        stem = ".".join(base + ([node.module] if node.module else []))
    else:
        stem = node.module or ""
    # `from pkg import sub` imports the module pkg.sub; `from pkg.mod import name` imports pkg.mod
    return [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]


def import_sites(package_dir: Path) -> list[ImportSite]:
    """Every import inside the package of one of its own modules (a name that is not a module resolves to the
    deepest module that holds it)."""
    modules = module_names(package_dir)
    known = set(modules)
    top = package_dir.name
    sites = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(module, path.name == "__init__.py", node, known):
                if target != top and not target.startswith(top + "."):
                    continue
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != module:
                    sites.append(ImportSite(module, target, str(path), node.lineno))
    return sites


def room(module: str) -> str:
    """The room a module lives in: its subpackage (``cetopt.quant.rounding.gptq`` -> ``cetopt.quant``), a top-level
    module its own room (``cetopt.losses``), the package's ``__init__`` the room ``cetopt``."""
    return ".".join(module.split(".")[:2])


def room_graph(sites: list[ImportSite]) -> nx.DiGraph:
    """Room -> room edges (each carrying its ``sites``), imports inside one room left out."""
    graph = nx.DiGraph()
    for site in sites:
        a, b = room(site.source), room(site.target)
        if a == b:
            continue
        if not graph.has_edge(a, b):
            graph.add_edge(a, b, sites=[])
        graph[a][b]["sites"].append(site)
    return graph


def module_graph(sites: list[ImportSite]) -> nx.DiGraph:
    """Module -> module edges (each carrying its ``sites``)."""
    graph = nx.DiGraph()
    for site in sites:
        if not graph.has_edge(site.source, site.target):
            graph.add_edge(site.source, site.target, sites=[])
        graph[site.source][site.target]["sites"].append(site)
    return graph


def circles(graph: nx.DiGraph) -> list[list[str]]:
    """The strongly connected parts of more than one node (each a set of nodes that reach each other), sorted."""
    return sorted(sorted(part) for part in nx.strongly_connected_components(graph) if len(part) > 1)


def back_edges(graph: nx.DiGraph, floors: list[list[str]]) -> list[tuple[str, str]]:
    """Edges from a room to a room on a higher floor (``floors[0]`` the ground floor); a room on no floor is an
    error of the floor list, reported as an edge to or from ``"<unplaced>"``."""
    level = {name: i for i, names in enumerate(floors) for name in names}
    found = []
    for a, b in sorted(graph.edges):
        if a not in level or b not in level:
            found.append((a if a in level else f"<unplaced> {a}", b if b in level else f"<unplaced> {b}"))
        elif level[b] > level[a]:
            found.append((a, b))
    return found
