"""The fuzz run behind `make fuzz` (and, with few cases, tests/reliability/test_fuzz_run.py in CI).

Two suites, each case run in a worker process with a deadline, so a hang is counted, not waited on:

- solvers: random problems over instance families (sizes, sensitivity spreads, bit sets up to 16,
  outliers, ties, equal losses, interactions, negative losses, min-size, bops budgets) solved by every
  installed backend and checked against bruteforce: an "optimal" objective that is not the optimum, a bound
  above it, or "infeasible" on a feasible problem is a wrong answer;
- files: hostile problem and plan files (random values at random places, duplicate keys, over-long
  integers, deep nesting, truncation, binary noise) through `cetopt solve` / `cetopt apply` in-process:
  an exit code is fine, an exception that escapes main() is a traceback.

    python tests/reliability/fuzz_run.py --cases 2000 --files 2000 --timeout 60

prints the counts and exits 1 unless wrong answers, tracebacks and hangs are all 0.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FAMILIES = ("plain", "wide-spread", "outlier", "ties", "equal-losses", "interactions", "negative", "min-size",
            "bops", "bits-to-16", "few-sizes")
# "optimal" means a certified relative gap within cetopt.solvers.result.GAP_TOLERANCE (1e-6), so an optimal answer
# is wrong when it is further than that from the optimum (relative_gap's scale), or a bound above it by more
# than float noise
from cetopt.solvers.result import GAP_TOLERANCE  # noqa: E402

REL_TOL = 1e-9


def random_problem(rng: random.Random, family: str) -> dict[str, Any]:
    """A cetopt.problem/1 object of 1..6 layers from ``family`` (small enough for bruteforce)."""
    n = rng.randint(1, 6)
    bit_pool = list(range(1, 17)) if family == "bits-to-16" else [1, 2, 3, 4, 5, 6, 8]
    sizes = [rng.choice((64, 512)) for _ in range(n)] if family == "few-sizes" else \
        [rng.randint(1, 5000) for _ in range(n)]
    layers = []
    for i in range(n):
        bits = sorted(rng.sample(bit_pool, rng.randint(1, 5)))
        spread = rng.lognormvariate(0, 6 if family in ("wide-spread", "few-sizes") else 1.5)
        if family == "outlier" and i == 0:
            spread *= 1e9
        choices = []
        for b in bits:
            loss = spread * sizes[i] * 4.0 ** (-b) * (rng.uniform(0.5, 1.5))
            if family == "equal-losses":
                loss = 1.0
            if family == "negative":
                loss -= spread * rng.uniform(0, 0.3)
            choices.append({"bits": b, "loss": float(loss)})
        layers.append({"name": f"l{i}", "params": sizes[i], "macs": sizes[i] * rng.randint(1, 40),
                       "choices": choices})
    data: dict[str, Any] = {"format": "cetopt.problem/1", "name": f"fuzz-{family}", "layers": layers}
    mean_bits = rng.uniform(1.0, 9.0)
    if family == "min-size":
        total = sum(min(c["loss"] for c in layer["choices"]) for layer in layers)
        data.update(minimize="size", budget={"max_loss": float(total * rng.uniform(1.0, 3.0) + 1e-12)})
    elif family == "bops":
        data["budget"] = {"avg_bits": mean_bits, "bops": float(sum(l["macs"] for l in layers) * rng.uniform(1, 60))}
    else:
        data["budget"] = {"avg_bits": mean_bits}
    if family == "ties" and n >= 2:
        shared = layers[0]["choices"]
        layers[1]["choices"] = [{"bits": c["bits"], "loss": c["loss"] * 0.5} for c in shared]
        data["ties"] = [["l0", "l1"]]
    if family == "interactions" and n >= 2:
        data["interactions"] = []
        for i in range(n - 1):
            a, b = layers[i]["choices"], layers[i + 1]["choices"]
            scale = abs(a[0]["loss"]) ** 0.5 * 0.1
            data["interactions"].append({"layers": [f"l{i}", f"l{i + 1}"],
                                         "loss": [[rng.gauss(0, 0.3) * scale for _ in b] for _ in a]})
    return data


def solve_case(data: dict[str, Any], backends: list[str]) -> dict[str, Any]:
    """Worker: the truth (bruteforce) and every backend's answer, or the traceback that escaped."""
    from cetopt.errors import CetoptError
    from cetopt.problem.io import problem_from_dict
    from cetopt.solvers.api import solve

    try:
        problem = problem_from_dict(data)
    except CetoptError:
        return {"rejected": True}
    out: dict[str, Any] = {}
    for name in ["bruteforce", *backends]:
        try:
            r = solve(problem, name, time_limit=20)
            out[name] = {"status": r.status.value, "objective": r.objective, "bound": r.bound}
        except CetoptError as err:
            out[name] = {"status": "refused", "message": str(err)[:200]}
        except Exception:  # noqa: BLE001 (what the fuzz counts)
            out[name] = {"status": "traceback", "message": traceback.format_exc()[-1500:]}
    return out


def verdicts(answers: dict[str, Any], exact: set[str]) -> Counter:
    """Count what each backend's answer is against bruteforce's."""
    counts: Counter = Counter()
    truth = answers.get("bruteforce", {})
    if truth.get("status") not in ("optimal", "infeasible"):
        counts["no truth"] += 1
        return counts
    best = truth["objective"]
    for name, a in answers.items():
        if name == "bruteforce":
            continue
        status = a["status"]
        if status == "traceback":
            counts["traceback"] += 1
            continue
        tol = REL_TOL * max(1.0, abs(best)) if best is not None else 0.0
        gap = (GAP_TOLERANCE * max(abs(best), abs(a["objective"])) + tol) if best is not None and \
            a.get("objective") is not None else 0.0
        if status == "optimal" and (best is None or a["objective"] < best - tol or a["objective"] - best > gap):
            counts["wrong optimal"] += 1
        elif status == "infeasible" and best is not None and name in exact:
            counts["wrong infeasible"] += 1
        elif a.get("bound") is not None and best is not None and a["bound"] > best + tol:
            counts["bound above optimum"] += 1
        else:
            counts[f"ok {status}"] += 1
    return counts


NASTY = [None, True, -1, 0, 1e308, -1e308, 10 ** 30, "x", "", [], {}, [[[]]], 0.5, 2 ** 63]


def hostile_text(rng: random.Random) -> tuple[str, str]:
    """(kind, text): a problem or plan file bent in one of several ways."""
    seed = random_problem(rng, rng.choice(FAMILIES))
    kind = rng.choice(("problem", "plan"))
    data: Any = seed if kind == "problem" else {"format": "cetopt.plan/2", "model": "digits-mlp",
                                                 "layers": {l["name"]: {"bits": 4} for l in seed["layers"]}}
    how = rng.randrange(7)
    if how == 0:  # a random value at a random place
        parent, key = None, None
        node = data
        for _ in range(rng.randint(1, 4)):
            if isinstance(node, dict) and node:
                parent, key = node, rng.choice(list(node))
            elif isinstance(node, list) and node:
                parent, key = node, rng.randrange(len(node))
            else:
                break
            if not (isinstance(parent[key], (dict, list)) and rng.random() < 0.7):
                break
            node = parent[key]
        if parent is not None:
            parent[key] = rng.choice(NASTY)
        text = json.dumps(data)
    elif how == 1:  # a duplicate key
        text = json.dumps(data)
        text = text.replace('"name": ', '"name": "dup", "name": ', 1)
    elif how == 2:  # an integer over the digit limit
        text = json.dumps(data).replace('"params": ', '"params": ' + "9" * rng.randint(4000, 6000) + ", \"x\": ", 1)
    elif how == 3:  # deep nesting
        depth = rng.choice((100, 5000, 200000))
        text = json.dumps(data)[:-1] + ', "metadata": ' + "[" * depth + "]" * depth + "}"
    elif how == 4:  # truncated
        text = json.dumps(data)
        text = text[: rng.randrange(len(text))]
    elif how == 5:  # binary noise
        text = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400))).decode("latin-1")
    else:  # NaN / Infinity literals
        text = json.dumps(data).replace("0.", "NaN", 1).replace("1.", "Infinity", 1)
    return kind, text


def file_case(kind: str, text: str, folder: str) -> dict[str, Any]:
    """Worker: the file through the command line in-process; an exception escaping main() is a traceback."""
    import contextlib
    import io

    from cetopt.cli import main

    path = Path(folder) / f"case.{kind}.json"
    path.write_text(text, encoding="latin-1")
    args = ["solve", str(path)] if kind == "problem" else ["apply", str(path), "--out", str(Path(folder) / "o")]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(args)
    except SystemExit as stop:
        code = stop.code
    except Exception:  # noqa: BLE001 (what the fuzz counts)
        return {"status": "traceback", "message": traceback.format_exc()[-1500:]}
    return {"status": f"exit {code}"}


class Worker:
    """One worker process that runs cases with a deadline; a case past it is a hang (the worker is replaced)."""

    def __init__(self) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(1)

    def run(self, fn: Callable[..., dict[str, Any]], args: tuple, timeout: float) -> dict[str, Any]:
        job = self.pool.apply_async(fn, args)
        try:
            return job.get(timeout=timeout)
        except multiprocessing.TimeoutError:
            self.pool.terminate()
            self.pool = multiprocessing.get_context("spawn").Pool(1)
            return {"hang": True}

    def close(self) -> None:
        self.pool.terminate()


def run(cases: int, files: int, *, seed: int = 0, timeout: float = 60.0, backends: list[str] | None = None,
        log: Callable[[str], None] = lambda _: None) -> dict[str, Counter]:
    """Run both suites; return their counts (see the module docstring)."""
    import tempfile

    from cetopt.solvers.registry import available_solvers

    installed = [s for s in available_solvers() if s.installed and s.name != "bruteforce"]
    names = backends or [s.name for s in installed]
    exact = {s.name for s in installed if s.exact}
    rng = random.Random(seed)
    out = {"solvers": Counter(), "files": Counter()}
    worker = Worker()
    try:
        for i in range(cases):
            family = FAMILIES[i % len(FAMILIES)]
            data = random_problem(rng, family)
            answers = worker.run(solve_case, (data, names), timeout * (1 + len(names)))
            if answers.get("hang"):
                out["solvers"]["hang"] += 1
                log(f"hang: {json.dumps(data)[:300]}")
            elif answers.get("rejected"):
                out["solvers"]["rejected by the validator"] += 1
            else:
                counts = verdicts(answers, exact)
                out["solvers"].update(counts)
                if any(k in counts for k in ("wrong optimal", "wrong infeasible", "bound above optimum", "traceback")):
                    log(f"{dict(counts)} on {json.dumps(data)[:2000]}\n{json.dumps(answers)[:3000]}")
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(files):
                kind, text = hostile_text(rng)
                result = worker.run(file_case, (kind, text, folder), timeout)
                status = "hang" if result.get("hang") else result["status"]
                out["files"][status] += 1
                if status in ("hang", "traceback"):
                    log(f"{status} on a {kind} file: {text[:300]!r}\n{result.get('message', '')}")
    finally:
        worker.close()
    return out


BAD = ("wrong optimal", "wrong infeasible", "bound above optimum", "traceback", "hang")


def failures(counts: dict[str, Counter]) -> int:
    return sum(c[k] for c in counts.values() for k in BAD)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=2000, help="random problems (each through every backend)")
    parser.add_argument("--files", type=int, default=2000, help="hostile problem and plan files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per file case (solver cases: x backends)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    counts = run(args.cases, args.files, seed=args.seed, timeout=args.timeout,
                 log=lambda line: print(line, file=sys.stderr))
    for suite, c in counts.items():
        print(f"{suite}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    print(f"{args.cases} problems, {args.files} files, seed {args.seed}, {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{k} {sum(c[k] for c in counts.values())}" for k in BAD))
    return 1 if failures(counts) else 0


if __name__ == "__main__":
    sys.exit(main())
