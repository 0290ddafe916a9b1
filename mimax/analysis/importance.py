"""Hyperparameter importance from the study's Optuna study (PED-ANOVA and fANOVA), read-only.

The Optuna study lives in the same database ("mimax:<name>"): one Optuna trial per configuration whose
value is the mean objective over its completed seed replicates. Importances are normalised to sum to 1.
A method that cannot say anything meaningful returns an empty mapping and a one-line reason.
"""

from __future__ import annotations

from mimax.analysis.load import StudyData
from mimax.storage.db import Database, DatabaseError, first_line

__all__ = ["METHODS", "PED_ANOVA_MIN_CONFIGS", "importances"]

METHODS = ("ped_anova", "fanova")
# PED-ANOVA contrasts the top 10 % of the configurations with the rest, and pads that top set to 2 when
# it holds fewer: on a small study it compares a fixed handful, and every 3 × 2 grid gives 0.56 / 0.44
# whatever the data. It is computed only where the top 10 % holds at least 5 configurations.
PED_ANOVA_MIN_CONFIGS = 50


def importances(db_url: str, data: StudyData | str, *, methods=METHODS, seed: int = 0) -> dict:
    """``{"ped_anova": {param: importance}, "fanova": {...}, "reasons": {method: why it is empty}}``
    for the Optuna study of ``data`` (a loaded study, or a study name whose Optuna study is
    ``mimax:<name>``). Parameters are Optuna's names (``critic.name``, ``train.lr``)."""
    import logging

    import optuna

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown importance method {unknown[0]!r} (methods: {', '.join(METHODS)})")
    name = data.study["optuna_study_name"] if isinstance(data, StudyData) else f"mimax:{data}"
    out: dict = {m: {} for m in methods}
    out["reasons"] = {}

    def skip(reason: str) -> dict:
        out["reasons"].update({m: reason for m in methods})
        return out

    try:
        db = Database(db_url)
    except DatabaseError as e:
        return skip(f"no readable Optuna study '{name}': {e}")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        result = _evaluate(db, name, methods, seed, out, skip)
        result["reasons"] = {m: db.scrub(r) for m, r in result["reasons"].items()}
        return result
    finally:
        optuna.logging.set_verbosity(verbosity)


def _evaluate(db: Database, name: str, methods, seed: int, out: dict, skip) -> dict:
    import optuna

    storage = None
    try:
        storage = db.optuna_storage(read_only=True)
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception as e:  # no Optuna tables, an unreadable database, no such study
        if storage is not None:
            storage.engine.dispose()
        return skip(f"no readable Optuna study '{name}': {first_line(e)}")
    try:
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(trials) < 2:
            return skip(f"needs at least 2 completed Optuna trials (configurations), found {len(trials)}")
        seen: dict[str, set] = {}
        for t in trials:
            for p, v in t.params.items():
                seen.setdefault(p, set()).add(repr(v))
        varying = sorted(p for p, values in seen.items()
                         if len(values) > 1 or sum(p in t.params for t in trials) < len(trials))
        if not varying:
            return skip("no searched parameter takes more than one value")
        if len(varying) == 1:
            return skip(f"only one searched parameter varies ({varying[0]}): its importance is trivially 1")
        multi = len(study.directions) > 1
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        distinct = len({tuple(sorted((p, repr(v)) for p, v in t.params.items())) for t in trials})
        for method in methods:
            if method == "ped_anova" and distinct < PED_ANOVA_MIN_CONFIGS:
                out["reasons"][method] = (
                    f"omitted: {distinct} distinct configurations; PED-ANOVA compares the top 10 % of them with "
                    f"the rest and needs at least {PED_ANOVA_MIN_CONFIGS} to tell one study from another (on a "
                    "3 × 2 grid it gives 0.56 / 0.44 whatever the data); the ANOVA table's η² gives each "
                    "factor's share of the variance")
                continue
            try:
                if method == "ped_anova":
                    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
                    # With an explicit target PED-ANOVA takes lower as better.
                    target = (lambda t: -t.values[0] if maximize else t.values[0]) if multi else None
                elif method == "fanova":
                    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
                    target = (lambda t: t.values[0]) if multi else None
                res = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
                out[method] = {k: float(v) for k, v in res.items()}
                if multi:
                    out["reasons"][method] = f"importance for the first objective only ({study.directions[0].name})"
            except Exception as e:  # an evaluator's own limits (e.g. fANOVA and conditional params)
                text = str(e).strip()
                out["reasons"][method] = f"{type(e).__name__}: {text.splitlines()[0] if text else 'failed'}"
        return out
    finally:
        storage.engine.dispose()
