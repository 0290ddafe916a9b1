"""Trials store their ceiling and their true MI (nats), backfilled for existing rows from their config.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

The backfill is a frozen snapshot of what the trainer reported when this revision was written
(``Estimator.ceiling(batch_size)`` and ``Views.true_mi``): later changes to the trainer do not change it.
"""

from __future__ import annotations

import json
import math

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LOG_K_ESTIMATORS = ("nce", "kpair")  # bounded by log K, K = train.batch_size
NONIID_TRUE_MI = -0.5 * math.log(1 - 0.2**2)  # the paper's Fig. 4c pairs: correlation 0.2
DEFAULT_BATCH_SIZE = 128
DEFAULT_GAUSSIAN_MI = 1.0


def _name(section) -> str | None:
    if isinstance(section, str):
        return section
    return section.get("name") if isinstance(section, dict) else None


def ceiling(config: dict) -> float | None:
    estimator = _name(config.get("estimator"))
    if estimator in LOG_K_ESTIMATORS:
        train = config.get("train") if isinstance(config.get("train"), dict) else {}
        return math.log(train.get("batch_size", DEFAULT_BATCH_SIZE))
    if estimator == "triplet":  # InfoNCE with K = 2
        return math.log(2)
    return None


def true_mi(config: dict) -> float | None:
    data = config.get("data")
    name = _name(data)
    if name == "noniid-gaussian":
        return NONIID_TRUE_MI
    if name == "gaussian":
        return float(data.get("mi", DEFAULT_GAUSSIAN_MI)) if isinstance(data, dict) else DEFAULT_GAUSSIAN_MI
    return None


def upgrade() -> None:
    op.add_column("mimax_trials", sa.Column("ceiling", sa.Float, nullable=True))
    op.add_column("mimax_trials", sa.Column("true_mi", sa.Float, nullable=True))
    conn = op.get_bind()
    rows = []
    for trial_id, text in conn.execute(sa.text("SELECT id, config_json FROM mimax_trials")):
        config = json.loads(text)
        values = {"id": trial_id, "ceiling": ceiling(config), "true_mi": true_mi(config)}
        if values["ceiling"] is not None or values["true_mi"] is not None:
            rows.append(values)
    if rows:
        conn.execute(sa.text("UPDATE mimax_trials SET ceiling = :ceiling, true_mi = :true_mi WHERE id = :id"), rows)


def downgrade() -> None:
    with op.batch_alter_table("mimax_trials") as batch:
        batch.drop_column("true_mi")
        batch.drop_column("ceiling")
