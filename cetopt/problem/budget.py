"""Resource budgets of an allocation problem (size, BOPs, predicted loss), all of which must hold at once."""

from __future__ import annotations

from dataclasses import dataclass

from cetopt.problem._checks import check_float

FP32_BITS = 32  # the reference precision for compression ratios


@dataclass(frozen=True)
class Budget:
    """Resource budgets; any subset may be set and all set ones must hold at once.

    Attributes:
        avg_bits: mean bits per weight over all layers' params.
        size_bits, size_bytes: total storage.
        ratio: compression ratio vs 32-bit floats (size <= 32 x params / ratio).
        bops: total bit-operations.
        max_loss: total predicted loss change (the min-size form with eps = 0, LLC's lossless form, uses 0).
    """

    avg_bits: float | None = None
    size_bits: float | None = None
    size_bytes: float | None = None
    ratio: float | None = None
    bops: float | None = None
    max_loss: float | None = None

    def __post_init__(self) -> None:
        for key in ("avg_bits", "size_bits", "size_bytes", "ratio", "bops"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, check_float(value, key, positive=True))
        if self.max_loss is not None:
            object.__setattr__(self, "max_loss", check_float(self.max_loss, "max_loss"))

    def max_size_bits(self, total_params: int) -> float | None:
        """The tightest size limit in bits implied by avg_bits, size_bits, size_bytes and ratio."""
        limits = []
        if self.avg_bits is not None:
            limits.append(self.avg_bits * total_params)
        if self.size_bits is not None:
            limits.append(self.size_bits)
        if self.size_bytes is not None:
            limits.append(self.size_bytes * 8.0)
        if self.ratio is not None:
            limits.append(FP32_BITS * total_params / self.ratio)
        return min(limits) if limits else None

    def is_empty(self) -> bool:
        return all(getattr(self, k) is None for k in
                   ("avg_bits", "size_bits", "size_bytes", "ratio", "bops", "max_loss"))

    def replace(self, **changes: float | None) -> "Budget":
        """A copy with some fields changed."""
        values = {k: getattr(self, k) for k in
                  ("avg_bits", "size_bits", "size_bytes", "ratio", "bops", "max_loss")}
        values.update(changes)
        return Budget(**values)
