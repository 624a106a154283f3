"""The house: cetopt's rooms (subpackages; a top-level module is a room of its own) stand on floors, and an import
only points down or sideways: no circles between rooms (nor between the modules inside one), no import of a
higher floor. The graph counts every import,
also those inside functions, so a circle cannot be hidden by deferring an import. The floors are written once
here and drawn in docs/architecture.md ("The house")."""

from __future__ import annotations

from pathlib import Path

from import_graph import back_edges, circles, import_sites, module_graph, module_names, room, room_graph

PACKAGE = Path(__file__).resolve().parents[1] / "cetopt"

FLOORS: list[list[str]] = [
    # ground: helpers every room may use (errors, atomic writes, lazy imports, hooks, versions, statistics) and the
    # shipped data files
    ["cetopt.data", "cetopt._atomic", "cetopt._hooks", "cetopt._imports", "cetopt._versions", "cetopt.errors", "cetopt.distributed",
     "cetopt.stats", "cetopt.negatives", "cetopt.geometry"],
    # arrays in, numbers out: input readers, fidelity losses, plots, cost models
    ["cetopt.inputs", "cetopt.losses", "cetopt.plotting", "cetopt.costmodels"],
    # torch curvature signals; the formal problem (torch-free)
    ["cetopt.curvature", "cetopt.problem"],
    # solvers (problem in, allocation out); the ModelSpec contract
    ["cetopt.solvers", "cetopt.spec"],
    # the zoo builds ModelSpecs; fingerprints and tables of them
    ["cetopt.zoo", "cetopt.fingerprint", "cetopt.tables"],
    # a command-line target -> ModelSpec (looks names up in the zoo)
    ["cetopt.modelspec"],
    # quantisers, roundings, compressors, plans, packing
    ["cetopt.quant"],
    # every choice of a build as one value (validated against the roundings and objectives below it)
    ["cetopt.recipe"],
    # curvature + candidates -> problem; apply-and-measure
    ["cetopt.builders", "cetopt.measure"],
    # the artefact; measured search over plans
    ["cetopt.artifact", "cetopt.search"],
    # ONNX export; a method run on a model
    ["cetopt.export", "cetopt.workflow"],
    # baselines; the numerical proofs and level studies
    ["cetopt.baselines", "cetopt.theory"],
    # benchmarks; k-best plans and the measured pool
    ["cetopt.bench", "cetopt.rerank"],
    # the end-to-end demo; generated results
    ["cetopt.pipeline", "cetopt.results"],
    # the front doors: the command line and the package facade (whose lazy names reach every floor)
    ["cetopt.cli", "cetopt", "cetopt.__main__"],
]

# Edges that break the order for now, each (from room, to room) -> why it exists and how it goes away. Empty: keep it so.
ALLOWED_BACK_EDGES: dict[tuple[str, str], str] = {
}

ALLOWED_CIRCLES: dict[tuple[str, ...], str] = {
}

# Circles between modules inside one room, each with why it exists and how it goes away (same rule as above).
ALLOWED_MODULE_CIRCLES: dict[tuple[str, ...], str] = {
}

# rooms that hold pure data and numpy; torch is imported only by the rooms that run models
TORCH_FREE = ("cetopt.problem", "cetopt.solvers", "cetopt.costmodels", "cetopt.geometry")


def test_floors_name_every_room_once() -> None:
    placed = [name for floor in FLOORS for name in floor]
    assert len(placed) == len(set(placed)), "a room on two floors"
    rooms = {room(m) for m in module_names(PACKAGE)}
    assert sorted(rooms - set(placed)) == [], "rooms missing from FLOORS: place each new room on a floor"
    assert sorted(set(placed) - rooms) == [], "FLOORS names rooms that no longer exist"


def test_no_circles_between_rooms() -> None:
    found = [tuple(c) for c in circles(room_graph(import_sites(PACKAGE)))]
    unexplained = [c for c in found if c not in ALLOWED_CIRCLES]
    assert unexplained == [], unexplained
    assert sorted(ALLOWED_CIRCLES) == sorted(c for c in found if c in ALLOWED_CIRCLES), \
        "an allowed circle is gone: remove it from ALLOWED_CIRCLES"


def test_no_circles_between_modules() -> None:
    found = [tuple(c) for c in circles(module_graph(import_sites(PACKAGE)))]
    assert [c for c in found if c not in ALLOWED_MODULE_CIRCLES] == []
    assert sorted(ALLOWED_MODULE_CIRCLES) == sorted(c for c in found if c in ALLOWED_MODULE_CIRCLES), \
        "an allowed circle is gone: remove it from ALLOWED_MODULE_CIRCLES"


def test_no_back_edges() -> None:
    graph = room_graph(import_sites(PACKAGE))
    found = back_edges(graph, FLOORS)
    unexplained = {edge: [f"{s.path}:{s.line}" for s in graph[edge[0]][edge[1]]["sites"]] if graph.has_edge(*edge)
                   else [] for edge in found if edge not in ALLOWED_BACK_EDGES}
    assert unexplained == {}, unexplained
    assert sorted(ALLOWED_BACK_EDGES) == sorted(e for e in found if e in ALLOWED_BACK_EDGES), \
        "an allowed back-edge is gone: remove it from ALLOWED_BACK_EDGES"


def test_torch_free_rooms() -> None:
    import ast

    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if not module.startswith(TORCH_FREE):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not any(n == "torch" or n.startswith("torch.") for n in names), f"{path}:{node.lineno}"


# ---------------------------------------------------------------- the graph functions, on a package made up here

def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_circle_hidden_inside_a_function_is_found(tmp_path: Path) -> None:
    package = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": "def f():\n    from pkg.high import b\n    return b\n",   # deferred: still an edge
        "pkg/high/__init__.py": "",
        "pkg/high/b.py": "from ..low import a\n",                                # relative: resolved
        "pkg/top.py": "import pkg.high.b\n",
    })
    graph = room_graph(import_sites(package))
    assert circles(graph) == [["pkg.high", "pkg.low"]]
    assert back_edges(graph, [["pkg.low"], ["pkg.high"], ["pkg.top"]]) == [("pkg.low", "pkg.high")]
    assert back_edges(graph, [["pkg.low"], ["pkg.top"]]) == [("<unplaced> pkg.high", "pkg.low"),
                                                               ("pkg.low", "<unplaced> pkg.high"),
                                                               ("pkg.top", "<unplaced> pkg.high")]


def test_a_clean_package_has_no_circles_and_no_back_edges(tmp_path: Path) -> None:
    package = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "X = 1\n",
        "pkg/low/a.py": "from . import X\nfrom pkg.low import b\n",
        "pkg/low/b.py": "",
        "pkg/high/__init__.py": "from pkg.low import X\nfrom pkg.low.a import X as Y\n",
        "pkg/top.py": "from pkg import high\n",
    })
    sites = import_sites(package)
    assert {(s.source, s.target) for s in sites} == {("pkg.low.a", "pkg.low"), ("pkg.low.a", "pkg.low.b"),
                                                     ("pkg.high", "pkg.low"), ("pkg.high", "pkg.low.a"),
                                                     ("pkg.top", "pkg.high")}
    graph = room_graph(sites)
    assert circles(graph) == [] and back_edges(graph, [["pkg.low"], ["pkg.high"], ["pkg.top"]]) == []
    assert circles(module_graph(sites)) == []


def test_a_circle_inside_one_floor_is_still_a_circle(tmp_path: Path) -> None:
    package = _package(tmp_path, {
        "pkg/__init__.py": "", "pkg/low.py": "import pkg.high\n", "pkg/high.py": "import pkg.low\n"})
    graph = room_graph(import_sites(package))
    assert back_edges(graph, [["pkg.low", "pkg.high"]]) == [] and circles(graph) == [["pkg.high", "pkg.low"]]
