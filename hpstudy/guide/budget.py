"""The epoch budget of a guide: one total, split between the stages by weight.

Epochs are counted as they are trained: each trial's history length (a
pruned or early-stopped trial counts the epochs it ran), plus the lr range
test's steps as the fraction of an epoch they are. When a stage starts, the
epochs not yet spent are split between it and the stages after it in
proportion to their weights, so a stage that finishes early (accepted at
once, trials pruned or stopped early) leaves more to the later ones; a stage
never gets less than one of its trials while the total allows it. The total
is a hard bound: no trial starts that could take it past the budget.

Pure arithmetic: :class:`Budget` knows nothing of Optuna or MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..analyze.guide import trial_epochs

__all__ = ["Budget", "fmt_epochs", "fmt_split", "split", "trial_epochs"]


@dataclass
class Budget:
    """Total epochs, stage weights, and what each stage has spent so far.

    Attributes:
        total: epochs for all stages together.
        weights: stage -> relative weight (any positive numbers).
        spent: stage -> epochs spent (trials and the lr range test).
    """

    total: float
    weights: dict[str, float]
    spent: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.total <= 0:
            raise ValueError(f"a budget needs epochs to spend, got {self.total}")
        if not self.weights or any(w <= 0 for w in self.weights.values()):
            raise ValueError("every stage needs a positive weight")
        for stage in self.weights:
            self.spent.setdefault(stage, 0.0)

    @property
    def stages(self) -> list[str]:
        return list(self.weights)

    @property
    def used(self) -> float:
        """Epochs spent by every stage together."""
        return sum(self.spent.values())

    @property
    def left(self) -> float:
        """Epochs not yet spent (never below 0)."""
        return max(0.0, self.total - self.used)

    def plan(self) -> dict[str, float]:
        """The split of the whole budget by weight (what is printed up front)."""
        return split(self.total, self.weights)

    def split_from(self, stage: str, floors: Mapping[str, float] | None = None
                   ) -> dict[str, float]:
        """The epochs left, split between ``stage`` and the stages after it by weight.

        Args:
            stage: the stage about to run.
            floors: stage -> epochs of one of its trials; a stage's share is raised
                to its floor when the epochs left allow it (the later stages'
                shares shrink in proportion).
        """
        rest = self.stages[self.stages.index(stage):]
        return split(self.left, {s: self.weights[s] for s in rest}, floors)

    def add(self, stage: str, epochs: float) -> None:
        """Count ``epochs`` more against ``stage``."""
        self.spent[stage] = self.spent.get(stage, 0.0) + float(epochs)


def split(total: float, weights: Mapping[str, float],
          floors: Mapping[str, float] | None = None) -> dict[str, float]:
    """``total`` in proportion to ``weights``, each share raised to its floor where possible.

    Stages take their share in order: each gets its weight's part of what is
    left, or its floor if that is more (and what is left allows it); the
    stages after it share the rest. Without floors this is the plain
    proportional split.
    """
    floors = floors or {}
    order = list(weights)
    shares: dict[str, float] = {}
    left = float(total)
    for i, s in enumerate(order):
        rest = sum(weights[t] for t in order[i:])
        share = max(left * weights[s] / rest, min(floors.get(s, 0.0), left))
        shares[s] = share
        left -= share
    return shares


def fmt_split(shares: Mapping[str, float]) -> str:
    """``1-anything 36, 2-everything 108, 3-right-thing 216``."""
    return ", ".join(f"{s} {fmt_epochs(x)}" for s, x in shares.items())


def fmt_epochs(x: float) -> str:
    """Epochs for a human: whole numbers as such, else one decimal."""
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 else f"{x:.1f}"
