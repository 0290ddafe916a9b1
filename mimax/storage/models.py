"""The mimax tables (SQLAlchemy 2 declarative). They sit beside Optuna's tables in the same database,
so every name carries the ``mimax_`` prefix; the schema is versioned by ``mimax/storage/migrations``.
Open them through ``mimax.storage.db``, which re-exports them.

JSON values are stored as text (``json.dumps(..., sort_keys=True)``) so both SQLite and PostgreSQL
hold the same bytes and any copy of the database reads back with plain SQL. Timestamps are
timezone-aware UTC on the way in and on the way out (SQLite keeps no zone, so reads re-attach UTC).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Constraint names are fixed so migrations, models and both backends agree (and autogenerate compares).
NAMING = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """``DateTime(timezone=True)`` that always hands back an aware UTC datetime (SQLite drops zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: mimax stores timezone-aware UTC only")
        value = value.astimezone(dt.UTC)
        # SQLite would store the offset text and compare strings; store naive UTC there instead.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Study(Base):
    __tablename__ = "mimax_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    space_source: Mapped[str] = mapped_column(Text)
    space_json: Mapped[str] = mapped_column(Text)
    space_fingerprint: Mapped[str] = mapped_column(String(128))
    budget: Mapped[str | None] = mapped_column(Text, nullable=True)  # smoke, cpu, paper, ...; None: no budgets
    sampler: Mapped[str] = mapped_column(String(64))
    directions: Mapped[str] = mapped_column(Text)  # JSON list
    metrics: Mapped[str] = mapped_column(Text)  # JSON list
    seeds: Mapped[int] = mapped_column(Integer)
    n_configs_requested: Mapped[int | None] = mapped_column(Integer)
    optuna_study_name: Mapped[str] = mapped_column(String(255))
    results_dir: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    driver_owner: Mapped[str | None] = mapped_column(Text)
    driver_heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Trial(Base):
    __tablename__ = "mimax_trials"
    __table_args__ = (UniqueConstraint("study_id", "trial_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("mimax_studies.id"))
    trial_key: Mapped[str] = mapped_column(String(255))
    optuna_trial_number: Mapped[int | None] = mapped_column(Integer)
    config_json: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical config without seed
    seed: Mapped[int] = mapped_column(Integer)
    replicate_group: Mapped[str] = mapped_column(String(255))
    replicate_index: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(Text)
    resources: Mapped[str | None] = mapped_column(Text)  # JSON
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)  # since revision 0002
    last_step: Mapped[int | None] = mapped_column(Integer)
    # What the trial reported once (nats; since revision 0003): the largest value its estimator can take
    # (log K for NCE), and the analytic MI between its views, where the data knows it.
    ceiling: Mapped[float | None] = mapped_column(Float)
    true_mi: Mapped[float | None] = mapped_column(Float)
    ray_trial_id: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Evaluation(Base):
    __tablename__ = "mimax_evaluations"
    __table_args__ = (UniqueConstraint("trial_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("mimax_trials.id"))
    step: Mapped[int] = mapped_column(Integer)
    bound_train: Mapped[float | None] = mapped_column(Float)
    bound_test: Mapped[float | None] = mapped_column(Float)
    probe_accuracy: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    wall_s: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[str] = mapped_column(Text)  # JSON: the full evaluation record
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


VERSIONS = ("mimax_version", "python", "torch", "ray", "optuna", "sqlalchemy", "git_commit")  # String(64)
MACHINE = ("hostname", "platform", "cpu", "gpu")  # free text


class Environment(Base):
    """One row per driver session of a study: 0 at launch, 1.. for each resume (since revision 0002):
    the versions of mimax and its libraries, the machine, and in ``extra`` (JSON) everything else
    collect_environment() found."""

    __table__ = Table(
        "mimax_environment", Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("study_id", ForeignKey("mimax_studies.id"), nullable=False),
        Column("session", Integer, nullable=False),
        Column("recorded_at", UTCDateTime, nullable=False),
        *(Column(c, String(64)) for c in VERSIONS),
        *(Column(c, Text) for c in MACHINE),
        Column("device", String(64)),
        Column("extra", Text, nullable=False),
        UniqueConstraint("study_id", "session"),
    )


JSON_COLUMNS = {
    "mimax_studies": ("space_json", "directions", "metrics"),
    "mimax_trials": ("config_json", "resources"),
    "mimax_evaluations": ("metrics",),
    "mimax_environment": ("extra",),
}
