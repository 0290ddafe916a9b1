"""Error control across repeated looks, for ``mimax decide`` (docs/VERIFY.md, "mimax decide").

``decide`` looks at its claims after each batch of seeds. Testing at a fixed level at every look would
spend the error rate again at each one; here each claim's test spends it over its looks instead:

- **Looks at a declared ladder of seeds.** Look k reads, for every configuration a claim weighs, the
  trials whose seed is below n_k (n_1 < n_2 < … ≤ the declared maximum N). The data of a look never
  changes afterwards, so every decision can be recomputed from the database: no state of its own.
- **Group-sequential α-spending** (Lan & DeMets 1983) at information fraction t_k = n_k / N. The
  boundary c_k solves P(Z_1 < c_1, …, Z_{k−1} < c_{k−1}, Z_k ≥ c_k) = α(t_k) − α(t_{k−1}) for the
  canonical joint distribution (corr(Z_i, Z_j) = √(t_i / t_j)); a claim's test at look k rejects when
  its p-value is at most the nominal level 1 − Φ(c_k). The default spending function is Pocock-type,
  α(t) = α·ln(1 + (e − 1)t): decide exists to stop adding seeds as soon as a claim is clear, and most
  claims here are clear after a few; O'Brien–Fleming-type (``--spending obf``) keeps α for the end.
- **Holm within each family, at every look** (the graphical approach of Maurer & Bretz 2013, of which
  Holm is the simplest case): an open claim of a family with m open claims is tested at α / m; when
  one is decided its share goes to the others, whose boundaries are recomputed at the larger level.
- "holds" and "fails" are two one-sided tests, each spending α / 2, as in ``mimax verify``.

Why not anytime-valid e-values: their validity for a contrast of a linear model with a pooled
variance rests on group-invariance arguments proven for the one-sample t-test, not for this design;
the group-sequential boundaries are the classical, well-understood choice for a declared maximum of
looks, and the ladder of seeds is exactly such a declaration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as sps

__all__ = ["Design", "Look", "boundaries", "ladder", "nominal_levels", "run_family", "spent"]


def ladder(first: int, most: int, looks: int) -> list[int]:
    """Seeds per configuration at each look: ``looks`` points from ``first`` to ``most``, spaced
    geometrically (each batch adds about as many seeds, relative to what is there, as the last)."""
    if not 2 <= first <= most or looks < 1:
        raise ValueError(f"a ladder needs 2 ≤ first ≤ most and ≥ 1 look, got {first}, {most}, {looks}")
    if looks == 1 or first == most:
        return [most]
    ratio = (most / first) ** (1 / (looks - 1))
    points = sorted({min(most, max(first, round(first * ratio ** k))) for k in range(looks)})
    return points if points[-1] == most else [*points, most]


SPENDING = ("pocock", "obf")


def spent(t: float, alpha: float, kind: str = "pocock") -> float:
    """The error spent by information fraction t: Lan–DeMets' Pocock-type α·ln(1 + (e − 1)t), which
    spends early so that a clear effect stops at the first looks, or the O'Brien–Fleming-type
    2 − 2Φ(z_{1−α/2} / √t), which keeps almost all of α for the last look."""
    if t <= 0:
        return 0.0
    t = min(1.0, t)
    if kind == "pocock":
        return float(alpha * math.log(1 + (math.e - 1) * t))
    return float(2 - 2 * sps.norm.cdf(sps.norm.ppf(1 - alpha / 2) / math.sqrt(t)))


_GRID = 601  # points of the density grid: boundaries within 2e-5 on z of a 4,001-point grid (a test checks)


@lru_cache(maxsize=4096)
def boundaries(fractions: tuple[float, ...], alpha: float, kind: str = "pocock") -> tuple[float, ...]:
    """The upper boundaries c_1..c_k (z scale) for looks at ``fractions`` (increasing, ≤ 1) spending
    ``alpha`` one-sided: the recursive integration of Armitage, McPherson and Rowe (1969) on the
    Brownian motion W(t) = √t Z(t), as gsDesign computes them. Each look's density of W on the region
    that has not crossed yet is carried on a grid; the crossing probability of the next look is one
    integral against the normal tail, solved for its boundary."""
    from scipy.optimize import brentq

    out: list[float] = []
    grid = density = None
    prev_t = 0.0
    for t in fractions:
        target = spent(t, alpha, kind) - spent(prev_t, alpha, kind)
        dt = t - prev_t
        if grid is None:
            c = float(sps.norm.isf(target)) if target > 0 else math.inf
        else:
            sd = math.sqrt(dt)

            def crossing(c: float) -> float:
                tail = sps.norm.sf((c * math.sqrt(t) - grid) / sd)
                return float(np.trapezoid(density * tail, grid)) - target

            c = float(brentq(crossing, -1.0, 40.0, xtol=1e-10)) if target > 0 else math.inf
        out.append(c)
        # the density of W(t) on {not crossed so far}, on a grid up to this look's boundary
        top = c * math.sqrt(t) if math.isfinite(c) else 10 * math.sqrt(t)
        new_grid = np.linspace(-10 * math.sqrt(t), top, _GRID)
        if grid is None:
            density = sps.norm.pdf(new_grid, scale=math.sqrt(t))
        else:
            kernel = sps.norm.pdf((new_grid[:, None] - grid[None, :]) / sd) / sd
            density = np.trapezoid(kernel * density[None, :], grid, axis=1)
        grid, prev_t = new_grid, t
    return tuple(out)


def nominal_levels(fractions: Sequence[float], alpha: float, kind: str = "pocock") -> list[float]:
    """The p-value at or below which a claim's test rejects at each look."""
    return [float(sps.norm.sf(c)) for c in boundaries(tuple(round(f, 12) for f in fractions), alpha, kind)]


@dataclass
class Look:
    """One claim at one look: its seeds per configuration, and its one-sided p-values."""

    seeds: int
    p_holds: float
    p_fails: float


@dataclass
class Design:
    """A decide run's declaration: the ladder of seeds per configuration and alpha."""

    ladder: list[int]
    alpha: float = 0.05
    spending: str = "pocock"

    @property
    def most(self) -> int:
        return self.ladder[-1]

    def fraction(self, seeds: int) -> float:
        return min(1.0, seeds / self.most)


@dataclass
class Outcome:
    verdict: str = "open"  # holds, fails, or open (not decided at any look so far)
    look: int | None = None  # the look (index into the claim's looks) that decided it


def run_family(design: Design, looks: dict[str, list[Look]]) -> dict[str, Outcome]:
    """Sequential Holm over one family: ``looks`` maps each claim to its looks in order, each with more
    seeds than the one before (a claim whose study did not grow has fewer). Look by look, each side
    ("holds", "fails") is its own family at alpha / 2: a claim still open is tested at that side's level
    divided by the claims not yet decided on that side (a claim decided the other way keeps its share
    unused, so nothing is recycled from a hypothesis that was not rejected). Returns each claim's outcome."""
    out = {cid: Outcome() for cid in looks}
    side_alpha = design.alpha / 2
    for k in range(max((len(v) for v in looks.values()), default=0)):
        for side in ("holds", "fails"):
            while True:  # recycle: a decision raises the others' share; test them again at this look
                rest = sum(1 for c in looks if out[c].verdict != side)
                level = side_alpha / max(1, rest)
                decided = None
                for cid in looks:
                    if out[cid].verdict != "open" or len(looks[cid]) <= k:
                        continue
                    fractions = [design.fraction(x.seeds) for x in looks[cid][: k + 1]]
                    look = looks[cid][k]
                    nominal = nominal_levels(fractions, level, design.spending)[-1]
                    if (look.p_holds if side == "holds" else look.p_fails) <= nominal:
                        decided = cid
                        break
                if decided is None:
                    break
                out[decided] = Outcome(side, k)
    return out
