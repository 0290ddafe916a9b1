"""Read one study out of a results database into tidy pandas frames, read-only.

The database is read through a read-only :class:`~mimax.storage.store.Store` (SQLite through a ``mode=ro``
URI, so analysing a copied database never changes it; PostgreSQL sessions marked read-only), at any schema
revision this mimax knows: a column an older revision lacks is not there (ceiling and true_mi before 0003). One query per table; JSON
columns are decoded with ``json.loads`` and flattened into dotted columns ("encoder.name", "train.lr", ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mimax.contract import EVAL_FLOATS, SECTION_FAMILIES, TRIAL_FLOATS, ceiling
from mimax.errors import ConfigError
from mimax.storage.store import Store

__all__ = ["AnalysisError", "StudyData", "ceilings", "final", "list_studies", "load"]

SHORT_FACTORS = SECTION_FAMILIES  # a short column is its section's "name": encoder, critic, ...
_TRIAL_COLUMNS = ("trial_key", "state", "seed", "replicate_group", "replicate_index", "optuna_trial_number", "node",
                  "started_at", "ended_at", "last_step", "error", "config_hash", *TRIAL_FLOATS)


class AnalysisError(ConfigError):
    """Bad analysis input (an empty study, a bad option); ``str()`` is one line. A problem with the
    database itself is a :class:`mimax.storage.db.DatabaseError`, a ConfigError too."""

    def __init__(self, message: str):
        super().__init__("", message)


@dataclass
class StudyData:
    """One study, read once.

    ``study``: the mimax_studies row, JSON decoded (``space_json`` also as ``space``).
    ``trials``: one row per trial — trial_key, state, seed, replicate_group, replicate_index,
    optuna_number, node, started_at / ended_at (UTC), duration_s, last_step, error, config_hash, ceiling
    (the largest value its estimator can report, log K for NCE; NaN where unbounded) and true_mi (nats;
    NaN where the data does not know it) — both absent in a database before revision 0003 —, ``config_id`` (= replicate_group: one
    configuration across its seeds), the short factor columns data / encoder / critic / estimator (each
    section's ``name``; None where the section is null), and the whole config flattened into dotted
    columns ("train.lr", "eval.probe.name"; lists as JSON text).
    ``evaluations``: one row per (trial_key, step) — the float columns bound_train, bound_test,
    probe_accuracy, loss, wall_s and one column per other key of the evaluation record (event,
    log_cond_p50, classifier_accuracy, ...).
    ``factors``: the searched parameters that take more than one value, short names first.
    ``environment``: the mimax_environment rows (``extra`` decoded)."""

    study: dict
    trials: pd.DataFrame
    evaluations: pd.DataFrame
    factors: list[str]
    url: str = ""  # the database URL, password hidden
    environment: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.study["name"]

    def trial_seconds(self) -> pd.Series:
        """Seconds of machine time per trial (indexed by trial_key): its last evaluation's clock over the
        seeds packed with it (a pack's members share one clock); trials with no clock are left out."""
        ev = self.evaluations
        if "wall_s" not in ev.columns or ev.empty:
            return pd.Series(dtype=float)
        last = ev.sort_values(["trial_key", "step"]).drop_duplicates("trial_key", keep="last").set_index("trial_key")
        pack = last["pack_size"].fillna(1) if "pack_size" in last.columns else 1
        per = (last["wall_s"] / pack).dropna()
        return per[per > 0]


# ---- flattening -----------------------------------------------------------------------------------


def flatten(obj: Any, prefix: str = "", out: dict | None = None) -> dict:
    """Nested mappings as one level of dotted keys; lists become their JSON text (hashable, CSV-able).
    A ``None`` section (e.g. ``critic`` in adversarial mode) is kept as a ``None`` leaf."""
    out = {} if out is None else out
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if value:
                flatten(value, f"{name}.", out)
            else:
                out[name] = None
        elif isinstance(value, list):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def _records_frame(records: list[dict]) -> pd.DataFrame:
    """DataFrame of flat-or-nested dicts: the fast constructor, then flatten columns that hold dicts."""
    frame = pd.DataFrame(records) if records else pd.DataFrame()
    for col in list(frame.columns):
        if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, (dict, list))).any():
            flat = pd.DataFrame.from_records(
                [flatten({col: v}) if isinstance(v, (dict, list)) else {col: v} for v in frame[col]],
                index=frame.index,
            )
            frame = pd.concat([frame.drop(columns=[col]), flat], axis=1)
    return frame


# ---- loading --------------------------------------------------------------------------------------


def list_studies(db_url: str) -> list[dict]:
    """Every study in the database (its row, JSON decoded) with ``trial_counts``: {state: n}."""
    with Store(db_url, read_only=True) as store:
        return store.list_studies()


def load(db_url: str, study: str) -> StudyData:
    """Study ``study`` of the database at ``db_url``: its row, trials, evaluations and factors."""
    with Store(db_url, read_only=True) as store:
        info = store.require_study(study)
        trial_rows = store.trials(study)
        eval_rows = store.evaluation_rows(study)
        environment = store.environments(study)
    info["space"] = info.get("space_json")
    trials = _trials_frame(trial_rows)
    _check_content(study, trials, len(eval_rows))
    factors = _factors(trials, info.get("space_json"))
    return StudyData(study=info, trials=trials, evaluations=_evaluations_frame(eval_rows), factors=factors,
                     url=store.display_url, environment=environment)


def _check_content(name: str, trials: pd.DataFrame, n_evals: int) -> None:
    if trials.empty:
        raise AnalysisError(f"study '{name}' has no trials yet")
    states = trials["state"].value_counts().to_dict()
    shown = ", ".join(f"{s}: {n}" for s, n in sorted(states.items()))
    if set(states) <= {"failed", "diverged"}:
        errors = trials["error"].dropna()
        first = f"; first error: {str(errors.iloc[0]).strip().splitlines()[0][:200]}" if len(errors) else ""
        raise AnalysisError(f"all {len(trials)} trials of study '{name}' failed ({shown}){first}")
    if n_evals == 0:
        raise AnalysisError(f"study '{name}' has no evaluations yet ({len(trials)} trials; {shown})")


def _trials_frame(rows: list[dict]) -> pd.DataFrame:
    # The columns the database has: one at an older schema revision lacks ceiling and true_mi.
    columns = [c for c in _TRIAL_COLUMNS if not rows or c in rows[0]]
    base = pd.DataFrame(rows, columns=columns).rename(columns={"optuna_trial_number": "optuna_number"})
    base = base.astype({c: float for c in TRIAL_FLOATS if c in base.columns})
    for col in ("started_at", "ended_at"):
        base[col] = pd.to_datetime(base[col], utc=True)
    base["duration_s"] = (base["ended_at"] - base["started_at"]).dt.total_seconds()
    base["config_id"] = base["replicate_group"].astype("str")
    flat = _records_frame([flatten({k: v for k, v in r["config"].items() if k != "seed"}) for r in rows])
    flat.index = base.index
    flat = flat.drop(columns=[c for c in flat.columns if c in base.columns])
    none = pd.Series([None] * len(flat), index=flat.index, dtype=object)
    short = {name: flat.get(f"{name}.name", none) for name in SHORT_FACTORS}
    flat = flat.drop(columns=[n for n in SHORT_FACTORS if n in flat.columns])  # a None section: see short
    return pd.concat([base, pd.DataFrame(short, index=base.index), flat], axis=1)


def _evaluations_frame(rows: list) -> pd.DataFrame:
    columns = ["trial_key", "step", *EVAL_FLOATS]
    if not rows:
        return pd.DataFrame(columns=columns)
    cols = list(zip(*rows))
    frame = pd.DataFrame({c: np.asarray(v, dtype=float) if c in EVAL_FLOATS else np.asarray(v)
                          for c, v in zip(columns, cols[:-1])})
    frame["trial_key"] = frame["trial_key"].astype("str")
    # One json.loads over the whole column: the per-call overhead is a large share of tiny records.
    extra = _records_frame(json.loads("[" + ",".join(cols[-1]) + "]"))
    extra = extra.drop(columns=[c for c in extra.columns if c in columns])
    return pd.concat([frame, extra], axis=1)


def _factors(trials: pd.DataFrame, space: Any) -> list[str]:
    """Searched parameters of the space that take more than one value in the data (short names for
    ``<section>.name``); without a space, every config column that varies."""
    configs = trials.drop_duplicates("config_id")
    searched = list((space or {}).get("params", {}) or {}) if isinstance(space, dict) else []
    candidates = [k for k in searched if k in trials.columns] or [
        c for c in trials.columns if "." in c and not c.startswith("eval.")]
    out = []
    for key in candidates:
        if configs[key].astype("str").nunique(dropna=False) > 1:
            section, _, leaf = key.partition(".")
            out.append(section if leaf == "name" and section in SHORT_FACTORS else key)
    return sorted(out, key=lambda f: ("." in f, out.index(f)))


def ceilings(trials: pd.DataFrame) -> pd.Series:
    """Each trial's ceiling in nats (NaN where its estimator has none): the stored ``ceiling`` column, or
    in a database from before revision 0003 the rule that revision backfills with (``contract.ceiling``)."""
    if "ceiling" in trials.columns:
        return pd.to_numeric(trials["ceiling"], errors="coerce")
    k = trials.get("train.batch_size", pd.Series(np.nan, index=trials.index))
    configs = [{"estimator": e, "train": {} if pd.isna(b) else {"batch_size": b}}
               for e, b in zip(trials.get("estimator", [None] * len(trials)), k)]
    return pd.Series([ceiling(c) for c in configs], index=trials.index, dtype=float)


# ---- final values ---------------------------------------------------------------------------------


def final(data: StudyData, how: str = "last", metric: str = "probe_accuracy") -> pd.DataFrame:
    """One row per trial: the trial's columns and its final evaluation ("last": the last step;
    "best": the evaluation with the highest ``metric``, the last one when ``metric`` is missing).
    Trials without evaluations keep NaN metrics."""
    if how not in ("last", "best"):
        raise AnalysisError(f"how must be 'last' or 'best', got {how!r}")
    ev = data.evaluations
    if how == "best":
        if metric not in ev.columns:
            raise AnalysisError(f"no metric '{metric}' in the evaluations of study '{data.name}' "
                                f"(metrics: {', '.join(c for c in ev.columns if c not in ('trial_key', 'step'))})")
        ranked = ev.assign(_m=ev[metric].fillna(-np.inf)).sort_values(["trial_key", "_m", "step"], kind="stable")
        picked = ranked.drop_duplicates("trial_key", keep="last").drop(columns=["_m"])
    else:
        picked = ev.sort_values(["trial_key", "step"], kind="stable").drop_duplicates("trial_key", keep="last")
    overlap = [c for c in picked.columns if c in data.trials.columns and c != "trial_key"]
    picked = picked.drop(columns=overlap)
    return data.trials.merge(picked, on="trial_key", how="left", validate="one_to_one")
