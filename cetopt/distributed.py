"""torch.distributed helpers: who am I, which share of the work is mine, sum the shares, and who writes.

cetopt runs data-parallel under ``torchrun``: every rank loads the same model and calibration data, takes
its share of the calibration batches (:func:`shard`), and the per-batch sums of gradients and
Hessian-vector products are added across ranks (:func:`all_reduce_sum`), so every rank holds the same
numbers and takes the same decisions (Hutchinson stopping, Lanczos steps); rank 0 alone writes files
(:func:`is_rank_zero`). Without ``torchrun`` (or with one rank) every helper is the identity, and nothing
here imports torch until a function needs it.

Backends: gloo on the CPU, NCCL when CUDA is present (:func:`init_from_env`); tensors on the CPU are
moved to the rank's GPU for an NCCL reduction and back.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Sequence, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
T = TypeVar("T")


def _dist():  # type: ignore[no-untyped-def]
    import torch.distributed as dist

    return dist


def is_distributed() -> bool:
    """True when a torch.distributed process group with more than one rank is initialised."""
    if "torch" not in sys.modules:  # nothing can have initialised a process group yet
        return False
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return _dist().get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return _dist().get_world_size() if is_distributed() else 1


def is_rank_zero() -> bool:
    """True on rank 0, and always when not distributed: the process that writes files and prints."""
    return rank() == 0


def shard_indices(count: int) -> list[int]:
    """The indices of ``count`` work items this rank handles: rank, rank + world, ... (round robin).

    Ranks with no item (``count < world_size``) get an empty list and contribute zeros to the sums.
    """
    return list(range(rank(), count, world_size()))


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (see :func:`shard_indices`)."""
    return [items[i] for i in shard_indices(len(items))]


def backend() -> str | None:
    """The process group's backend ("gloo", "nccl") or None when not distributed."""
    return str(_dist().get_backend()) if is_distributed() else None


def all_reduce_sum(tensors: Sequence["torch.Tensor"]) -> list["torch.Tensor"]:
    """Element-wise sums of ``tensors`` over all ranks (one collective for the lot), same shapes,
    dtypes and devices as given. Every rank must call it with tensors of the same shapes and dtypes.
    Without a process group the tensors come back unchanged."""
    import torch

    tensors = list(tensors)
    if not is_distributed() or not tensors:
        return tensors
    dist = _dist()
    device = tensors[0].device
    if backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    out: list[torch.Tensor] = list(tensors)
    for dtype, idx in by_dtype.items():
        flat = torch.cat([tensors[i].detach().reshape(-1).to(device) for i in idx])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = flat[offset:offset + n].reshape(tensors[i].shape).to(tensors[i].device)
            offset += n
    return out


def all_reduce_numpy(array: np.ndarray) -> np.ndarray:
    """Element-wise sum of a numpy array over all ranks (float64 on the wire)."""
    if not is_distributed():
        return array
    import torch

    (total,) = all_reduce_sum([torch.as_tensor(np.asarray(array, dtype=np.float64))])
    return total.cpu().numpy()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        _dist().barrier()


def init_from_env() -> bool:
    """Initialise the process group from torchrun's environment (WORLD_SIZE, RANK, MASTER_ADDR, ...).

    Returns True when a process group with more than one rank is now initialised. Picks NCCL when CUDA is
    present (and binds this rank to GPU ``LOCAL_RANK``), gloo otherwise. A no-op outside torchrun.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch

    dist = _dist()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        log.info("torch.distributed: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(),
                 dist.get_backend())
    return is_distributed()


def shutdown() -> None:
    """Destroy the process group if this module's caller initialised one."""
    if "WORLD_SIZE" in os.environ:
        dist = _dist()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
