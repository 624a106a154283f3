"""A layer of the allocation problem and its compression choices: what a choice is (bit-width, rank, series
terms, group size, rounding), its predicted loss, and the layer's size in bits, BOPs and bit-width limits.
Plain, frozen data; no solver and no torch. Sizes are in bits; losses in the model's loss units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from cetopt.errors import ProblemError
from cetopt.problem._checks import MAX_BITS, check_float, check_int, check_name



@dataclass(frozen=True)
class Choice:
    """One compression level of one layer.

    Attributes:
        bits: stored precision of each weight (1..64).
        loss: predicted loss increase when the layer takes this choice (may be negative).
        size_bits: storage in bits; ``None`` means params x bits x terms (or rank x (m+n) x bits x terms).
        bops: bit-operations; ``None`` means macs x bits x activation_bits (needs the layer's MACs).
        rank: low-rank factorisation rank, or ``None`` for the full matrix.
        terms: number of series-expansion basis terms (1 = plain quantisation).
        loss_stderr: standard error of ``loss`` (same unit, >= 0), or ``None`` when unknown; solvers ignore it,
            robust cost models and reports read it.
        rounding: how a plain choice's codes are chosen (a cetopt.quant.rounding name), or ``None`` for the
            problem's (metadata "rounding"); set when one layer offers several roundings (joint allocation).
        group_size: inputs per scale of a plain choice (0 = per channel), or ``None`` for the problem's quantiser.
    """

    bits: int
    loss: float
    size_bits: float | None = None
    bops: float | None = None
    rank: int | None = None
    terms: int = 1
    loss_stderr: float | None = None
    rounding: str | None = None
    group_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", check_int(self.bits, "bits", low=1, high=MAX_BITS))
        object.__setattr__(self, "loss", check_float(self.loss, "loss"))
        if self.size_bits is not None:
            object.__setattr__(self, "size_bits", check_float(self.size_bits, "size_bits", low=0.0))
        if self.bops is not None:
            object.__setattr__(self, "bops", check_float(self.bops, "bops", low=0.0))
        if self.rank is not None:
            object.__setattr__(self, "rank", check_int(self.rank, "rank", low=1))
        object.__setattr__(self, "terms", check_int(self.terms, "terms", low=1, high=64))
        if self.loss_stderr is not None:
            object.__setattr__(self, "loss_stderr", check_float(self.loss_stderr, "loss_stderr", low=0.0))
        if self.rounding is not None and (not isinstance(self.rounding, str) or not self.rounding):
            raise ProblemError(f"rounding must be a rounding's name or null, got {self.rounding!r}", field="rounding")
        if self.group_size is not None:
            object.__setattr__(self, "group_size", check_int(self.group_size, "group_size", low=0))

    @property
    def level(self) -> tuple[int, int | None, int, str | None, int | None]:
        """The identity of the choice inside its layer: (bits, rank, terms, rounding, group_size)."""
        return (self.bits, self.rank, self.terms, self.rounding, self.group_size)

    @property
    def label(self) -> str:
        """A short human label: ``4b``, ``r16@8b``, ``3x4b``."""
        text = f"{self.bits}b"
        if self.terms != 1:
            text = f"{self.terms}x{text}"
        if self.rank is not None:
            text = f"r{self.rank}@{text}"
        if self.group_size:
            text = f"{text}/g{self.group_size}"
        if self.rounding is not None:
            text = f"{text}/{self.rounding}"
        return text


@dataclass(frozen=True)
class Layer:
    """A quantisable layer and its candidate choices.

    Attributes:
        name: unique layer name (e.g. the torch module path ``layer1.0.conv1``).
        params: number of weights.
        choices: candidate compression levels, at least one, unique by (bits, rank, terms).
        macs: multiply-accumulates per inference, if known (needed for default BOPs).
        shape: (out_features, in_features) of the weight matrix, needed for low-rank default sizes.
        min_bits, max_bits: allowed bit-width range (inclusive), ``None`` for no bound.
        fixed_bits: force this bit-width (e.g. first/last layer at 8 bits).
    """

    name: str
    params: int
    choices: tuple[Choice, ...]
    macs: int | None = None
    shape: tuple[int, int] | None = None
    min_bits: int | None = None
    max_bits: int | None = None
    fixed_bits: int | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        object.__setattr__(self, "params", check_int(self.params, "params", low=1))
        if self.macs is not None:
            object.__setattr__(self, "macs", check_int(self.macs, "macs", low=0))
        if self.shape is not None:
            if not isinstance(self.shape, (tuple, list)) or len(self.shape) != 2:
                raise ProblemError("expected [out_features, in_features]", field="shape")
            rows = check_int(self.shape[0], "shape[0]", low=1)
            cols = check_int(self.shape[1], "shape[1]", low=1)
            object.__setattr__(self, "shape", (rows, cols))
        for key in ("min_bits", "max_bits", "fixed_bits"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, check_int(value, key, low=1, high=MAX_BITS))
        choices = tuple(self.choices)
        if not choices:
            raise ProblemError("a layer needs at least one choice, e.g. [{\"bits\": 8, \"loss\": 0.0}]",
                               field="choices")
        seen: dict[tuple[int, int | None, int], int] = {}
        for index, choice in enumerate(choices):
            if not isinstance(choice, Choice):
                raise ProblemError(f"expected a Choice, got {type(choice).__name__}", field=f"choices[{index}]")
            if choice.level in seen:
                raise ProblemError(
                    f"duplicate choice {choice.label} (same as choices[{seen[choice.level]}]); "
                    "remove one or give it a different rank/terms",
                    field=f"choices[{index}]",
                )
            seen[choice.level] = index
            if choice.rank is not None and choice.size_bits is None and self.shape is None:
                raise ProblemError(
                    "a low-rank choice needs size_bits, or the layer needs shape [out, in]",
                    field=f"choices[{index}].size_bits",
                )
            if choice.rank is not None and self.shape is not None and choice.rank > min(self.shape):
                raise ProblemError(f"rank {choice.rank} exceeds min(shape) = {min(self.shape)}",
                                   field=f"choices[{index}].rank")
        object.__setattr__(self, "choices", choices)
        if self.min_bits is not None and self.max_bits is not None and self.min_bits > self.max_bits:
            raise ProblemError(f"min_bits {self.min_bits} > max_bits {self.max_bits}", field="min_bits")
        if not self.allowed_choices():
            raise ProblemError(
                f"no choice satisfies min_bits={self.min_bits}, max_bits={self.max_bits}, "
                f"fixed_bits={self.fixed_bits}; candidate bits are {sorted({c.bits for c in choices})}",
                field="fixed_bits" if self.fixed_bits is not None else "min_bits",
            )

    def is_allowed(self, choice: Choice) -> bool:
        """Whether the per-layer bit constraints admit ``choice``."""
        if self.fixed_bits is not None and choice.bits != self.fixed_bits:
            return False
        if self.min_bits is not None and choice.bits < self.min_bits:
            return False
        return not (self.max_bits is not None and choice.bits > self.max_bits)

    def allowed_choices(self) -> list[int]:
        """Indices of the choices the per-layer constraints admit."""
        return [i for i, c in enumerate(self.choices) if self.is_allowed(c)]

    def size_bits(self, choice: Choice) -> float:
        """Storage of this layer at ``choice``, in bits."""
        if choice.size_bits is not None:
            return choice.size_bits
        if choice.rank is not None:
            assert self.shape is not None  # guaranteed by __post_init__
            return float(choice.rank * (self.shape[0] + self.shape[1]) * choice.bits * choice.terms)
        return float(self.params * choice.bits * choice.terms)

    def bops(self, choice: Choice, activation_bits: int) -> float | None:
        """Bit-operations of this layer at ``choice``, or ``None`` when neither bops nor macs is known."""
        if choice.bops is not None:
            return choice.bops
        if self.macs is None:
            return None
        return default_bops(self.macs, choice.bits, activation_bits, terms=choice.terms, rank=choice.rank,
                            shape=self.shape)


def default_bops(macs: int, bits: int, activation_bits: int, *, terms: int = 1, rank: int | None = None,
                 shape: Sequence[int] | None = None) -> float:
    """Bit-operations of one layer per sample: macs x weight bits x series terms x activation bits (HAWQ-V3's
    count), the MACs scaled to the two thin products of a rank-r factorisation of an m x n weight."""
    scaled = float(macs)
    if rank is not None and shape is not None:  # two thin products instead of one m x n
        scaled *= rank * (shape[0] + shape[1]) / (shape[0] * shape[1])
    return scaled * bits * terms * activation_bits
