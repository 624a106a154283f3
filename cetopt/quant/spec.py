"""How weights are quantised (:class:`QuantizerSpec`), torch-free so a recipe (cetopt.recipe) and the command line
can hold one without loading torch; cetopt.quant.quantizers applies it and re-exports it, and the roundings below
the quantisers import it from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cetopt.errors import ProblemError

SCALE_BITS = 32  # storage per scale (fp32) and per zero-point in the packed size

@dataclass(frozen=True)
class QuantizerSpec:
    """How weights are quantised.

    Attributes:
        symmetric: levels symmetric around 0 (no zero-point) or asymmetric (min..max with a zero-point).
        per_channel: one scale per output channel (dim 0) or one per tensor.
        clip: "none" (range = max |w|, or min..max) or "mse" (search the clipping ratio minimising ||d||^2).
        clip_grid: number of clipping ratios tried in [clip_min, 1] by the "mse" search.
        clip_min: smallest clipping ratio tried.
        group_size: 0 = one scale per output channel (or per tensor); g > 0 = one scale per g consecutive
            inputs of each output channel (the weight as (out, in x kernel); the last group of a row may be
            shorter). Needs ``per_channel``; cetopt.quant.rounding.grid lays the groups out.
    """

    symmetric: bool = True
    per_channel: bool = True
    clip: str = "none"
    clip_grid: int = 20
    clip_min: float = 0.5
    group_size: int = 0

    def __post_init__(self) -> None:
        if self.clip not in ("none", "mse"):
            raise ProblemError(f"clip must be 'none' or 'mse', got {self.clip!r}", field="clip")
        if self.clip_grid < 1 or not 0 < self.clip_min <= 1:
            raise ProblemError("clip_grid must be >= 1 and clip_min in (0, 1]", field="clip_grid")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 0:
            raise ProblemError(f"group_size must be 0 (per channel) or a positive integer, got {self.group_size!r}",
                               field="group_size")
        if self.group_size and not self.per_channel:
            raise ProblemError("group scales split each output channel: set per_channel=True", field="group_size")

    def to_dict(self) -> dict[str, object]:
        """The settings as JSON; ``group_size`` only when set (files written before it existed stay the same)."""
        out = asdict(self)
        if not self.group_size:
            del out["group_size"]
        return out
