"""How much a rung value can be trusted: the noise margin successive halving stops configs by.

A config's rung value is the mean of its seeds' values. Two sources make it uncertain:

- **the val set**: an accuracy on n val clips is a proportion, with a binomial standard error
  (Agresti-Coull: p' = (x + 2) / (n + 4), SE² = p'(1 - p') / (n + 4), so a value of 0 or 1 still has
  an interval). The seeds of a config are scored on the same clips, so this part does not shrink
  with repeats. It applies only to the objectives in PROPORTIONS (fractions of val clips); for the
  others (a loss, a calibration error) only the seeds' spread counts.
- **the seeds' spread**: with r >= 2 seeds, the variance of their mean, s² / r.

Two configs' values differ by more than the data can resolve when the gap exceeds `z` standard
errors of the difference (the two variances added: their errors are treated as independent, which
is conservative for configs scored on the same clips). z = 0 turns the margin off. Standard library only.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Objectives that are a fraction of the val clips (bal_acc and macro_f1 approximately): binomial noise applies.
PROPORTIONS = ("val/acc", "val/bal_acc", "val/macro_f1")


def val_clips(results) -> int | None:
    """The val set's size from trial records (result.json's `n_val_clips`); the smallest when records
    disagree (the wider interval), None when no record holds it."""
    counts = [r.get("n_val_clips") for r in results if isinstance(r, dict)]
    counts = [c for c in counts if isinstance(c, int) and not isinstance(c, bool) and c > 0]
    return min(counts) if counts else None


@dataclass(frozen=True)
class Noise:
    z: float = 0.0                 # margin in standard errors of a difference (0: no margin)
    n_val: int | None = None       # val clips the objective is measured on (None: not recorded)
    binomial: bool = False         # the objective is a proportion of those clips

    @classmethod
    def of(cls, z: float, objective: str, results) -> "Noise":
        """The noise of a rung whose trials have these records, ranked on `objective`."""
        return cls(float(z), val_clips(results), objective in PROPORTIONS)

    def variance(self, values: list[float]) -> float:
        """Variance of the mean of a config's seed values."""
        var = 0.0
        if self.binomial and self.n_val:
            n = self.n_val
            p = (min(max(statistics.fmean(values), 0.0), 1.0) * n + 2) / (n + 4)
            var += p * (1 - p) / (n + 4)
        if len(values) > 1:
            var += statistics.variance(values) / len(values)
        return var

    def margin(self, a: list[float], b: list[float]) -> float:
        """The gap between two configs' values (their seeds' values `a`, `b`) that the data resolves."""
        if self.z <= 0:
            return 0.0
        return self.z * math.sqrt(self.variance(a) + self.variance(b))

    def describe(self) -> dict:
        return {"z": self.z, "n_val": self.n_val, "binomial": self.binomial}
