"""The results store: mimax's tables in a SQL database, beside Optuna's RDB storage.

The database is the source of truth of a study. ``Store(url)`` opens (and by default creates or
upgrades) it; every method runs in its own short transaction on its own pooled connection, so one
Store may be shared by the threads of a process, and several processes may open the same SQLite file.

SQLite (the embedded default) runs in WAL mode with a 30 s busy timeout; SQLAlchemy emits the BEGIN
itself (``BEGIN IMMEDIATE`` for writes) so a write transaction takes the file's write lock up front
and waits for it, instead of failing with "database is locked" when a read turns into a write.
PostgreSQL goes through psycopg 3 (``postgresql+psycopg://``).

Every error a user can cause comes out as a :class:`StoreError` whose message is one line and never
holds the database password.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, inspect, literal, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, make_url

from mimax.study.models import (
    JSON_COLUMNS,
    STUDY_STATUSES,
    TRIAL_STATES,
    Environment,
    Evaluation,
    Study,
    Trial,
    UTCDateTime,
    utcnow,
)

__all__ = [
    "LeaseLost",
    "Store",
    "StoreError",
    "StudyExists",
    "UnknownStudy",
    "canonical_json",
    "config_hash",
    "redact",
]

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "mimax_alembic_version"
SQLITE_BUSY_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5
_PG_MIGRATION_LOCK = 0x6D696D6178  # pg_advisory_xact_lock key: "mimax"
_RETRY_SQLSTATES = {"40P01", "40001"}  # PostgreSQL deadlock / serialization failure: safe to rerun
_EVAL_FLOATS = ("bound_train", "bound_test", "probe_accuracy", "loss", "wall_s")
_TERMINAL = {"completed", "pruned", "failed", "diverged"}


class StoreError(Exception):
    """A database problem explained in one line for the user; never contains a password."""


class StudyExists(StoreError):
    pass


class UnknownStudy(StoreError):
    pass


class LeaseLost(StoreError):
    """The driver lease of a study now belongs to someone else (raised by ``heartbeat``)."""


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unparseable input is hidden whole)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


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


def _first_line(exc: BaseException) -> str:
    msg = str(getattr(exc, "orig", None) or exc).strip()
    return msg.splitlines()[0].strip() if msg else type(exc).__name__


def _parse_url(url: str) -> URL:
    """Validate a database URL; the error never echoes it (it may hold a password)."""
    if not isinstance(url, str) or not url.strip():
        raise StoreError("database URL is empty")
    try:
        parsed = make_url(url)
    except Exception:
        raise StoreError(
            "database URL is not a URL: expected sqlite:///path/to/file.db or "
            "postgresql+psycopg://user:password@host:port/database"
        ) from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    shown = redact(url)
    if backend == "postgresql":
        if "+" not in parsed.drivername:  # plain postgresql:// would mean psycopg2, which mimax does not use
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif driver != "psycopg":
            raise StoreError(f"database URL {shown}: driver '{driver}' is not supported; use postgresql+psycopg://")
        if not parsed.database:
            raise StoreError(f"database URL {shown}: no database name")
    elif backend == "sqlite":
        if driver != "pysqlite":
            raise StoreError(f"database URL {shown}: driver '{driver}' is not supported; use sqlite:///path")
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
            raise StoreError(f"database URL {shown}: give a file path (sqlite:///path/to/file.db)")
    else:
        raise StoreError(
            f"database URL {shown}: unsupported database '{parsed.drivername}'; "
            "use sqlite:///path or postgresql+psycopg://"
        )
    return parsed


class Store:
    """mimax's tables in one database. See the module docstring for the transaction rules."""

    def __init__(self, url: str, *, create: bool = True):
        parsed = _parse_url(url)
        if parsed.get_backend_name() == "sqlite":  # the same file whatever the working directory later
            parsed = parsed.set(database=str(Path(parsed.database).expanduser().absolute()))
        self.url: str = parsed.render_as_string(hide_password=False)
        self.display_url: str = parsed.render_as_string(hide_password=True)
        self._password = parsed.password or ""
        self._parsed = parsed
        self.dialect = parsed.get_backend_name()
        self._optuna = None
        self._lock = threading.Lock()
        self._study_ids: dict[str, int] = {}
        self._trial_id_cache: dict[int, dict[str, int]] = {}
        if self.dialect == "sqlite":
            path = Path(parsed.database)
            if not create and not path.exists():
                raise StoreError(f"no database file at {path}")
            if create:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise StoreError(f"cannot create the directory of {path}: {e.strerror or e}") from None
        self._engine = self._make_engine()
        self._pid = os.getpid()
        try:
            self._migrate(create)
        except BaseException:
            self._engine.dispose()
            raise

    # ---- engine and transactions -------------------------------------------------------------

    def _make_engine(self):
        if self.dialect == "sqlite":
            engine = create_engine(self._parsed, connect_args={"timeout": SQLITE_BUSY_MS / 1000})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record):
                dbapi_conn.isolation_level = None  # SQLAlchemy, not sqlite3, decides when to BEGIN
                cur = dbapi_conn.cursor()
                cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
                if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    cur.execute("PRAGMA journal_mode = WAL")  # persistent in the file
                # WAL + NORMAL survives application crashes; only an OS crash can lose the last commits.
                cur.execute("PRAGMA synchronous = NORMAL")
                cur.execute("PRAGMA foreign_keys = ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):
                write = conn.get_execution_options().get("mimax_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        return create_engine(
            self._parsed,
            pool_pre_ping=True,
            connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "mimax"},
        )

    def _scrub(self, message: str) -> str:
        if self._password:
            from urllib.parse import quote, quote_plus

            for form in {self._password, quote(self._password, safe=""), quote_plus(self._password)}:
                message = message.replace(form, "***")
        return message

    def scrub(self, text: str) -> str:
        """``text`` with this database's password (as typed or URL-encoded) replaced by ***."""
        return self._scrub(text)

    def _connect(self) -> Connection:
        if os.getpid() != self._pid:  # a forked child must not reuse the parent's sockets
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        try:
            return self._engine.connect()
        except sa_exc.DBAPIError as e:
            raise StoreError(self._scrub(self._connect_message(e))) from e

    def _connect_message(self, e: BaseException) -> str:
        if self.dialect == "sqlite":
            return f"cannot open SQLite database {self._parsed.database}: {_first_line(e)}"
        where = f"{self._parsed.host or 'localhost'}:{self._parsed.port or 5432}"
        return f"cannot connect to PostgreSQL at {where} ({self.display_url}): {_first_line(e)}"

    @contextmanager
    def _tx(self, write: bool):
        conn = self._connect()
        try:
            if write:
                conn.execution_options(mimax_write=True)
            with conn.begin():
                yield conn
        finally:
            conn.close()

    def _run(self, fn: Callable[[Connection], Any], *, write: bool):
        """``fn(conn)`` in one transaction; reruns it on a PostgreSQL deadlock; wraps DB errors."""
        attempts = 5
        for attempt in range(attempts):
            try:
                with self._tx(write) as conn:
                    return fn(conn)
            except sa_exc.DBAPIError as e:
                code = getattr(getattr(e, "orig", None), "sqlstate", None)
                if code in _RETRY_SQLSTATES and attempt < attempts - 1:
                    time.sleep(0.02 * 2**attempt * (1 + random.random()))
                    continue
                raise StoreError(self._scrub(f"database error in {self.display_url}: {_first_line(e)}")) from e
            except sa_exc.StatementError as e:  # a value the column type refused, before reaching the DB
                raise StoreError(self._scrub(f"bad value for {self.display_url}: {_first_line(e)}")) from e

    # ---- schema --------------------------------------------------------------------------------

    def _alembic_config(self, conn: Connection | None = None):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
        cfg.attributes["connection"] = conn
        return cfg

    @staticmethod
    def _revision(conn: Connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()

    def schema_version(self) -> str | None:
        """The mimax schema revision of the database (``None`` when it has no mimax tables)."""
        return self._run(self._revision, write=False)

    def _migrate(self, create: bool) -> None:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(self._alembic_config())
        head = script.get_current_head()
        current = self.schema_version()
        if current == head:
            return
        known = {r.revision for r in script.walk_revisions()}
        if current is not None and current not in known:
            raise StoreError(
                f"mimax schema in {self.display_url} is at revision {current}, newer than this mimax "
                f"knows (head {head}); upgrade mimax"
            )
        if not create:
            if current is None:
                raise StoreError(f"no mimax tables in {self.display_url}")
            raise StoreError(
                f"mimax schema in {self.display_url} is at revision {current}, this mimax needs {head}; "
                "upgrade it with `mimax db upgrade`"
            )

        def upgrade(conn: Connection) -> None:
            from alembic import command

            if self.dialect == "postgresql":  # one migrator at a time; SQLite's BEGIN IMMEDIATE does this
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            if self._revision(conn) is None and inspect(conn).has_table("mimax_studies"):
                raise StoreError(f"mimax tables in {self.display_url} have no {VERSION_TABLE}: not made by mimax?")
            command.upgrade(self._alembic_config(conn), "head")  # rechecks the revision under the lock

        self._run(upgrade, write=True)

    # ---- helpers ---------------------------------------------------------------------------------

    def _known_names(self, conn: Connection) -> list[str]:
        return list(conn.scalars(select(Study.name).order_by(Study.name)))

    def _unknown(self, conn: Connection, name: str) -> UnknownStudy:
        known = ", ".join(self._known_names(conn)) or "none"
        return UnknownStudy(f"unknown study '{name}' in {self.display_url} (known: {known})")

    def _study_id(self, conn: Connection, name: str) -> int:
        # Studies and trials are never deleted, so their ids are cached once seen (saves a query a write).
        sid = self._study_ids.get(name)
        if sid is None:
            sid = conn.scalar(select(Study.id).where(Study.name == name))
            if sid is None:
                raise self._unknown(conn, name)
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
        for col in JSON_COLUMNS.get(model.__tablename__, ()):
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
        table = model.__tablename__
        columns = model.__table__.c
        fixed = {"id", *fixed}
        json_cols = JSON_COLUMNS.get(table, ())
        out = {}
        for key, value in fields.items():
            if key not in columns or key in fixed:
                allowed = ", ".join(c for c in columns.keys() if c not in fixed)
                raise StoreError(f"{table}: unknown or read-only field '{key}' (allowed: {allowed})")
            if key in json_cols and value is not None:
                if isinstance(value, str) and key.endswith("_json"):
                    try:
                        json.loads(value)
                    except ValueError:
                        raise StoreError(f"{table}.{key}: not valid JSON") from None
                else:
                    try:
                        value = canonical_json(value)
                    except (TypeError, ValueError) as e:
                        raise StoreError(f"{table}.{key}: {e}") from None
            if key == "state" and value not in TRIAL_STATES:
                raise StoreError(f"{table}.state: {value!r} is not one of {', '.join(TRIAL_STATES)}")
            if key == "status" and value not in STUDY_STATUSES:
                raise StoreError(f"{table}.status: {value!r} is not one of {', '.join(STUDY_STATUSES)}")
            if hasattr(value, "tzinfo") and hasattr(value, "hour") and value.tzinfo is None:
                raise StoreError(f"{table}.{key}: naive datetime; pass a timezone-aware (UTC) one")
            out[key] = value
        return out

    def _insert(self, model):
        dialect = sqlite_dialect if self.dialect == "sqlite" else pg_dialect
        return dialect.insert(model)

    # ---- studies ---------------------------------------------------------------------------------

    def create_study(
        self,
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

        def go(conn: Connection) -> int:
            exists = StudyExists(f"study '{name}' already exists in {self.display_url}")
            if conn.scalar(select(Study.id).where(Study.name == name)) is not None:
                raise exists
            try:
                return conn.execute(self._insert(Study).values(**values).returning(Study.id)).scalar_one()
            except sa_exc.IntegrityError:  # created by another process since the check (PostgreSQL)
                raise exists from None

        return self._run(go, write=True)

    def get_study(self, name: str) -> dict | None:
        """The study as a plain dict (JSON columns decoded), or None."""
        row = self._run(lambda c: c.execute(select(Study.__table__).where(Study.name == name)).first(), write=False)
        return None if row is None else self._row(Study, row)

    def require_study(self, name: str) -> dict:
        def go(conn: Connection) -> dict:
            row = conn.execute(select(Study.__table__).where(Study.name == name)).first()
            if row is None:
                raise self._unknown(conn, name)
            return self._row(Study, row)

        return self._run(go, write=False)

    def list_studies(self) -> list[dict]:
        """Every study (by name) with ``trial_counts``: {state: n} over every trial state."""

        def go(conn: Connection) -> list[dict]:
            studies = [self._row(Study, r) for r in conn.execute(select(Study.__table__).order_by(Study.name))]
            counts = conn.execute(
                select(Trial.study_id, Trial.state, func.count()).group_by(Trial.study_id, Trial.state)
            ).all()
            for s in studies:
                s["trial_counts"] = dict.fromkeys(TRIAL_STATES, 0)
            by_id = {s["id"]: s for s in studies}
            for sid, state, n in counts:
                by_id[sid]["trial_counts"][state] = n
            return studies

        return self._run(go, write=False)

    def update_study(self, name: str, **fields) -> None:
        values = self._fields(Study, fields, fixed=("name", "created_at"))
        values.setdefault("updated_at", utcnow())

        def go(conn: Connection) -> None:
            if conn.execute(update(Study).where(Study.name == name).values(**values)).rowcount == 0:
                raise self._unknown(conn, name)

        self._run(go, write=True)

    # ---- driver lease ----------------------------------------------------------------------------

    def claim_driver(
        self,
        name: str,
        owner: str,
        *,
        stale_after_s: float = 30.0,
        alive: Callable[[str], bool] | None = None,
    ) -> None:
        """Take the study's driver lease: free, held by ``owner`` already, stale, or ``alive`` says the
        holder is dead. Otherwise raise StoreError naming the holder. Atomic (row lock / BEGIN IMMEDIATE)."""

        def go(conn: Connection) -> None:
            row = conn.execute(
                select(Study.id, Study.driver_owner, Study.driver_heartbeat_at)
                .where(Study.name == name)
                .with_for_update()
            ).first()
            if row is None:
                raise self._unknown(conn, name)
            now = utcnow()
            holder, beat = row.driver_owner, row.driver_heartbeat_at
            if holder and holder != owner:
                age = math.inf if beat is None else (now - beat).total_seconds()
                if age < stale_after_s and (alive is None or alive(holder)):
                    raise StoreError(f"study '{name}' is being run by {holder} (heartbeat {age:.0f} s ago)")
            conn.execute(
                update(Study).where(Study.id == row.id).values(
                    driver_owner=owner, driver_heartbeat_at=now, updated_at=now
                )
            )

        self._run(go, write=True)

    def heartbeat(self, name: str, owner: str) -> None:
        """Refresh the lease; raises LeaseLost if ``owner`` no longer holds it."""

        def go(conn: Connection) -> None:
            hit = conn.execute(
                update(Study)
                .where(Study.name == name, Study.driver_owner == owner)
                .values(driver_heartbeat_at=utcnow())
            ).rowcount
            if not hit:
                holder = conn.execute(select(Study.driver_owner).where(Study.name == name)).first()
                if holder is None:
                    raise self._unknown(conn, name)
                raise LeaseLost(f"study '{name}' is no longer run by {owner}: lease held by {holder[0] or 'nobody'}")

        self._run(go, write=True)

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
            raise StoreError("mimax_trials: a trial row needs a 'trial_key'")
        config = row.pop("config", None)
        if config is None:
            config = row.get("config_json")
        if isinstance(config, str):
            config = json.loads(config)
        if not isinstance(config, Mapping):
            raise StoreError(f"trial '{row['trial_key']}': needs a 'config' mapping")
        row["config_json"] = config
        row.setdefault("config_hash", config_hash(config))
        if row.get("seed") is None:
            if config.get("seed") is None:
                raise StoreError(f"trial '{row['trial_key']}': no 'seed' in the row or its config")
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
        if state in _TERMINAL and "ended_at" not in values:
            values["ended_at"] = func.coalesce(Trial.ended_at, literal(now, UTCDateTime()))
        return values

    def update_trial(self, study_name: str, trial_key: str, **fields) -> None:
        """Set columns of one trial. Unless given: state 'running' fills started_at (first start only)
        and clears ended_at; a final state (completed, pruned, failed, diverged) fills ended_at."""
        values = self._trial_update(fields, utcnow())

        def go(conn: Connection) -> None:
            sid = self._study_id(conn, study_name)
            hit = conn.execute(
                update(Trial).where(Trial.study_id == sid, Trial.trial_key == str(trial_key)).values(**values)
            ).rowcount
            if not hit:
                raise StoreError(f"study '{study_name}' has no trial '{trial_key}'")

        self._run(go, write=True)

    def trials(self, study_name: str, states: Iterable[str] | None = None) -> list[dict]:
        """Trial rows of a study (by id), optionally only those in ``states``; JSON decoded, the config
        also under ``config``."""
        states = None if states is None else list(states)
        for s in states or ():
            if s not in TRIAL_STATES:
                raise StoreError(f"unknown trial state {s!r} (states: {', '.join(TRIAL_STATES)})")

        def go(conn: Connection) -> list[dict]:
            q = select(Trial.__table__).where(Trial.study_id == self._study_id(conn, study_name))
            if states is not None:
                q = q.where(Trial.state.in_(states))
            return [self._row(Trial, r) for r in conn.execute(q.order_by(Trial.id))]

        return self._run(go, write=False)

    def state_counts(self, study_name: str) -> dict[str, int]:
        def go(conn: Connection) -> dict[str, int]:
            sid = self._study_id(conn, study_name)
            out = dict.fromkeys(TRIAL_STATES, 0)
            q = select(Trial.state, func.count()).where(Trial.study_id == sid).group_by(Trial.state)
            out.update(dict(conn.execute(q).all()))
            return out

        return self._run(go, write=False)

    # ---- evaluations -----------------------------------------------------------------------------

    @staticmethod
    def _float(key: str, value) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool):
            raise StoreError(f"evaluation field {key} is a bool, not a number")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise StoreError(f"evaluation field {key} is not a number: {value!r}") from None
        return None if math.isnan(value) else value  # SQLite cannot keep NaN; the JSON record does

    def write_evaluations(self, study_name: str, rows: list[dict]) -> int:
        """Upsert evaluation rows keyed on (trial, step) in ONE transaction, with each row's optional
        ``trial`` field updates. A row: {"trial_key", "step", "record": {...}, "trial": {...}?}.
        Within a batch the last row for a (trial, step) wins. Any bad row (unknown trial_key, bad
        field) raises StoreError and nothing of the batch is written. Returns the rows upserted."""
        if not rows:
            return 0
        now = utcnow()
        evals: dict[tuple[str, int], dict[str, Any]] = {}
        trial_fields: dict[str, dict[str, Any]] = {}
        for row in rows:
            try:
                key, step, record = str(row["trial_key"]), int(row["step"]), row["record"]
            except (KeyError, TypeError, ValueError) as e:
                raise StoreError(f"evaluation row needs trial_key, step and record: {e!r}") from None
            if not isinstance(record, Mapping):
                raise StoreError(f"evaluation of trial '{key}' at step {step}: record is not a mapping")
            try:
                metrics = canonical_json(record)
            except (TypeError, ValueError) as e:
                raise StoreError(f"evaluation of trial '{key}' at step {step}: {e}") from None
            values = {f: self._float(f, record.get(f)) for f in _EVAL_FLOATS}
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
                raise StoreError(f"study '{study_name}' has no trial {shown}: evaluation batch not written")
            # A fixed row order keeps concurrent PostgreSQL writers from deadlocking on each other.
            params = [dict(v, trial_id=ids[k]) for (k, _), v in sorted(evals.items(), key=lambda kv: (ids[kv[0][0]], kv[0][1]))]
            stmt = self._insert(Evaluation)
            stmt = stmt.on_conflict_do_update(
                index_elements=["trial_id", "step"],
                set_={c: stmt.excluded[c] for c in (*_EVAL_FLOATS, "metrics", "recorded_at")},
            )
            conn.execute(stmt, params)
            for key in sorted(updates, key=ids.__getitem__):
                conn.execute(update(Trial).where(Trial.id == ids[key]).values(**updates[key]))
            return len(params)

        return self._run(go, write=True)

    def evaluations(self, study_name: str, trial_key: str | None = None) -> list[dict]:
        """Evaluation rows (with their trial_key) ordered by trial and step; ``metrics`` (the full record)
        decoded, also under ``record``."""

        def go(conn: Connection) -> list[dict]:
            sid = self._study_id(conn, study_name)
            q = (
                select(Evaluation.__table__, Trial.trial_key)
                .join(Trial, Trial.id == Evaluation.trial_id)
                .where(Trial.study_id == sid)
            )
            if trial_key is not None:
                q = q.where(Trial.trial_key == str(trial_key))
            return [self._row(Evaluation, r) for r in conn.execute(q.order_by(Trial.id, Evaluation.step))]

        return self._run(go, write=False)

    # ---- environment -----------------------------------------------------------------------------

    def record_environment(self, study_name: str, info: dict, session: int) -> None:
        """Store ``info`` (see mimax.study.environment.collect_environment) for a driver session
        (0 at launch, 1.. per resume); keys without a column go to ``extra``. Re-recording a session
        replaces it."""
        columns = set(Environment.__table__.c.keys()) - {"id", "study_id", "session", "recorded_at", "extra"}
        values = {k: (None if v is None else str(v)) for k, v in info.items() if k in columns}
        extra = {k: v for k, v in info.items() if k not in columns}
        extra.update(info.get("extra") or {})
        extra.pop("extra", None)
        values = self._fields(Environment, dict(values, extra=extra, session=int(session), recorded_at=utcnow()))

        def go(conn: Connection) -> None:
            values["study_id"] = self._study_id(conn, study_name)
            stmt = self._insert(Environment).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["study_id", "session"],
                set_={c: stmt.excluded[c] for c in values if c not in ("study_id", "session")},
            )
            conn.execute(stmt)

        self._run(go, write=True)

    def environments(self, study_name: str) -> list[dict]:
        """The recorded environments of a study by session; ``extra`` decoded."""

        def go(conn: Connection) -> list[dict]:
            q = select(Environment.__table__).where(Environment.study_id == self._study_id(conn, study_name))
            return [self._row(Environment, r) for r in conn.execute(q.order_by(Environment.session))]

        return self._run(go, write=False)

    # ---- Optuna ----------------------------------------------------------------------------------

    def optuna_storage(self):
        """Optuna's RDBStorage on the same database (one per Store, made on first use)."""
        import optuna

        with self._lock:
            if self._optuna is None:
                if self.dialect == "sqlite":
                    kwargs = {"connect_args": {"timeout": SQLITE_BUSY_MS / 1000}}
                else:
                    kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT_S}}
                try:
                    self._optuna = optuna.storages.RDBStorage(self.url, engine_kwargs=kwargs)
                except sa_exc.DBAPIError as e:
                    raise StoreError(self._scrub(f"Optuna storage in {self.display_url}: {_first_line(e)}")) from e
            return self._optuna

    # ---- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._optuna is not None:
                self._optuna.engine.dispose()
                self._optuna = None
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    def __reduce__(self):
        # Ray may pickle whatever holds a Store into the experiment directory: never a password.
        if self._password:
            raise TypeError(
                f"a Store for {self.display_url} holds a database password and cannot be pickled; "
                "open the Store where it is used"
            )
        return (Store, (self.url,))
