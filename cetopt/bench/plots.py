"""Plots of a bench run, read from its rows (never the other way round), written as PNG and SVG:
accuracy vs compression (Pareto front per method), solve time vs layers per solver, predicted vs
measured loss change, and per-layer bits along depth."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cetopt.bench.store import number as _num
from cetopt.plotting import new_figure, new_grid, predicted_vs_measured, save_figure

FORMATS = ("png", "svg")
METHOD_OF = {"dp": "CET (dp)", "hawq-v3": "HAWQ-V3", "uniform": "uniform"}
PANELS_PER_ROW = 3


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (compression, metric) not dominated by another with at least the compression and the metric."""
    front = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


def plot_pareto(out: Path, rows: Sequence[dict[str, Any]]) -> list[str]:
    by_problem: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    fp: dict[str, float] = {}
    for r in rows:
        metric, ratio = _num(r.get("metric")), _num(r.get("packed_ratio"))
        if metric is None or ratio is None or r["solver"] not in METHOD_OF:
            continue
        by_problem[r["problem"]][METHOD_OF[r["solver"]]].append((ratio, metric))
        fp[r["problem"]] = float(r["fp_metric"])
    files: list[str] = []
    if not by_problem:
        return files
    # at most PANELS_PER_ROW panels side by side, so the figure stays readable at a README's width
    cols = min(PANELS_PER_ROW, len(by_problem))
    rows_n = -(-len(by_problem) // cols)
    fig, axes = new_grid(rows_n, cols, 3.4 * cols, 2.9 * rows_n)
    for ax in axes.flat[len(by_problem):]:
        ax.set_visible(False)
    for ax, (problem, methods) in zip(axes.flat, sorted(by_problem.items())):
        for method, points in sorted(methods.items()):
            xs, ys = zip(*sorted(points))
            line = ax.plot(xs, ys, "o", ms=3, alpha=0.5)[0]
            front = pareto_front(points)
            ax.plot(*zip(*front), "-", color=line.get_color(), label=method)
        ax.axhline(fp[problem], color="k", ls="--", lw=0.8, label="FP32")
        ax.set_xlabel("compression vs FP32 (packed, x)")
        ax.set_ylabel("metric")
        ax.set_title(problem, fontsize=9)
        ax.legend(fontsize=7)
    return list(save_figure(fig, out, "pareto", FORMATS))


def plot_solve_time(out: Path, rows: Sequence[dict[str, Any]]) -> list[str]:
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        seconds = _num(r.get("seconds"))
        if r["kind"] == "solver" and seconds is not None and seconds > 0:
            series[r["solver"]][int(r["layers"])].append(seconds)
    fig, ax = new_figure()
    for solver, points in sorted(series.items()):
        layers = sorted(points)
        ax.plot(layers, [float(np.median(points[n])) for n in layers], "o-", ms=3, label=solver)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("layers")
    ax.set_ylabel("median solve time (s)")
    ax.set_title("solve time vs problem size")
    ax.legend(fontsize=7)
    return list(save_figure(fig, out, "solve_time", FORMATS))


def plot_predicted_vs_measured(out: Path, rows: Sequence[dict[str, Any]]) -> list[str]:
    by_problem: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for r in rows:
        pred, meas = _num(r.get("objective")), _num(r.get("measured_dloss"))
        if pred is not None and meas is not None and r["solver"] != "hawq-v3":
            by_problem[r["problem"]][0].append(pred)
            by_problem[r["problem"]][1].append(meas)
    fig, ax = new_figure()
    predicted_vs_measured(ax, dict(sorted(by_problem.items())), xlabel="predicted dL (problem objective)",
                          title="predicted vs measured loss change of plans", linthresh=1e-3)
    return list(save_figure(fig, out, "predicted_vs_measured", FORMATS))


def plot_bits_along_depth(out: Path, rows: Sequence[dict[str, Any]], solver: str = "dp") -> list[str]:
    plans: dict[str, dict[float, list[int]]] = defaultdict(dict)
    for r in rows:
        if r["solver"] == solver and r.get("bits"):
            plans[r["problem"]][float(r["budget_avg_bits"])] = json.loads(r["bits"])
    if not plans:
        return []
    fig, axes = new_grid(len(plans), 1, 6.0, 1.9 * len(plans))
    for ax, (problem, by_budget) in zip(axes[:, 0], sorted(plans.items())):
        for budget, bits in sorted(by_budget.items()):
            ax.step(range(len(bits)), bits, where="mid", label=f"{budget:g} avg bits")
        ax.set_ylabel("bits")
        ax.set_title(problem, fontsize=8)
        ax.set_xlabel("layer (depth order)", fontsize=7)
    axes[0, 0].legend(fontsize=6, ncol=3)
    return list(save_figure(fig, out, "bits_along_depth", FORMATS))


def write_plots(out: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """Write every plot under ``out``; returns the files."""
    names: list[str] = []
    for plot in (plot_pareto, plot_solve_time, plot_predicted_vs_measured, plot_bits_along_depth):
        names.extend(plot(out, rows))
    return [out / n for n in names]
