"""Plain-text tables of the benchmark results files (what the .txt next to each .json holds)."""

from __future__ import annotations

from typing import Any

from cetopt.tables import format_table


def spread(s: dict[str, Any] | None, scale: float = 1.0, spec: str = ".3g", unit: str = "") -> str:
    """``median [min-max]`` of a summary dict (cetopt.bench.timing.Summary as a dict)."""
    if not s:
        return "-"
    return (f"{format(s['median'] * scale, spec)}{unit} "
            f"[{format(s['min'] * scale, spec)}-{format(s['max'] * scale, spec)}]")


def load_line(load: dict[str, Any]) -> str:
    threads = "" if load.get("torch_threads") is None else f", torch threads {load['torch_threads']}"
    return (f"load avg (1/5/15 min) {load['load_before']} -> {load['load_after']} on "
            f"{load['usable_cpus']}/{load['cpu_count']} CPUs{threads}")


def format_curvature(data: dict[str, Any]) -> str:
    meta = data["meta"]
    head = [f"curvature benchmark run {meta['run']} ({meta['command']}); torch {meta['torch']}, "
            f"{meta['threads']} thread(s), {meta['device']}; times: median [min-max] over interleaved rounds"]
    cost, equal = [], []
    for r in data["rows"]:
        hvp = r["hvp"]
        t = hvp["timing"]["seconds"]
        cost.append([r["model"], r["layers"], f"{r['weights'] / 1e6:.3g}M", r["batch"], f"{r['test_accuracy']:.3f}",
                     spread(t["forward+backward"], 1e3, ".3g"), spread(hvp["hvp_steady_over_fb"], 1, ".2f", "x"),
                     spread(hvp["hvp_one_off_over_fb"], 1, ".2f", "x"), hvp["timing"]["rounds"]])
        eq = r.get("equal_error")
        if eq is None:
            continue
        modes = list(eq["speedup_vs_loop"])
        for m in modes:
            # "deflated + lanczos" is the deflated estimator with its Lanczos run paid: same variance, same rounds
            v = eq["variance_ratio_vs_restricted"].get(m.split(" + ")[0])
            direct = r.get("direct", {}).get("speedup_vs_loop", {}).get(m)
            equal.append([r["model"], m, f"{v['median']:.2f} / {v['max']:.2f}", eq["rounds_needed"][m.split(" + ")[0]],
                          spread(eq["seconds"]["loop"], 1, ".3g"), spread(eq["seconds"][m], 1, ".3g"),
                          spread(eq["speedup_vs_loop"][m], 1, ".2f", "x"), spread(direct, 1, ".2f", "x"),
                          eq["timing"]["rounds"]])
    tables = [format_table(["model", "layers", "weights", "batch", "test acc", "fwd+bwd ms", "HVP steady / fwd+bwd",
                            "HVP one-off / fwd+bwd", "rounds"], cost)]
    if equal:
        probes = next(r["equal_error"]["target_probes"] for r in data["rows"] if r.get("equal_error"))
        tables += [f"equal standard error: every layer's error as the per-layer loop's with {probes} probes; "
                   "variance ratio vs restricted (median / max over layers) on the trained weights",
                   format_table(["model", "mode", "var ratio", "rounds needed", "loop s", "mode s", "speedup vs loop",
                                 "speedup, whole runs timed", "timed rounds"], equal)]
    loads = [f"{r['model']}: {load_line(r['hvp']['timing']['load'])}" for r in data["rows"]]
    return "\n\n".join(head + tables + ["\n".join(loads)])


def format_solvers(data: dict[str, Any]) -> str:
    meta = data["meta"]
    processes = {c["timing"].get("processes", 1) for c in data["cells"]}
    pooled = f" pooled from {max(processes)} fresh processes per cell" if max(processes, default=1) > 1 else ""
    head = (f"solver benchmark run {meta['run']} ({meta['command']}); synthetic problems, seed {meta['seed']}, "
            f"{meta['avg_bits']} average bits; times in s, median [min-max] over interleaved rounds{pooled}; "
            "solver = SolveResult.seconds, call = cetopt.solve(), process = `cetopt solve` CLI subprocess"
            + ("" if data.get("complete", True) else f"; INCOMPLETE so far: {len(data['cells'])} cell(s)"))
    rows = []
    for cell in data["cells"]:
        for r in cell["rows"]:
            status = r["status"] + (f" ({r['limit']})" if r.get("limit") else "")
            peak = r.get("peak_call_bytes")
            rss = r.get("peak_process_rss_bytes")
            rows.append([cell["layers"], cell["choices"], r["solver"], status, spread(r["solver_s"]),
                         spread(r["call_s"]), spread(r["process_s"]), spread(r.get("pulp_over_call"), 1, ".3g", "x"),
                         "-" if peak is None else f"{peak / 2**20:.1f}", "-" if rss is None else f"{rss / 2**20:.0f}",
                         "-" if r.get("excess_vs_best") is None else f"{r['excess_vs_best']:.1e}",
                         "-" if r.get("gap") is None else f"{r['gap']:.1e}"])
    table = format_table(["layers", "choices", "solver", "status", "solver s", "call s", "process s",
                          "PuLP call / call", "call peak MiB", "process RSS MiB", "excess vs best", "gap"], rows)
    parts = [head, table]
    check = data.get("wall_check")
    if check:
        wall = [[r["solver"], ", ".join(r["status"]), ", ".join(r["limit"]), spread(r["process_s"])]
                for r in check["rows"]]
        parts.append(f"--time-limit {check['time_limit']:g} on {check['layers']} x {check['choices']}: whole "
                     "`cetopt solve` process wall time\n" + format_table(["solver", "status", "limit", "process s"], wall))
    parts.append("\n".join(f"{c['layers']} x {c['choices']}: {load_line(c['timing']['load'])}" for c in data["cells"]))
    return "\n\n".join(parts)
