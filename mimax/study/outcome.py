"""The truth about how a trial ended, decided in one place for the store and for Optuna."""

from __future__ import annotations

from typing import Any, Mapping

TERMINAL = ("completed", "pruned", "failed", "diverged")
STATES = ("pending", "running", *TERMINAL)


def final_state(result: Mapping[str, Any] | None, steps: int, error: bool) -> str:
    """``completed`` only when the last evaluation is the last step; a trial the scheduler stopped
    early is ``pruned`` (never COMPLETE with a partial value); a non-finite loss is ``diverged``."""
    if error:
        return "failed"
    if not result:
        return "pruned"
    if result.get("event") == "diverged":
        return "diverged"
    return "completed" if result.get("step") == steps else "pruned"


def objective_values(final: Mapping[str, Any], metrics: list[str]) -> list[float] | None:
    """The objective values of one replicate's final record, or None if any is missing."""
    out = []
    for m in metrics:
        v = final.get(m)
        if v is None:
            return None
        out.append(float(v))
    return out
