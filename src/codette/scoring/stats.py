"""Confidence intervals: every reported figure carries its probe count and a 95% interval.

Why: the probe sets are small (tens to a few hundred prompts), so a bare "0.62" hides whether the
next checkpoint's "0.58" is worse or noise. Proportions use the Wilson score interval (well behaved
at 0 and 1 and for small n, unlike the normal approximation). A mean of several groups' rates
(``consciousness_score``, ``behavior_score``) uses seeded draws from each rate's Jeffreys posterior,
a parametric bootstrap; being seeded, two runs of ``codette eval`` print the same interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class Figure:
    """One measured number: ``value`` over ``n`` probes with a 95% interval [``low``, ``high``]."""

    value: float
    n: int
    low: float
    high: float
    method: str  # "wilson" | "jeffreys-draws" | "none"

    def as_dict(self) -> dict:
        return asdict(self)

    def fmt(self, pct: bool = True) -> str:
        if self.n == 0:
            return "n/a (n=0)"
        if pct:
            return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}] (n={self.n})"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` (``(nan, nan)`` for n = 0)."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must lie in [0, n={n}]")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp rounding noise so an interval never pokes outside [0, 1] or excludes p itself.
    return (max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p)))


def proportion(outcomes: Sequence[bool | int]) -> Figure:
    """The share of true outcomes with its Wilson interval."""
    n = len(outcomes)
    k = sum(1 for o in outcomes if o)
    if n == 0:
        return Figure(math.nan, 0, math.nan, math.nan, "none")
    lo, hi = wilson(k, n)
    return Figure(k / n, n, lo, hi, "wilson")


def combined_proportions(groups: dict[str, Sequence[bool | int]], fn: Callable[[dict[str, float]], float] | None = None,
                         draws: int = 4000, seed: int = 0) -> Figure:
    """``fn`` (default: the plain mean) of several groups' success rates, with a 95% interval.

    Used for ``consciousness_score`` (the mean of three aspect rates, each weighing a third however
    many probes it has) and ``behavior_score``. The interval comes from drawing every group's rate
    from its Jeffreys posterior Beta(k + 1/2, n - k + 1/2) and taking the 2.5th and 97.5th
    percentiles of ``fn`` over the draws. Unlike a resampling bootstrap it does not collapse to a
    point when a group is all 0 or all 1 (or has a single probe), and for one group it reduces to
    the Jeffreys interval, whose coverage is close to Wilson's. Empty groups are left out.
    """
    fn = fn or (lambda rates: sum(rates.values()) / len(rates))
    live = {k: (sum(1 for o in v if o), len(v)) for k, v in groups.items() if len(v)}
    n = sum(m for _, m in live.values())
    if not live:
        return Figure(math.nan, 0, math.nan, math.nan, "none")
    value = fn({g: k / m for g, (k, m) in live.items()})
    rng = random.Random(seed)
    stats = sorted(fn({g: rng.betavariate(k + 0.5, m - k + 0.5) for g, (k, m) in live.items()}) for _ in range(draws))
    lo, hi = stats[int(0.025 * draws)], stats[int(0.975 * draws) - 1]
    return Figure(value, n, min(lo, value), max(hi, value), "jeffreys-draws")
