"""cetopt.distributed and the curvature functions under torch.distributed: 2 CPU ranks (gloo, spawned)
give the same gradients, traces, eigenpairs, quadratic forms and problem as one process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from cetopt import distributed


def test_without_process_group_every_helper_is_the_identity() -> None:
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_rank_zero()) == (0, 1, True)
    assert distributed.shard_indices(5) == [0, 1, 2, 3, 4]
    assert distributed.shard(["a", "b"]) == ["a", "b"]
    t = [torch.arange(3.0)]
    assert distributed.all_reduce_sum(t)[0] is t[0]
    assert distributed.all_reduce_numpy(np.ones(2)).tolist() == [1.0, 1.0]
    assert distributed.init_from_env() is False or "WORLD_SIZE" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _curvature(out: Path | None) -> dict[str, np.ndarray]:
    """Everything distributed-aware on digits-cnn, as numpy arrays (run on every rank, or alone)."""
    from cetopt.curvature.extract import CurvatureSettings, extract_curvature
    from cetopt.curvature.operator import CurvatureOperator
    from cetopt.curvature.quadratic import quadratic_forms
    from cetopt.curvature.signals import fisher_diagonal
    from cetopt.problem.io import dumps_problem
    from cetopt.workflow import build_for
    from cetopt.zoo.registry import load_zoo

    torch.set_num_threads(1)
    spec = load_zoo("digits-cnn")
    settings = CurvatureSettings(max_probes=6, min_probes=4, k=2, lanczos_iterations=6, device="cpu")
    result = extract_curvature(spec.model, spec.loss_fn, spec.calibration, settings=settings, cache_dir=False,
                               show_progress=False)
    op = CurvatureOperator(spec.model, spec.loss_fn, spec.calibration, device="cpu")
    gen = torch.Generator().manual_seed(1)
    errors = {n: [torch.randn(p.shape, generator=gen) * 1e-2 for _ in range(3)] for n, p in zip(op.names, op.params)}
    forms = quadratic_forms(op, errors, pairs=[(op.names[0], op.names[1])])
    arrays = {"loss": np.array([result.loss])}
    for layer in result.layers:
        arrays[f"{layer.name}/gradient"] = layer.gradient
        arrays[f"{layer.name}/trace"] = np.array([layer.trace, layer.trace_stderr, layer.n_probes])
        arrays[f"{layer.name}/eig"] = np.concatenate([layer.eig.top_values, layer.eig.bottom_values])
        arrays[f"{layer.name}/own"] = forms.own[layer.name]
    arrays["cross"] = next(iter(forms.cross.values()))
    for name, value in zip(op.names, fisher_diagonal(op)):
        arrays[f"{name}/fisher"] = value.double().numpy().ravel()
    from cetopt.builders.signal_measured import measured_changes
    from cetopt.builders.signal_stderr import linear_stderr

    # the default cost model's noise signal and the measured cost model's forward passes: sums over samples too
    for name, value in linear_stderr(op, {n: torch.stack(v) for n, v in errors.items()}).items():
        arrays[f"{name}/linear_stderr"] = value
    params = dict(zip(op.names, op.params))
    swapped = {n: [params[n].detach() + e for e in errs] for n, errs in errors.items()}
    for name, value in measured_changes(op, swapped).items():
        arrays[f"{name}/measured"] = value
    problem = build_for(spec, bits=(2, 4, 8)).problem
    if out is not None and distributed.is_rank_zero():
        (out / "problem.json").write_text(dumps_problem(problem))
    arrays["problem"] = np.array([c.loss for layer in problem.layers for c in layer.choices])
    return arrays


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    assert distributed.init_from_env()
    try:
        assert distributed.world_size() == world and distributed.rank() == rank
        assert distributed.shard_indices(5) == list(range(rank, 5, world))
        (total,) = distributed.all_reduce_sum([torch.tensor([float(rank + 1)], dtype=torch.float64)])
        assert float(total) == world * (world + 1) / 2
        arrays = _curvature(Path(out))
        np.savez(Path(out) / f"rank{rank}.npz", **arrays)
    finally:
        distributed.shutdown()


def test_two_cpu_ranks_equal_one_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _curvature(None)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    for key, expected in single.items():
        for got in ranks:
            np.testing.assert_allclose(got[key], expected, rtol=1e-5, atol=1e-9, err_msg=key)
    for key in single:  # both ranks hold the very same numbers (they all-reduce the same sums)
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    assert (tmp_path / "problem.json").exists()
