"""Trials store their ceiling and their true MI (nats), backfilled for existing rows from their config.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

The true MI is a frozen snapshot of what the data reported when this revision was written
(``Views.true_mi``); the ceiling is ``mimax.contract.ceiling``, the rule analysis also applies to a
database from before this revision.
"""

from __future__ import annotations

import json
import math

import sqlalchemy as sa
from alembic import op

from mimax.contract import ceiling

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NONIID_TRUE_MI = -0.5 * math.log(1 - 0.2**2)  # the paper's Fig. 4c pairs: correlation 0.2
DEFAULT_GAUSSIAN_MI = 1.0


def _name(section) -> str | None:
    if isinstance(section, str):
        return section
    return section.get("name") if isinstance(section, dict) else None


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
