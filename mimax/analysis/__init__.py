"""Read-only analysis of a results database. Never imports Ray or ``mimax.trainables``.

``mimax.analysis.load.load(db_url, study)`` reads one study into a :class:`StudyData` (tidy pandas
frames; not re-exported here, where ``load`` and ``importance`` name the submodules);
``final`` picks each trial's final evaluation; ``configurations`` / ``effects`` / ``pairwise`` /
``correlations`` / ``anova`` / ``compare`` (mimax.analysis.stats) and ``importances`` (Optuna's
PED-ANOVA and fANOVA) compute statistics; ``analyze`` runs them all (what ``mimax analyze`` does) and
``write_report`` (mimax.analysis.report) turns the results into report.html / report.md and figures.
Names are imported on first use, so ``import mimax.analysis`` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AnalysisError": "mimax.analysis.load",
    "StudyData": "mimax.analysis.load",
    "final": "mimax.analysis.load",
    "list_studies": "mimax.analysis.load",
    "anova": "mimax.analysis.stats",
    "compare": "mimax.analysis.stats",
    "configurations": "mimax.analysis.stats",
    "correlations": "mimax.analysis.stats",
    "effects": "mimax.analysis.stats",
    "pairwise": "mimax.analysis.stats",
    "importances": "mimax.analysis.importance",  # the function; mimax.analysis.importance is its module
    "analyze": "mimax.analysis.cli",
    "write_report": "mimax.analysis.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mimax.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
