"""Read one study out of a results database into tidy pandas frames, read-only.

SQLite files are opened through a read-only URI (``mode=ro``) so analysing a copied database never
changes it; PostgreSQL sessions are marked read-only. One query per table; JSON columns are decoded
with ``json.loads`` and flattened into dotted columns ("encoder.name", "train.lr", ...).
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from mimax.errors import ConfigError
from mimax.study.models import Environment, Evaluation, Study, Trial

__all__ = ["AnalysisError", "StudyData", "final", "list_studies", "load", "open_engine", "scrub"]

SHORT_FACTORS = ("encoder", "critic", "estimator", "data")  # short column = the section's "name"
EVAL_FLOATS = ("bound_train", "bound_test", "probe_accuracy", "loss", "wall_s")
VERSION_TABLE = "mimax_alembic_version"
_TRIAL_COLUMNS = ("id", "trial_key", "state", "seed", "replicate_group", "replicate_index", "optuna_trial_number",
                  "node", "started_at", "ended_at", "last_step", "error", "config_hash", "config_json")


class AnalysisError(ConfigError):
    """Bad analysis input (unknown or empty study, old schema, bad URL); ``str()`` is one line."""

    def __init__(self, message: str):
        super().__init__("", message)


@dataclass
class StudyData:
    """One study, read once.

    ``study``: the mimax_studies row, JSON decoded (``space_json`` also as ``space``).
    ``trials``: one row per trial — trial_key, state, seed, replicate_group, replicate_index,
    optuna_number, node, started_at / ended_at (UTC), duration_s, last_step, error, config_hash,
    ``config_id`` (= replicate_group: one configuration across its seeds), the short factor columns
    encoder / critic / estimator / data (each section's ``name``; None where the section is null), and
    the whole config flattened into dotted columns ("train.lr", "eval.probe.name"; lists as JSON text).
    ``evaluations``: one row per (trial_key, step) — the float columns bound_train, bound_test,
    probe_accuracy, loss, wall_s and one column per other key of the evaluation record (event,
    log_cond_p50, classifier_accuracy, true_mi, ...).
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


# ---- connecting -----------------------------------------------------------------------------------


def _head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from mimax.study.store import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    return ScriptDirectory.from_config(cfg).get_current_head()


def open_engine(db_url: str) -> tuple[sa.Engine, str]:
    """A read-only engine on ``db_url`` and the URL to show (no password). Raises AnalysisError."""
    from mimax.study.store import StoreError, _parse_url, redact

    try:
        parsed = _parse_url(db_url)
    except StoreError as e:
        raise AnalysisError(str(e)) from None
    shown = redact(db_url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database).expanduser().absolute()
        if not path.is_file():
            raise AnalysisError(f"no database file at {path}")
        # A read-only URI: nothing (not even a WAL checkpoint) writes to the file.
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        engine = sa.create_engine("sqlite+pysqlite://", creator=lambda: _sqlite_ro(uri), poolclass=sa.pool.NullPool)
        return engine, str(path)
    engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5},
                              execution_options={"postgresql_readonly": True})
    return engine, shown


def _sqlite_ro(uri: str):
    """A read-only connection. SQLite still needs the WAL index beside the file; where it can neither
    open nor create it (a read-only directory), fall back to ``immutable=1`` (no locking at all)."""
    import sqlite3

    conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
    return conn


def _connect(engine: sa.Engine, shown: str) -> sa.Connection:
    try:
        return engine.connect()
    except sa_exc.DBAPIError as e:
        raise AnalysisError(f"cannot open {shown}: {_first_line(e)}") from None


def _first_line(exc: BaseException) -> str:
    msg = str(getattr(exc, "orig", None) or exc).strip()
    return msg.splitlines()[0].strip() if msg else type(exc).__name__


def _check_schema(conn: sa.Connection, shown: str) -> str:
    try:
        tables = set(sa.inspect(conn).get_table_names())
    except sa_exc.DBAPIError as e:  # e.g. a file that is not a SQLite database
        raise AnalysisError(f"cannot read {shown}: {_first_line(e)}") from None
    if "mimax_studies" not in tables:
        raise AnalysisError(f"no mimax tables in {shown}: not a mimax results database")
    head = _head_revision()
    current = None
    if VERSION_TABLE in tables:
        current = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    if current is None:
        raise AnalysisError(f"mimax tables in {shown} have no schema version: not written by mimax?")
    if current != head:
        newer = current.isdigit() and head.isdigit() and int(current) > int(head)
        if newer:
            raise AnalysisError(f"mimax schema in {shown} is at revision {current}, newer than this mimax "
                                f"knows (head {head}); upgrade mimax")
        raise AnalysisError(f"mimax schema in {shown} is at revision {current}, this mimax needs {head}; "
                            f"upgrade it with `mimax db upgrade --db URL` (on a copy if it must stay as it is)")
    return current


def _query(conn: sa.Connection, stmt, shown: str) -> list:
    try:
        return conn.execute(stmt).all()
    except sa_exc.DBAPIError as e:
        raise AnalysisError(f"cannot read {shown}: {_first_line(e)}") from None


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


def scrubbed(fn):
    """Run ``fn(db_url, ...)``; an AnalysisError it raises never shows the URL's password (a driver's
    message may quote the connection string), neither as typed nor URL-encoded."""
    import functools

    @functools.wraps(fn)
    def wrapper(db_url, *args, **kwargs):
        try:
            return fn(db_url, *args, **kwargs)
        except AnalysisError as e:
            raise AnalysisError(scrub(str(e), db_url)) from None

    return wrapper


def scrub(text: str, db_url: str) -> str:
    from urllib.parse import quote, quote_plus

    try:
        password = sa.engine.make_url(db_url).password or ""
    except Exception:
        return text
    for form in {password, quote(password, safe=""), quote_plus(password)} - {""}:
        text = text.replace(form, "***")
    return text


@scrubbed
def list_studies(db_url: str) -> list[dict]:
    """Every study in the database: name, status, space_source, budget, created_at, trial counts by state."""
    engine, shown = open_engine(db_url)
    try:
        with _connect(engine, shown) as conn:
            _check_schema(conn, shown)
            studies = _query(conn, sa.select(Study.__table__).order_by(Study.name), shown)
            counts = _query(conn, sa.select(Trial.study_id, Trial.state, sa.func.count())
                            .group_by(Trial.study_id, Trial.state), shown)
    finally:
        engine.dispose()
    out = []
    for row in studies:
        by_state = {state: n for sid, state, n in counts if sid == row.id}
        out.append({"name": row.name, "status": row.status, "space_source": row.space_source, "budget": row.budget,
                    "created_at": row.created_at, "n_trials": sum(by_state.values()), "trial_counts": by_state})
    return out


@scrubbed
def load(db_url: str, study: str) -> StudyData:
    """Study ``study`` of the database at ``db_url``: its row, trials, evaluations and factors."""
    engine, shown = open_engine(db_url)
    try:
        with _connect(engine, shown) as conn:
            _check_schema(conn, shown)
            row = _query(conn, sa.select(Study.__table__).where(Study.name == study), shown)
            if not row:
                names = [r[0] for r in _query(conn, sa.select(Study.name).order_by(Study.name), shown)]
                raise AnalysisError(f"unknown study '{study}' in {shown} (known: {', '.join(names) or 'none'})")
            info = dict(row[0]._mapping)
            sid = info["id"]
            cols = [Trial.__table__.c[c] for c in _TRIAL_COLUMNS]
            trial_rows = _query(conn, sa.select(*cols).where(Trial.study_id == sid).order_by(Trial.id), shown)
            ev = Evaluation.__table__.c
            eval_rows = _query(
                conn,
                sa.select(ev.trial_id, ev.step, *(ev[c] for c in EVAL_FLOATS), ev.metrics)
                .join(Trial.__table__, Trial.id == ev.trial_id)
                .where(Trial.study_id == sid)
                .order_by(ev.trial_id, ev.step),
                shown,
            )
            env_rows = _query(conn, sa.select(Environment.__table__).where(Environment.study_id == sid)
                              .order_by(Environment.session), shown)
    finally:
        engine.dispose()

    for key in ("space_json", "directions", "metrics"):
        if isinstance(info.get(key), str):
            info[key] = json.loads(info[key])
    info["space"] = info.get("space_json")
    trials = _trials_frame(trial_rows)
    _check_content(study, trials, len(eval_rows))
    evaluations = _evaluations_frame(eval_rows, dict(zip(trials["trial_id"], trials["trial_key"])))
    environment = []
    for r in env_rows:
        env = dict(r._mapping)
        env["extra"] = json.loads(env["extra"]) if env.get("extra") else {}
        environment.append(env)
    factors = _factors(trials, info.get("space_json"))
    return StudyData(study=info, trials=trials.drop(columns=["trial_id"]), evaluations=evaluations,
                     factors=factors, url=shown, environment=environment)


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


def _trials_frame(rows: list) -> pd.DataFrame:
    base = pd.DataFrame.from_records([r[:-1] for r in rows], columns=["trial_id", *_TRIAL_COLUMNS[1:-1]])
    base = base.rename(columns={"optuna_trial_number": "optuna_number"})
    for col in ("started_at", "ended_at"):
        base[col] = pd.to_datetime(base[col], utc=True)
    base["duration_s"] = (base["ended_at"] - base["started_at"]).dt.total_seconds()
    base["config_id"] = base["replicate_group"].astype("str")
    configs = [json.loads(r[-1]) for r in rows]
    flat = _records_frame([flatten({k: v for k, v in c.items() if k != "seed"}) for c in configs])
    flat.index = base.index
    flat = flat.drop(columns=[c for c in flat.columns if c in base.columns])
    short = {}
    for name in SHORT_FACTORS:
        if f"{name}.name" in flat.columns:
            short[name] = flat[f"{name}.name"]
        elif name not in flat.columns:
            short[name] = pd.Series([None] * len(flat), index=flat.index, dtype=object)
    flat = flat.drop(columns=[n for n in SHORT_FACTORS if n in flat.columns])  # a None section: see short
    return pd.concat([base, pd.DataFrame(short, index=base.index), flat], axis=1)


def _evaluations_frame(rows: list, keys: dict) -> pd.DataFrame:
    columns = ["trial_id", "step", *EVAL_FLOATS]
    if not rows:
        return pd.DataFrame(columns=["trial_key", "step", *EVAL_FLOATS])
    cols = list(zip(*rows))
    frame = pd.DataFrame({c: np.asarray(v) if c in ("trial_id", "step") else np.asarray(v, dtype=float)
                          for c, v in zip(columns, cols[:-1])})
    # One json.loads over the whole column: the per-call overhead is a large share of tiny records.
    extra = _records_frame(json.loads("[" + ",".join(cols[-1]) + "]"))
    extra = extra.drop(columns=[c for c in extra.columns if c in columns or c == "trial_key"])
    frame.insert(0, "trial_key", frame["trial_id"].map(keys).astype("str"))
    return pd.concat([frame.drop(columns=["trial_id"]), extra], axis=1)


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
