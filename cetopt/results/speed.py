"""README's speed section, written from the benchmark results files (benchmarks/results/*.json, made by
``make bench``). Every figure says what it times: ``solver`` (SolveResult.seconds, the backend alone),
``call`` (one whole ``cetopt.solve()``), ``process`` (a whole ``cetopt solve`` subprocess), or a
curvature operation. Medians over interleaved rounds; ratios are per round (cetopt.bench.timing), and
both runs of each benchmark are shown with whether their ratios agree within 20%.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from cetopt.results import SectionError

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
AGREE = 0.20  # two runs' ratios agree when max / min - 1 <= this


def load_runs(prefix: str, results: Path = RESULTS) -> dict[str, list[dict[str, Any]]]:
    """Results files ``<prefix>*run<label>.json`` grouped by run label (a benchmark may be split in parts)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results.glob(f"{prefix}*run*.json")):
        match = re.search(r"run([^.]+)\.json$", path.name)
        if match is None:
            continue
        try:
            runs.setdefault(match.group(1), []).append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise SectionError(f"{path}: unreadable results file ({err}); rerun make bench") from None
    if not runs:
        raise SectionError(f"no {prefix}*run*.json in {results}; run make bench (it writes two runs)")
    return dict(sorted(runs.items()))


def _s(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds >= 0.01 else f"{seconds * 1e3:.3g} ms"


def _x(ratio: float) -> str:
    return f"{ratio:.3g}x"


def _med(summary: dict[str, Any] | None) -> float | None:
    return None if not summary else summary["median"]


def agree(values: Iterable[float | None]) -> bool | None:
    """Whether positive values lie within AGREE of each other (None when fewer than two)."""
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return None
    return max(vals) / min(vals) - 1 <= AGREE + 1e-12


def solver_cells(files: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """(layers, choices) -> {solver: row} merged over one run's part files."""
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for data in files:
        for cell in data["cells"]:
            cells.setdefault((cell["layers"], cell["choices"]), {}).update({r["solver"]: r for r in cell["rows"]})
    return cells


def wall_checks(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [data["wall_check"] for data in files if data.get("wall_check")]


def loads(files: list[dict[str, Any]]) -> list[float]:
    """Every 1-minute load average recorded in a run (solver cells, wall check, curvature models)."""
    out = []
    for data in files:
        timings = [c["timing"] for c in data.get("cells", [])] + [r["hvp"]["timing"] for r in data.get("rows", [])]
        timings += [r["equal_error"]["timing"] for r in data.get("rows", []) if "equal_error" in r]
        if data.get("wall_check"):
            timings.append(data["wall_check"]["timing"])
        for t in timings:
            out += [t["load"]["load_before"][0], t["load"]["load_after"][0]]
    return out


def _pair(values: list[float | None], fmt: Any) -> str:
    shown = " / ".join("-" if v is None else fmt(v) for v in values)
    verdict = agree(values)
    return shown + ("" if verdict is None or verdict else " (differ > 20%)")


def solver_table(runs: dict[str, list[dict[str, Any]]]) -> tuple[str, list[bool]]:
    """Markdown table of every solver cell: run 1 / run 2 medians; the agreement verdicts of its ratios."""
    per_run = [solver_cells(files) for files in runs.values()]
    keys = sorted(set().union(*per_run))
    lines = ["| layers x choices | solver | status | solver s | call s | process s | PuLP call / call |",
             "|---|---|---|---|---|---|---|"]
    verdicts: list[bool] = []
    for key in keys:
        solvers = dict.fromkeys(s for cells in per_run for s in cells.get(key, {}))
        for name in solvers:
            rows = [cells.get(key, {}).get(name) for cells in per_run]
            got = [r for r in rows if r is not None]
            status = sorted({r["status"] + (f" ({r['limit']})" if r.get("limit") else "") for r in got})
            col = {f: [None if r is None else _med(r.get(f)) for r in rows]
                   for f in ("solver_s", "call_s", "process_s", "pulp_over_call")}
            verdict = agree(col["pulp_over_call"])
            if verdict is not None:
                verdicts.append(verdict)
            cells = [_pair(col["solver_s"], _s) if any(col["solver_s"]) else "-",
                     " / ".join("-" if v is None else _s(v) for v in col["call_s"]),
                     " / ".join("-" if v is None else _s(v) for v in col["process_s"]) if any(col["process_s"]) else "-",
                     _pair(col["pulp_over_call"], _x) if any(col["pulp_over_call"]) else "-"]
            lines.append(f"| {key[0]:,} x {key[1]} | `{name}` | {', '.join(status)} | " + " | ".join(cells) + " |")
    return "\n".join(lines), verdicts


def solver_sentences(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The headline sentences: times from the first run (the table has every run), ratios from each run."""
    per_run = [solver_cells(files) for files in runs.values()]
    first = per_run[0]
    out = []
    for layers in (10_000, 100_000):
        dp, greedy = first.get((layers, 8), {}).get("dp"), first.get((layers, 8), {}).get("greedy")
        if dp is None:
            continue
        verb = "proves the optimum" if dp["status"] == "optimal" else f"ends {dp['status']}"
        text = (f"At {layers:,} layers x 8 choices, `dp` {verb} in {_s(dp['solver_s']['median'])} of "
                f"solver time, {_s(dp['call_s']['median'])} per `cetopt.solve()` call")
        if dp.get("process_s"):
            share = dp["outside_solver_in_process"]["median"]
            text += (f" and {_s(dp['process_s']['median'])} for the whole `cetopt solve` process "
                     f"({share:.0%} of it outside the solver)")
        if greedy is not None and greedy.get("excess_vs_best") is not None:
            text += (f"; `greedy` lands within {greedy['excess_vs_best']:.1e} of the optimum in "
                     f"{_s(greedy['solver_s']['median'])} solver, {_s(greedy['call_s']['median'])} call")
            if greedy.get("process_s"):
                text += f", {_s(greedy['process_s']['median'])} process"
        out.append(text + ".")
    for layers in (1000, 10_000):
        cell = first.get((layers, 8), {})
        if "pulp-cbc" not in cell:
            continue
        pulp = cell["pulp-cbc"]
        parts = []
        for name, row in cell.items():
            if row.get("pulp_over_call"):
                ratios = [c.get((layers, 8), {}).get(name, {}).get("pulp_over_call") for c in per_run]
                parts.append(f"`{name}` {' / '.join(_x(r['median']) for r in ratios if r)} ({row['status']})")
        out.append(f"At {layers:,} x 8, HAWQ-V3's integer program in PuLP/CBC takes {_s(pulp['call_s']['median'])} "
                   f"per call (model building included; {pulp['status']}); PuLP call time / cetopt call time, median "
                   f"of per-round ratios, run {' / run '.join(runs)}: " + ", ".join(parts) + ".")
    return out


def wall_sentence(runs: dict[str, list[dict[str, Any]]]) -> str | None:
    """Each backend's slowest whole process under ``--time-limit 3`` on 10,000 x 8, over every run."""
    checks = [c for files in runs.values() for c in wall_checks(files)]
    if not checks:
        return None
    worst: dict[str, float] = {}
    status: dict[str, set[str]] = {}
    for check in checks:
        for r in check["rows"]:
            worst[r["solver"]] = max(worst.get(r["solver"], 0.0), r["process_s"]["max"])
            status.setdefault(r["solver"], set()).update(r["status"])
    listed = ", ".join(f"`{b}` {_s(t)} ({'/'.join(sorted(status[b]))})" for b, t in sorted(worst.items(), key=lambda x: x[1]))
    return (f"With `--time-limit 3` on 10,000 x 8 ({len(checks)} runs), the slowest whole `cetopt solve` process per "
            f"backend (start-up and file loading included): {listed}.")


def curvature_table(runs: dict[str, list[dict[str, Any]]]) -> tuple[str, list[bool]]:
    """Markdown table per trained model: HVP costs and equal-error speedups, run 1 / run 2 medians."""
    per_run = [merged_models(files) for files in runs.values()]
    models = list(dict.fromkeys(m for rows in per_run for m in rows))
    lines = ["| model (trained; test acc) | fwd+bwd | HVP rounds | HVP steady / fwd+bwd | HVP one-off / fwd+bwd | "
             "restricted vs loop | shared vs loop (variance ratio max) | deflated vs loop (Lanczos free / paid) |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts: list[bool] = []
    for model in models:
        rows = [r.get(model) for r in per_run]
        first = next(r for r in rows if r is not None)

        def ratio(path: tuple[str, ...]) -> list[float | None]:
            out = []
            for r in rows:
                for key in path:
                    r = None if r is None else r.get(key)
                out.append(None if r is None else r["median"])
            return out

        cols = [ratio(("hvp", "hvp_steady_over_fb")), ratio(("hvp", "hvp_one_off_over_fb")),
                ratio(("equal_error", "speedup_vs_loop", "restricted")),
                ratio(("equal_error", "speedup_vs_loop", "shared")),
                ratio(("equal_error", "speedup_vs_loop", "deflated")),
                ratio(("equal_error", "speedup_vs_loop", "deflated + lanczos"))]
        verdicts += [v for v in (agree(c) for c in cols) if v is not None]
        fb = " / ".join("-" if r is None else _s(r["hvp"]["timing"]["seconds"]["forward+backward"]["median"])
                        for r in rows)
        var = first.get("equal_error", {}).get("variance_ratio_vs_restricted", {}).get("shared", {}).get("max")
        rounds = "/".join(sorted({str(r["hvp"]["timing"]["rounds"]) for r in rows if r is not None}))
        lines.append(f"| {model} ({first['layers']} layers, {first['weights'] / 1e6:.3g}M weights, batch "
                     f"{first['batch']}; {first['test_accuracy']:.2f}) | {fb} | {rounds} | " + " | ".join(
                         _pair(c, _x) for c in cols[:3]) + f" | {_pair(cols[3], _x)} "
                     f"({'-' if var is None else format(var, '.3g')}) | {_pair(cols[4], _x)}; {_pair(cols[5], _x)} |")
    return "\n".join(lines), verdicts


def curvature_sentence(runs: dict[str, list[dict[str, Any]]]) -> str | None:
    """Ranges over models and runs of the per-round-median ratios, in one sentence."""
    rows = [r for files in runs.values() for r in merged_models(files).values()]
    if not rows:
        return None

    def span(get: Any) -> str:
        values = [v for v in (get(r) for r in rows) if v is not None]
        return "-" if not values else f"{min(values):.3g}x to {max(values):.3g}x"

    def eq(r: dict[str, Any], mode: str) -> float | None:
        s = r.get("equal_error", {}).get("speedup_vs_loop", {}).get(mode)
        return None if s is None else s["median"]

    return (f"On the trained models, one Hessian-vector product costs {span(lambda r: r['hvp']['hvp_steady_over_fb']['median'])} "
            f"a forward+backward pass once the first-order graph is cached (steady state), and "
            f"{span(lambda r: r['hvp']['hvp_one_off_over_fb']['median'])} when the graph is built for it (one-off). "
            f"At equal standard error, restricted per-layer probes run {span(lambda r: eq(r, 'restricted'))} as fast as "
            f"the per-layer loop (the same per-layer work, one shared graph), and shared probes "
            f"{span(lambda r: eq(r, 'shared'))}: their cross-layer variance on the worst layer sets the run length."
            + ("" if not any(eq(r, "deflated") for r in rows) else
               f" Deflated probes (the Lanczos Ritz vectors projected out) run {span(lambda r: eq(r, 'deflated'))} as "
               f"fast as the loop when the eigenpairs are computed anyway (`--method cet` extracts them), and "
               f"{span(lambda r: eq(r, 'deflated + lanczos'))} when the Lanczos run is paid for the traces alone."))


def distributed_sentence(results: Path = RESULTS) -> str | None:
    """torchrun vs one process (benchmarks/torchrun.py): the same problem file, and the wall-time ratio."""
    rows = []
    for path in sorted(results.glob("torchrun-*.json")):
        try:
            rows += json.loads(path.read_text(encoding="utf-8"))["rows"]
        except (OSError, ValueError, KeyError) as err:
            raise SectionError(f"{path}: unreadable torchrun results ({err}); rerun benchmarks/torchrun.py")
    if not rows:
        return None
    parts = []
    for r in rows:
        d, t = r["difference"], r["timing"]
        if not d.get("same_layers_and_choices"):
            parts.append(f"{r['model']}: the problem files DIFFER in their layers or choices")
            continue
        se = d.get("max_difference_over_stderr")
        plan = d.get("same_dp_plan")
        parts.append(f"{r['model']} {r['speedup']['median']:.2f}x ({t['rounds']} round{'s' if t['rounds'] > 1 else ''}; "
                     f"largest relative difference of a predicted loss change {d['max_relative_difference']:.1e} over "
                     f"{d['choices']} choices"
                     + ("" if se is None else f", at most {se:.1e} of the choice's standard error")
                     + f", sizes {'identical' if d['sizes_equal'] else 'DIFFERENT'}"
                     + ("" if plan is None else f", dp {'picks the same plan' if plan else 'picks a DIFFERENT plan'}")
                     + ")")
    ranks = "/".join(sorted({str(r["ranks"]) for r in rows}))
    return (f"`torchrun --nproc-per-node {ranks} -m cetopt extract` against one process with as many threads, each from "
            f"a cold curvature cache (benchmarks/torchrun.py; process wall time, one over torchrun): "
            + "; ".join(parts) + ".")


def _optional(name: str, results: Path, script: str) -> dict[str, Any] | None:
    path = results / name
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError) as err:
        raise SectionError(f"{path}: unreadable results ({err}); rerun {script}") from None


def forward_forms_sentence(results: Path = RESULTS) -> str | None:
    """Forward-mode quadratic forms vs double backward (benchmarks/forms_forward.py), with and without malloc tuning."""
    kept = _optional("forms-forward.json", results, "benchmarks/forms_forward.py")
    system = _optional("forms-forward-system-malloc.json", results, "benchmarks/forms_forward.py --system-malloc")
    if kept is None:
        return None
    text = (f"Quadratic forms e'H_ll e on {kept['model']} ({kept['layers']} layers x {kept['errors_per_layer']} errors, "
            f"one batch of {kept['batch_inputs']}, {kept['threads']} threads; benchmarks/forms_forward.py): forward mode "
            f"{kept['forward_s']:.1f} s against {kept['double_backward_s']:.1f} s of double backward, "
            f"{kept['ratio']:.2f}x, the same numbers to {kept['max_rel_diff']:.1e} (relative)")
    if system is not None:
        text += (f"; with glibc malloc returning freed memory to the kernel (`--system-malloc`) forward mode takes "
                 f"{system['forward_s']:.1f} s ({system['ratio']:.2f}x)")
    return text + "."


def output_traces_sentence(results: Path = RESULTS) -> str | None:
    """Output-space trace probes vs shared and restricted ones at equal error (benchmarks/trace_output_space.py)."""
    data = _optional("trace-output-space.json", results, "benchmarks/trace_output_space.py")
    if data is None:
        return None
    rows = [r for r in data["rows"] if "skipped" not in r]
    parts = [f"{r['model']} {_x(r['speedup_at_equal_error'])} vs shared"
             + ("" if r.get("speedup_vs_restricted") is None else f", {_x(r['speedup_vs_restricted'])} vs restricted")
             for r in rows]
    skipped = [f"{r['model']} ({r['skipped']})" for r in data["rows"] if "skipped" in r]
    return ("Per-layer traces at 5% relative standard error on piecewise-linear models, output-space probes (the "
            "default there) against weight-space probes, shared and restricted (restricted ~ the per-layer loop; "
            f"benchmarks/trace_output_space.py, {data['threads']} threads): " + "; ".join(parts)
            + (f"; not applicable to {', '.join(skipped)}" if skipped else "") + ".")


def measured_prefix_sentence(results: Path = RESULTS) -> str | None:
    """The measured signal from recorded activations vs full forwards (benchmarks/measured_prefix.py)."""
    data = _optional("measured-prefix.json", results, "benchmarks/measured_prefix.py")
    if data is None:
        return None
    parts = [f"{r['model']} {_s(r['prefix_s'])} vs {_s(r['full_s'])} ({_x(r['ratio'])}"
             + ("" if r["traced"] else ", not traceable by torch.fx: full forwards both ways") + ")"
             for r in data["rows"]]
    worst = max(r["max_abs_diff"] for r in data["rows"])
    return ("Measured loss changes of every candidate (the `measured` signal of the default cost model), each layer "
            "re-run from recorded activations against full forward passes (benchmarks/measured_prefix.py, "
            f"{data['threads']} threads): " + "; ".join(parts) + f"; largest difference {worst:.1e}.")


def demo_sentence(results: Path = RESULTS) -> str | None:
    """``cetopt demo`` wall time from a cold cache (benchmarks/demo_time.py)."""
    data = _optional("demo-time.json", results, "benchmarks/demo_time.py")
    if data is None:
        return None
    times = " / ".join(_s(t) for t in data["seconds"])
    return (f"`{data['command']}` from a cold cache (fresh process, empty CETOPT_CACHE_DIR; benchmarks/demo_time.py, "
            f"{data['cpus']} CPUs): {times} wall time, extraction, HAWQ-V3's traces, every backend and the "
            "measurements included.")


def merged_models(files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """model -> row over one run's curvature files: the HVP comparison with the most rounds (a
    ``--hvp-only`` file may repeat it with more), the equal-error figures from the file that has them."""
    models: dict[str, dict[str, Any]] = {}
    for data in files:
        for row in data["rows"]:
            merged = models.setdefault(row["model"], dict(row))
            if row["hvp"]["timing"]["rounds"] > merged["hvp"]["timing"]["rounds"]:
                merged["hvp"] = row["hvp"]
            if "equal_error" in row:
                merged["equal_error"] = row["equal_error"]
    return models


def speed_section(results: Path = RESULTS) -> str:
    """The README's speed section (markdown), from benchmarks/results/{solvers,curvature}-*run*.json."""
    solvers = load_runs("solvers-", results)
    curvature = load_runs("curvature-", results)
    solver_md, solver_ok = solver_table(solvers)
    curvature_md, curvature_ok = curvature_table(curvature)
    every = [load for files in list(solvers.values()) + list(curvature.values()) for load in loads(files)]
    cpus = {t["load"]["usable_cpus"] for files in solvers.values() for d in files for c in d["cells"]
            for t in [c["timing"]]}
    verdicts = solver_ok + curvature_ok
    processes = max((c["timing"].get("processes", 1) for files in solvers.values() for d in files for c in d["cells"]),
                    default=1)
    pooled = (f" Solver cells pool the rounds of {processes} fresh processes each (the machine's speed drifts "
              "between processes)." if processes > 1 else "")
    lines = [
        "Measured by `make bench` (benchmarks/solvers.py, benchmarks/curvature.py; results in "
        "[benchmarks/results](../../benchmarks/results)) and written here by `python -m cetopt.results`. "
        "**solver** = the backend alone (`SolveResult.seconds`), **call** = one whole `cetopt.solve()` call, "
        "**process** = one whole `cetopt solve FILE --format json` subprocess. Times are medians over rounds "
        "in which everything compared ran interleaved; ratios are taken within each round, then the median."
        f"{pooled} "
        f"Each benchmark ran {max(len(solvers), len(curvature))} times on {'/'.join(map(str, sorted(cpus)))} "
        f"CPUs shared with other work (1-minute load {min(every):.1f} to {max(every):.1f}); cells show run "
        f"{' / run '.join(solvers)}. {sum(verdicts)} of {len(verdicts)} ratios agree within 20% across runs.",
        "",
        *[f"- {s}" for s in solver_sentences(solvers)],
    ]
    for sentence in (wall_sentence(solvers), curvature_sentence(curvature), forward_forms_sentence(results),
                     output_traces_sentence(results), measured_prefix_sentence(results), demo_sentence(results),
                     distributed_sentence(results)):
        if sentence:
            lines.append(f"- {sentence}")
    lines += ["", "Solvers on synthetic problems (bit-widths 1..8, or 1..32 for 32 choices; 3.5 average bits):", "",
              solver_md, "",
              "Curvature on trained models (per-layer Hutchinson traces at the standard error a per-layer "
              "PyHessian-style loop reaches with 32 probes per layer; variance ratios measured on the trained "
              "weights):", "", curvature_md]
    return "\n".join(lines) + "\n"
