"""The results store: mimax's tables in a SQL database, beside Optuna's RDB storage.

The database is the source of truth of a study. ``Store(url)`` opens it through :mod:`mimax.storage.db` (and by
default creates it, or upgrades its schema to this mimax's); every method runs in its own short
transaction on its own pooled connection, so one Store may be shared by the threads of a process, and
several processes may open the same SQLite file. ``Store(url, read_only=True)`` writes nothing: it reads
a database at any schema revision this mimax knows, with the columns that revision has.

Every error a user can cause comes out as a :class:`~mimax.storage.db.DatabaseError` whose message is one line
and never holds the database password.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, literal, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from mimax.contract import EVAL_FLOATS
from mimax.storage.db import (
    STATES,
    STUDY_STATUSES,
    TERMINAL,
    Base,
    Database,
    DatabaseError,
    Environment,
    Evaluation,
    Study,
    Trial,
    head_revision,
    present_columns,
)
from mimax.storage.models import JSON_COLUMNS, UTCDateTime, utcnow

__all__ = ["HEARTBEAT_S", "LEASE_TIMEOUT_S", "LeaseLost", "Store", "StudyExists", "canonical_json", "config_hash"]

_RETRY_SQLSTATES = {"40P01", "40001"}  # PostgreSQL deadlock / serialization failure: safe to rerun
# A driver refreshes its lease every HEARTBEAT_S; one whose last beat is LEASE_TIMEOUT_S old is gone (its
# lease free to claim, and `mimax status` says so). docs/STUDIES.md states both.
HEARTBEAT_S = 5.0
LEASE_TIMEOUT_S = 30.0


def _transaction(*, write: bool):
    """The method runs as one transaction (``Store._run``: reruns on a PostgreSQL deadlock, wraps database
    errors), with the connection as its first argument after ``self``."""

    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            return self._run(lambda conn: method(self, conn, *args, **kwargs), write=write)

        return run

    return wrap


class StudyExists(DatabaseError):
    pass


class LeaseLost(DatabaseError):
    """The driver lease of a study now belongs to someone else (raised by ``heartbeat``)."""


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace; numpy/torch scalars become Python numbers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a trial config without its ``seed``: replicates share it."""
    body = {k: v for k, v in config.items() if k != "seed"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _json_default(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Store:
    """mimax's tables in one database. See the module docstring for the transaction rules."""

    def __init__(self, url: str, *, create: bool = True, read_only: bool = False):
        self.db = Database(url)
        self.url, self.display_url, self.dialect = self.db.url, self.db.shown, self.db.dialect
        self.read_only = read_only
        self._optuna = None
        self._lock = threading.Lock()
        self._study_ids: dict[str, int] = {}
        self._trial_id_cache: dict[int, dict[str, int]] = {}
        self._columns: dict[str, list] | None = None  # at an older revision (read-only): the columns it has
        if read_only or not create:
            self.db.require_file()
        else:
            if self.db.path is not None:
                try:
                    self.db.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise DatabaseError(f"cannot create the directory of {self.db.path}: {e.strerror or e}") from None
            self.db.refuse_foreign()
        self.engine = self.db.readonly_engine() if read_only else self.db.engine()
        self._pid = os.getpid()
        try:
            self._open(create and not read_only)
        except BaseException:
            self.engine.dispose()
            raise

    def _open(self, create: bool) -> None:
        current = self.schema_version()
        if current is None and not create:
            raise DatabaseError(f"no mimax tables in {self.display_url}: not a mimax results database")
        if current == head_revision():
            return
        if self.read_only:
            tables = Base.metadata.sorted_tables
            self._columns = self._run(lambda c: {t.name: present_columns(c, t) for t in tables}, write=False)
            return
        self._run(self.db.migrate, write=True)

    def schema_version(self) -> str | None:
        """The mimax schema revision of the database (``None`` when it has no mimax tables)."""
        return self._run(self.db.revision, write=False)

    # ---- transactions ----------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` with this database's password (as typed or URL-encoded) replaced by ***."""
        return self.db.scrub(text)

    def _connect(self) -> Connection:
        if os.getpid() != self._pid:  # a forked child must not reuse the parent's sockets
            self.engine.dispose(close=False)
            self._pid = os.getpid()
        try:
            return self.engine.connect()
        except sa_exc.DBAPIError as e:
            raise self.db.connect_error(e) from e

    def _run(self, fn: Callable[[Connection], Any], *, write: bool):
        """``fn(conn)`` in one transaction; reruns it on a PostgreSQL deadlock; wraps DB errors."""
        if write and self.read_only:
            raise DatabaseError(f"{self.display_url} is open read-only")
        attempts = 5
        for attempt in range(attempts):
            try:
                with self._connect() as conn:
                    if write:
                        conn.execution_options(mimax_write=True)
                    with conn.begin():
                        return fn(conn)
            except sa_exc.DBAPIError as e:
                code = getattr(getattr(e, "orig", None), "sqlstate", None)
                if code in _RETRY_SQLSTATES and attempt < attempts - 1:
                    time.sleep(0.02 * 2**attempt * (1 + random.random()))
                    continue
                raise self.db.error(f"database error in {self.display_url}", e) from e
            except sa_exc.StatementError as e:  # a value the column type refused, before reaching the DB
                raise self.db.error(f"bad value for {self.display_url}", e) from e
            except UnicodeEncodeError:  # bytes a shell could not decode (as lone surrogates), e.g. in a name
                raise DatabaseError("text that is not valid UTF-8 cannot be stored or looked up") from None

    def _select(self, model):
        """SELECT of the model's columns that the database has; None when it lacks the whole table."""
        if self._columns is None:
            return select(model.__table__)
        columns = self._columns[model.__table__.name]
        return select(*columns) if columns else None

    # ---- helpers ---------------------------------------------------------------------------------

    def _study_id(self, conn: Connection, name: str) -> int:
        # Studies and trials are never deleted, so their ids are cached once seen (saves a query a write).
        sid = self._study_ids.get(name)
        if sid is None:
            sid = conn.scalar(select(Study.id).where(Study.name == name))
            if sid is None:
                raise self.db.unknown_study(conn, name)
            self._study_ids[name] = sid
        return sid

    def _trial_ids(self, conn: Connection, study_id: int, keys: list[str]) -> dict[str, int]:
        """trial_key -> id for those of ``keys`` that exist."""
        cache = self._trial_id_cache.setdefault(study_id, {})
        out = {k: cache[k] for k in keys if k in cache}
        todo = [k for k in keys if k not in out]
        if todo:
            q = select(Trial.trial_key, Trial.id).where(Trial.study_id == study_id, Trial.trial_key.in_(todo))
            found = dict(conn.execute(q).all())
            cache.update(found)
            out.update(found)
        return out

    @staticmethod
    def _row(model, row) -> dict[str, Any]:
        out = dict(row._mapping)
        for col in JSON_COLUMNS.get(model.__table__.name, ()):
            if col in out and out[col] is not None:
                out[col] = json.loads(out[col])
        # Friendlier aliases of the decoded JSON (the column names stay too).
        if model is Trial and "config_json" in out:
            out["config"] = out["config_json"]
        if model is Evaluation and "metrics" in out:
            out["record"] = out["metrics"]
        return out

    @staticmethod
    def _fields(model, fields: Mapping[str, Any], fixed: Iterable[str] = ()) -> dict[str, Any]:
        """Validate and encode column updates: unknown names, bad states, naive datetimes, JSON."""
        table = model.__table__.name
        columns = model.__table__.c
        fixed = {"id", *fixed}
        json_cols = JSON_COLUMNS.get(table, ())
        out = {}
        for key, value in fields.items():
            if key not in columns or key in fixed:
                allowed = ", ".join(c for c in columns.keys() if c not in fixed)
                raise DatabaseError(f"{table}: unknown or read-only field '{key}' (allowed: {allowed})")
            if key in json_cols and value is not None:
                if isinstance(value, str) and key.endswith("_json"):
                    try:
                        json.loads(value)
                    except ValueError:
                        raise DatabaseError(f"{table}.{key}: not valid JSON") from None
                else:
                    try:
                        value = canonical_json(value)
                    except (TypeError, ValueError) as e:
                        raise DatabaseError(f"{table}.{key}: {e}") from None
            if key == "state" and value not in STATES:
                raise DatabaseError(f"{table}.state: {value!r} is not one of {', '.join(STATES)}")
            if key == "status" and value not in STUDY_STATUSES:
                raise DatabaseError(f"{table}.status: {value!r} is not one of {', '.join(STUDY_STATUSES)}")
            if hasattr(value, "tzinfo") and hasattr(value, "hour") and value.tzinfo is None:
                raise DatabaseError(f"{table}.{key}: naive datetime; pass a timezone-aware (UTC) one")
            out[key] = value
        return out

    def _insert(self, model):
        dialect = sqlite_dialect if self.dialect == "sqlite" else pg_dialect
        return dialect.insert(model)

    # ---- studies ---------------------------------------------------------------------------------

    @_transaction(write=True)
    def create_study(
        self, conn: Connection,
        name: str,
        *,
        space_source: str,
        space_json: Any,
        space_fingerprint: str,
        budget: str | None,
        sampler: str,
        directions: list[str],
        metrics: list[str],
        seeds: int,
        n_configs_requested: int | None,
        optuna_study_name: str,
        results_dir: str,
        status: str = "running",
    ) -> int:
        """Insert a study (status 'running' by default) and return its id; raises StudyExists."""
        now = utcnow()
        values = self._fields(
            Study,
            dict(
                name=name, space_source=str(space_source), space_json=space_json,
                space_fingerprint=space_fingerprint, budget=None if budget is None else str(budget), sampler=sampler,
                directions=list(directions), metrics=list(metrics), seeds=int(seeds),
                n_configs_requested=n_configs_requested, optuna_study_name=optuna_study_name,
                results_dir=str(results_dir), status=status, created_at=now, updated_at=now,
            ),
        )
        exists = StudyExists(f"study '{name}' already exists in {self.display_url}")
        if conn.scalar(select(Study.id).where(Study.name == name)) is not None:
            raise exists
        try:
            return conn.execute(self._insert(Study).values(**values).returning(Study.id)).scalar_one()
        except sa_exc.IntegrityError:  # created by another process since the check (PostgreSQL)
            raise exists from None

    def get_study(self, name: str) -> dict | None:
        """The study as a plain dict (JSON columns decoded), or None."""
        row = self._run(lambda c: c.execute(self._select(Study).where(Study.name == name)).first(), write=False)
        return None if row is None else self._row(Study, row)

    @_transaction(write=False)
    def require_study(self, conn: Connection, name: str) -> dict:
        row = conn.execute(self._select(Study).where(Study.name == name)).first()
        if row is None:
            raise self.db.unknown_study(conn, name)
        return self._row(Study, row)

    @_transaction(write=False)
    def list_studies(self, conn: Connection) -> list[dict]:
        """Every study (by name) with ``trial_counts``: {state: n} over every trial state."""
        studies = [dict(self._row(Study, r), trial_counts=dict.fromkeys(STATES, 0))
                   for r in conn.execute(self._select(Study).order_by(Study.name))]
        by_id = {s["id"]: s for s in studies}
        counts = select(Trial.study_id, Trial.state, func.count()).group_by(Trial.study_id, Trial.state)
        for sid, state, n in conn.execute(counts):
            by_id[sid]["trial_counts"][state] = n
        return studies

    @_transaction(write=True)
    def update_study(self, conn: Connection, name: str, **fields) -> None:
        values = self._fields(Study, fields, fixed=("name", "created_at"))
        values.setdefault("updated_at", utcnow())
        if conn.execute(update(Study).where(Study.name == name).values(**values)).rowcount == 0:
            raise self.db.unknown_study(conn, name)

    # ---- driver lease ----------------------------------------------------------------------------

    @_transaction(write=True)
    def claim_driver(
        self, conn: Connection,
        name: str,
        owner: str,
        *,
        stale_after_s: float = LEASE_TIMEOUT_S,
        alive: Callable[[str], bool] | None = None,
    ) -> None:
        """Take the study's driver lease: free, held by ``owner`` already, stale, or ``alive`` says the
        holder is dead. Otherwise raise DatabaseError naming the holder. Atomic (row lock / BEGIN IMMEDIATE)."""
        row = conn.execute(
            select(Study.id, Study.driver_owner, Study.driver_heartbeat_at)
            .where(Study.name == name)
            .with_for_update()
        ).first()
        if row is None:
            raise self.db.unknown_study(conn, name)
        now = utcnow()
        holder, beat = row.driver_owner, row.driver_heartbeat_at
        if holder and holder != owner:
            age = math.inf if beat is None else (now - beat).total_seconds()
            if age < stale_after_s and (alive is None or alive(holder)):
                raise DatabaseError(f"study '{name}' is being run by {holder} (heartbeat {age:.0f} s ago)")
        conn.execute(
            update(Study).where(Study.id == row.id).values(
                driver_owner=owner, driver_heartbeat_at=now, updated_at=now
            )
        )

    @_transaction(write=True)
    def heartbeat(self, conn: Connection, name: str, owner: str) -> None:
        """Refresh the lease; raises LeaseLost if ``owner`` no longer holds it."""
        hit = conn.execute(
            update(Study)
            .where(Study.name == name, Study.driver_owner == owner)
            .values(driver_heartbeat_at=utcnow())
        ).rowcount
        if not hit:
            holder = conn.execute(select(Study.driver_owner).where(Study.name == name)).first()
            if holder is None:
                raise self.db.unknown_study(conn, name)
            raise LeaseLost(f"study '{name}' is no longer run by {owner}: lease held by {holder[0] or 'nobody'}")

    def release_driver(self, name: str, owner: str) -> None:
        """Give the lease up; a no-op when ``owner`` does not hold it."""
        self._run(
            lambda c: c.execute(
                update(Study)
                .where(Study.name == name, Study.driver_owner == owner)
                .values(driver_owner=None, driver_heartbeat_at=None, updated_at=utcnow())
            ),
            write=True,
        )

    # ---- trials ----------------------------------------------------------------------------------

    def _trial_values(self, study_id: int, row: Mapping[str, Any], now) -> dict[str, Any]:
        row = dict(row)
        if "trial_key" not in row:
            raise DatabaseError("mimax_trials: a trial row needs a 'trial_key'")
        config = row.pop("config", None)
        if config is None:
            config = row.get("config_json")
        if isinstance(config, str):
            config = json.loads(config)
        if not isinstance(config, Mapping):
            raise DatabaseError(f"trial '{row['trial_key']}': needs a 'config' mapping")
        row["config_json"] = config
        row.setdefault("config_hash", config_hash(config))
        if row.get("seed") is None:
            if config.get("seed") is None:
                raise DatabaseError(f"trial '{row['trial_key']}': no 'seed' in the row or its config")
            row["seed"] = config["seed"]
        row.setdefault("replicate_group", row["config_hash"])
        row.setdefault("replicate_index", 0)
        row.setdefault("state", "pending")
        row.setdefault("updated_at", now)
        values = self._fields(Trial, row, fixed=("study_id",))
        values["study_id"] = study_id
        values["trial_key"] = str(values["trial_key"])
        return values

    def add_trials(self, study_name: str, rows: list[dict]) -> None:
        """Insert trial rows (state 'pending' unless given); rows whose (study, trial_key) exists are
        left alone. A row: trial_key, config (mapping; or config_json), optional seed (default
        config['seed']), replicate_group (default the config hash), replicate_index (default 0),
        optuna_trial_number and any other mimax_trials column."""
        if not rows:
            return
        now = utcnow()

        def go(conn: Connection) -> None:
            sid = self._study_id(conn, study_name)
            values = [self._trial_values(sid, r, now) for r in rows]
            # executemany needs one column set: fill the columns some rows lack with their defaults
            cols = set().union(*values)
            for v in values:
                for c in cols - v.keys():
                    v[c] = None
            stmt = self._insert(Trial).on_conflict_do_nothing(index_elements=["study_id", "trial_key"])
            conn.execute(stmt, sorted(values, key=lambda v: v["trial_key"]))

        self._run(go, write=True)

    def _trial_update(self, fields: Mapping[str, Any], now) -> dict[str, Any]:
        values = self._fields(Trial, fields, fixed=("study_id", "trial_key"))
        values.setdefault("updated_at", now)
        state = values.get("state")
        if state == "running":
            if "started_at" not in values:
                values["started_at"] = func.coalesce(Trial.started_at, literal(now, UTCDateTime()))
            values.setdefault("ended_at", None)  # running again (a resume): no longer ended
        if state in TERMINAL and "ended_at" not in values:
            values["ended_at"] = func.coalesce(Trial.ended_at, literal(now, UTCDateTime()))
        return values

    @_transaction(write=True)
    def update_trial(self, conn: Connection, study_name: str, trial_key: str, **fields) -> None:
        """Set columns of one trial. Unless given: state 'running' fills started_at (first start only)
        and clears ended_at; a final state (completed, pruned, failed, diverged) fills ended_at."""
        values = self._trial_update(fields, utcnow())
        sid = self._study_id(conn, study_name)
        hit = conn.execute(
            update(Trial).where(Trial.study_id == sid, Trial.trial_key == str(trial_key)).values(**values)
        ).rowcount
        if not hit:
            raise DatabaseError(f"study '{study_name}' has no trial '{trial_key}'")

    @_transaction(write=False)
    def trials(self, conn: Connection, study_name: str, states: Iterable[str] | None = None) -> list[dict]:
        """Trial rows of a study (by id), optionally only those in ``states``; JSON decoded, the config
        also under ``config``."""
        states = None if states is None else list(states)
        for s in states or ():
            if s not in STATES:
                raise DatabaseError(f"unknown trial state {s!r} (states: {', '.join(STATES)})")
        q = self._select(Trial).where(Trial.study_id == self._study_id(conn, study_name))
        if states is not None:
            q = q.where(Trial.state.in_(states))
        return [self._row(Trial, r) for r in conn.execute(q.order_by(Trial.id))]

    @_transaction(write=False)
    def state_counts(self, conn: Connection, study_name: str) -> dict[str, int]:
        sid = self._study_id(conn, study_name)
        out = dict.fromkeys(STATES, 0)
        q = select(Trial.state, func.count()).where(Trial.study_id == sid).group_by(Trial.state)
        out.update(dict(conn.execute(q).all()))
        return out

    # ---- evaluations -----------------------------------------------------------------------------

    @staticmethod
    def _float(key: str, value) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool):
            raise DatabaseError(f"evaluation field {key} is a bool, not a number")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise DatabaseError(f"evaluation field {key} is not a number: {value!r}") from None
        return None if math.isnan(value) else value  # SQLite cannot keep NaN; the JSON record does

    def write_evaluations(self, study_name: str, rows: list[dict]) -> int:
        """Upsert evaluation rows keyed on (trial, step) in ONE transaction, with each row's optional
        ``trial`` field updates. A row: {"trial_key", "step", "record": {...}, "trial": {...}?}.
        Within a batch the last row for a (trial, step) wins. Any bad row (unknown trial_key, bad
        field) raises DatabaseError and nothing of the batch is written. Returns the rows upserted."""
        if not rows:
            return 0
        now = utcnow()
        evals: dict[tuple[str, int], dict[str, Any]] = {}
        trial_fields: dict[str, dict[str, Any]] = {}
        for row in rows:
            try:
                key, step, record = str(row["trial_key"]), int(row["step"]), row["record"]
            except (KeyError, TypeError, ValueError) as e:
                raise DatabaseError(f"evaluation row needs trial_key, step and record: {e!r}") from None
            if not isinstance(record, Mapping):
                raise DatabaseError(f"evaluation of trial '{key}' at step {step}: record is not a mapping")
            try:
                metrics = canonical_json(record)
            except (TypeError, ValueError) as e:
                raise DatabaseError(f"evaluation of trial '{key}' at step {step}: {e}") from None
            values = {f: self._float(f, record.get(f)) for f in EVAL_FLOATS}
            values.update(step=step, metrics=metrics, recorded_at=now)
            evals[(key, step)] = values
            if row.get("trial"):
                trial_fields.setdefault(key, {}).update(row["trial"])
        updates = {k: self._trial_update(f, now) for k, f in trial_fields.items()}

        def go(conn: Connection) -> int:
            sid = self._study_id(conn, study_name)
            keys = sorted({k for k, _ in evals})
            ids = self._trial_ids(conn, sid, keys)
            missing = [k for k in keys if k not in ids]
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                raise DatabaseError(f"study '{study_name}' has no trial {shown}: evaluation batch not written")
            # A fixed row order keeps concurrent PostgreSQL writers from deadlocking on each other.
            params = [dict(v, trial_id=ids[k]) for (k, _), v in sorted(evals.items(), key=lambda kv: (ids[kv[0][0]], kv[0][1]))]
            stmt = self._insert(Evaluation)
            stmt = stmt.on_conflict_do_update(
                index_elements=["trial_id", "step"],
                set_={c: stmt.excluded[c] for c in (*EVAL_FLOATS, "metrics", "recorded_at")},
            )
            conn.execute(stmt, params)
            for key in sorted(updates, key=ids.__getitem__):
                conn.execute(update(Trial).where(Trial.id == ids[key]).values(**updates[key]))
            return len(params)

        return self._run(go, write=True)

    @_transaction(write=False)
    def evaluations(self, conn: Connection, study_name: str, trial_key: str | None = None) -> list[dict]:
        """Evaluation rows (with their trial_key) ordered by trial and step; ``metrics`` (the full record)
        decoded, also under ``record``."""
        sid = self._study_id(conn, study_name)
        q = (
            self._select(Evaluation).add_columns(Trial.trial_key)
            .join(Trial, Trial.id == Evaluation.trial_id)
            .where(Trial.study_id == sid)
        )
        if trial_key is not None:
            q = q.where(Trial.trial_key == str(trial_key))
        return [self._row(Evaluation, r) for r in conn.execute(q.order_by(Trial.id, Evaluation.step))]

    @_transaction(write=False)
    def evaluation_rows(self, conn: Connection, study_name: str) -> list[tuple]:
        """``(trial_key, step, *EVAL_FLOATS, the record as JSON text)`` per evaluation, by trial and step:
        for a reader that decodes all the records at once."""
        ev = Evaluation.__table__.c
        q = (select(Trial.trial_key, ev.step, *(ev[c] for c in EVAL_FLOATS), ev.metrics)
             .join(Trial, Trial.id == ev.trial_id).where(Trial.study_id == self._study_id(conn, study_name)))
        return conn.execute(q.order_by(Trial.id, ev.step)).all()

    def best(self, study_name: str) -> dict | None:
        """The best final value of the study's first objective over its replicates: {metric, value,
        trial_key, step}, or None before any replicate reported it."""
        study = self.require_study(study_name)
        if not study["metrics"]:
            return None
        metric, maximise = study["metrics"][0], study["directions"][0] == "maximize"
        best = None
        for key, rec in self.final_records(study_name).items():
            v = rec.get(metric)
            if v is not None and (best is None or (v > best["value"] if maximise else v < best["value"])):
                best = {"metric": metric, "value": v, "trial_key": key, "step": rec["step"]}
        return best

    def final_records(self, study_name: str) -> dict[str, dict]:
        """trial_key -> the record of the trial's last evaluation (with its ``step``)."""
        return {ev["trial_key"]: dict(ev["record"], step=ev["step"]) for ev in self.evaluations(study_name)}

    # ---- environment -----------------------------------------------------------------------------

    @_transaction(write=True)
    def record_environment(self, conn: Connection, study_name: str, info: dict, session: int) -> None:
        """Store ``info`` (see mimax.study.environment.collect_environment) for a driver session
        (0 at launch, 1.. per resume); keys without a column go to ``extra``. Re-recording a session
        replaces it."""
        columns = set(Environment.__table__.c.keys()) - {"id", "study_id", "session", "recorded_at", "extra"}
        values = {k: (None if v is None else str(v)) for k, v in info.items() if k in columns}
        extra = {k: v for k, v in info.items() if k not in columns}
        extra.update(info.get("extra") or {})
        extra.pop("extra", None)
        values = self._fields(Environment, dict(values, extra=extra, session=int(session), recorded_at=utcnow()))
        values["study_id"] = self._study_id(conn, study_name)
        stmt = self._insert(Environment).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["study_id", "session"],
            set_={c: stmt.excluded[c] for c in values if c not in ("study_id", "session")},
        )
        conn.execute(stmt)

    @_transaction(write=False)
    def environments(self, conn: Connection, study_name: str) -> list[dict]:
        """The recorded environments of a study by session; ``extra`` decoded."""
        q = self._select(Environment)
        if q is None:  # a database older than the table
            return []
        q2 = q.where(Environment.study_id == self._study_id(conn, study_name))
        return [self._row(Environment, r) for r in conn.execute(q2.order_by(Environment.session))]

    # ---- Optuna ----------------------------------------------------------------------------------

    def optuna_storage(self):
        """Optuna's RDBStorage on the same database (one per Store, made on first use)."""
        with self._lock:
            if self._optuna is None:
                self._optuna = self.db.optuna_storage(read_only=self.read_only)
            return self._optuna

    # ---- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._optuna is not None:
                self._optuna.engine.dispose()
                self._optuna = None
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    def __reduce__(self):
        # Ray may pickle whatever holds a Store into the experiment directory: never a password.
        if self.db.parsed.password:
            raise TypeError(
                f"a Store for {self.display_url} holds a database password and cannot be pickled; "
                "open the Store where it is used"
            )
        return (Store, (self.url,))
