"""The database layer: the one door to a results database, for the study (which writes) and the analysis
(which only reads). Torch- and Ray-free.

``Database(url)`` validates a URL (a SQLite file, or PostgreSQL through psycopg 3) and opens it:
``engine()`` read-write, ``readonly_engine()`` read-only, ``optuna_storage()`` Optuna's RDB storage on
the same database. Every error is a :class:`DatabaseError`: one line, never the password.

SQLite (the embedded default) runs in WAL mode with a 30 s busy timeout; SQLAlchemy emits the BEGIN
itself (``BEGIN IMMEDIATE`` on a connection with the execution option ``mimax_write=True``), so a write
transaction takes the file's write lock up front and waits for it, instead of failing with "database is
locked" when a read turns into a write. Read-only SQLite goes through a ``mode=ro`` URI, so reading a
copied database never changes it; PostgreSQL read-only sessions are marked read-only.

mimax's tables (defined in ``mimax.storage.models``, migrated by ``mimax/storage/migrations``, re-exported
here) carry their schema revision in their own Alembic version table beside Optuna's.
"""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.parse
from functools import cache, partial
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from mimax.errors import ConfigError
from mimax.storage.models import Base, Environment, Evaluation, Study, Trial

__all__ = [
    "DB_HELP", "DEFAULT_URL", "STATES", "STUDY_STATUSES", "TERMINAL", "Base", "Database", "DatabaseError",
    "Environment", "Evaluation", "Study", "Trial", "UnknownStudy", "check_study_name", "choose_url", "first_line",
    "head_revision",
]

STUDY_STATUSES = ("running", "completed", "interrupted", "failed")
TERMINAL = ("completed", "pruned", "failed", "diverged")  # the states a trial ends in
STATES = ("pending", "running", *TERMINAL)

DEFAULT_URL = "sqlite:///mimax.db"
DB_HELP = f"database URL (default $MIMAX_DB, then {DEFAULT_URL})"  # every --db option
MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "mimax_alembic_version"  # Optuna owns alembic_version
SQLITE_BUSY_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5
_PG_MIGRATION_LOCK = 0x6D696D6178  # pg_advisory_xact_lock key: "mimax"
# A study name is a key in VARCHAR(255) columns (Optuna's copy carries a prefix) and names directories
# (Ray's run directory, reports/NAME): short, and nothing a file system or a shell reads specially.
STUDY_NAME_MAX = 128
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class DatabaseError(ConfigError):
    """A database problem explained in one line for the user; never contains a password."""

    def __init__(self, message: str):
        super().__init__("", message)


class UnknownStudy(DatabaseError):
    pass


def choose_url(given: str | None) -> str:
    """The database URL to use: ``given`` (--db), else $MIMAX_DB, else ``sqlite:///mimax.db``."""
    if given is not None:  # --db "" is a mistake to report, not a request for the default
        return given
    return os.environ.get("MIMAX_DB") or DEFAULT_URL


def check_study_name(name: str, option: str = "--name") -> str:
    """``name`` if it can name a new study, else a ConfigError saying why."""
    if not isinstance(name, str) or not name:
        raise ConfigError(option, "a study name cannot be empty")
    if len(name) > STUDY_NAME_MAX:
        raise ConfigError(option, f"a study name has at most {STUDY_NAME_MAX} characters, got {len(name)} "
                                  f"({name[:24]!r}...)")
    if not _STUDY_NAME.fullmatch(name):
        raise ConfigError(option, f"a study name is letters, digits, '.', '_' and '-', starting with a letter or "
                                  f"digit, got {name!r}")
    return name


def first_line(exc: BaseException) -> str:
    """The first line of what a (driver) exception says."""
    msg = str(getattr(exc, "orig", None) or exc).strip()
    return msg.splitlines()[0].strip() if msg else type(exc).__name__


def _parse(url: str) -> URL:
    """Validate a database URL; the error never echoes it (it may hold a password)."""
    if not isinstance(url, str) or not url.strip():
        raise DatabaseError("database URL is empty")
    try:
        url.encode("utf-8")  # undecodable bytes typed into a shell arrive as lone surrogates
        parsed = make_url(url)
    except Exception:
        if not set(":@") & set(url):  # a bare path (no scheme, nowhere a password could be): echo it
            raise DatabaseError(f"database URL {url!r} is not a URL; for a SQLite file write sqlite:///{url}") from None
        raise DatabaseError(
            "database URL is not a URL: expected sqlite:///path/to/file.db or "
            "postgresql+psycopg://user:password@host:port/database"
        ) from None
    # From the name itself: asking SQLAlchemy for the driver imports the dialect, and fails on unknown ones.
    backend, _, driver = parsed.drivername.partition("+")
    shown = parsed.render_as_string(hide_password=True)
    if backend == "postgresql":
        if not driver:  # plain postgresql:// would mean psycopg2, which mimax does not use
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif driver != "psycopg":
            raise DatabaseError(f"database URL {shown}: driver '{driver}' is not supported; use postgresql+psycopg://")
        if not parsed.database:
            raise DatabaseError(f"database URL {shown}: no database name")
    elif backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise DatabaseError(f"database URL {shown}: driver '{driver}' is not supported; use sqlite:///path")
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
            raise DatabaseError(f"database URL {shown}: give a file path (sqlite:///path/to/file.db)")
        # The same file whatever the working directory later.
        parsed = parsed.set(database=str(Path(parsed.database).expanduser().absolute()))
    else:
        raise DatabaseError(
            f"database URL {shown}: unsupported database '{parsed.drivername}'; "
            "use sqlite:///path or postgresql+psycopg://"
        )
    return parsed


def _sqlite_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection. SQLite still needs the WAL index beside the file; where it can neither open
    nor create it (a read-only directory), fall back to ``immutable=1`` (no locking at all)."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_MS / 1000, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
    return conn


def _on_sqlite_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy, not sqlite3, decides when to BEGIN
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
    if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        cur.execute("PRAGMA journal_mode = WAL")  # persistent in the file
    # WAL + NORMAL survives application crashes; only an OS crash can lose the last commits.
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _on_sqlite_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("mimax_write") else "BEGIN")


class Database:
    """A validated database URL and the ways to open it. ``url``: the URL in full (a SQLite path made
    absolute); ``shown``: the same with the password hidden, for every message."""

    def __init__(self, url: str):
        self.parsed = _parse(url)
        self.dialect: str = self.parsed.get_backend_name()
        self.url: str = self.parsed.render_as_string(hide_password=False)
        self.shown: str = self.parsed.render_as_string(hide_password=True)
        self.path: Path | None = Path(self.parsed.database) if self.dialect == "sqlite" else None
        self._password = self.parsed.password or ""

    def scrub(self, text: str) -> str:
        """``text`` with this database's password (as typed or URL-encoded) replaced by ***."""
        if self._password:
            for form in {self._password, urllib.parse.quote(self._password, safe=""),
                         urllib.parse.quote_plus(self._password)}:
                text = text.replace(form, "***")
        return text

    def error(self, what: str, exc: BaseException) -> DatabaseError:
        """``what: <first line of exc>`` as a DatabaseError, password scrubbed."""
        return DatabaseError(self.scrub(f"{what}: {first_line(exc)}"))

    def connect_error(self, exc: BaseException) -> DatabaseError:
        if self.dialect == "sqlite":
            return self.error(f"cannot open SQLite database {self.path}", exc)
        where = f"{self.parsed.host or 'localhost'}:{self.parsed.port or 5432}"
        return self.error(f"cannot connect to PostgreSQL at {where} ({self.shown})", exc)

    def require_file(self) -> None:
        """Raise unless a SQLite database's file exists (PostgreSQL: nothing to check here)."""
        if self.path is not None and not self.path.is_file():
            raise DatabaseError(f"no database file at {self.path}")

    def refuse_foreign(self) -> None:
        """Refuse a database that holds tables but none of mimax's: mimax and Optuna would add theirs to
        another program's database. Read through a read-only engine, so a refused SQLite file is left
        exactly as it was (a read-write connection would switch it to WAL)."""
        if self.path is not None and (not self.path.is_file() or self.path.stat().st_size == 0):
            return  # mimax makes the file
        engine = self.readonly_engine()
        try:
            with engine.connect() as conn:
                tables = sorted(sa.inspect(conn).get_table_names())
        except sa_exc.DBAPIError as e:
            raise self.error(f"cannot read {self.shown}", e) from None
        finally:
            engine.dispose()
        if tables and not any(t.startswith("mimax_") for t in tables):
            shown = ", ".join(tables[:3]) + (f" and {len(tables) - 3} more" if len(tables) > 3 else "")
            raise DatabaseError(f"{self.shown} is not a mimax database: it holds other tables ({shown}); "
                                "give a new file or an empty database")

    def _pg_args(self) -> dict:
        return {"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "mimax"}

    def _engine_kwargs(self) -> dict:
        """A read-write engine's arguments, mimax's and Optuna's."""
        if self.dialect == "sqlite":
            return {"connect_args": {"timeout": SQLITE_BUSY_MS / 1000}}
        return {"pool_pre_ping": True, "connect_args": self._pg_args()}

    def engine(self) -> sa.Engine:
        """A pooled read-write engine (see the module docstring for SQLite's transactions)."""
        engine = sa.create_engine(self.parsed, **self._engine_kwargs())
        if self.dialect == "sqlite":
            event.listen(engine, "connect", _on_sqlite_connect)
            event.listen(engine, "begin", _on_sqlite_begin)
        return engine

    def _readonly_kwargs(self) -> dict:
        if self.dialect == "sqlite":
            return {"creator": partial(_sqlite_readonly, self.path), "poolclass": sa.pool.NullPool}
        return {"poolclass": sa.pool.NullPool, "connect_args": self._pg_args(),
                "execution_options": {"postgresql_readonly": True}}

    def readonly_engine(self) -> sa.Engine:
        """An engine that cannot write: nothing it does changes the database (its file included)."""
        self.require_file()
        url = "sqlite+pysqlite://" if self.dialect == "sqlite" else self.parsed
        return sa.create_engine(url, **self._readonly_kwargs())

    def optuna_storage(self, *, read_only: bool = False):
        """Optuna's RDBStorage on this database (read-only: it creates and upgrades nothing)."""
        import optuna

        try:
            if read_only:
                self.require_file()
                url = "sqlite+pysqlite://" if self.dialect == "sqlite" else self.url
                return optuna.storages.RDBStorage(url, engine_kwargs=self._readonly_kwargs(),
                                                  skip_compatibility_check=True, skip_table_creation=True)
            return optuna.storages.RDBStorage(self.url, engine_kwargs=self._engine_kwargs())
        except sa_exc.DBAPIError as e:
            raise self.error(f"Optuna storage in {self.shown}", e) from e

    # ---- the schema --------------------------------------------------------------------------------

    def revision(self, conn: sa.Connection) -> str | None:
        """mimax's schema revision of the database; None when it has no mimax tables. Raises when mimax
        tables carry no revision, or one newer than this mimax knows."""
        from alembic.runtime.migration import MigrationContext

        def read() -> str | None:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()

        try:
            current = read()
            tables = set(sa.inspect(conn).get_table_names()) if current is None else set()
            if current is None and Study.__tablename__ in tables:
                # a peer's migration (tables and revision, one transaction) may have committed between the
                # two reads: on PostgreSQL each statement sees the latest commits, so read the revision again
                current = read()
        except sa_exc.DBAPIError as e:  # e.g. a file that is not a SQLite database
            raise self.error(f"cannot read {self.shown}", e) from None
        if current is None:
            if Study.__tablename__ in tables:
                raise DatabaseError(f"mimax tables in {self.shown} have no {VERSION_TABLE}: not made by mimax?")
            return None
        if current not in known_revisions():
            raise DatabaseError(f"mimax schema in {self.shown} is at revision {current}, newer than this mimax "
                                f"knows (head {head_revision()}); upgrade mimax")
        return current

    def unknown_study(self, conn: sa.Connection, name: str) -> UnknownStudy:
        known = ", ".join(conn.scalars(sa.select(Study.name).order_by(Study.name))) or "none"
        return UnknownStudy(f"unknown study '{name}' in {self.shown} (known: {known})")

    def migrate(self, conn: sa.Connection) -> None:
        """Migrate mimax's tables to the head revision inside the caller's write transaction."""
        from alembic import command

        if self.dialect == "postgresql":  # one migrator at a time; SQLite's BEGIN IMMEDIATE does this
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        self.revision(conn)  # again, under the lock
        command.upgrade(alembic_config(conn), "head")


def alembic_config(conn: sa.Connection | None = None):
    """Alembic's configuration for mimax's migrations (on ``conn``, in its transaction)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = conn
    return cfg


@cache  # the migrations do not change while mimax runs; reading them costs ~0.1 s a Store
def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return _script().get_current_head()


def known_revisions() -> set[str]:
    return {r.revision for r in _script().walk_revisions()}


def present_columns(conn: sa.Connection, table: sa.Table) -> list[sa.Column]:
    """The columns of ``table`` that the database has: a database at an older schema revision lacks the
    newer ones (and a table newer than it, all of them)."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name):
        return []
    have = {c["name"] for c in inspector.get_columns(table.name)}
    return [c for c in table.c if c.name in have]
