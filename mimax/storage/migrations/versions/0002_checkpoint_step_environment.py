"""Trials remember the step of their checkpoint; one environment row per driver session.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mimax.storage.migrations.tables import TS, create_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("mimax_trials", sa.Column("checkpoint_step", sa.Integer, nullable=True))
    short, text = sa.String(64), sa.Text
    create_table("mimax_environment", {
        "study_id": sa.Integer, "session": sa.Integer, "recorded_at": TS, "mimax_version?": short,
        "python?": short, "torch?": short, "ray?": short, "optuna?": short, "sqlalchemy?": short,
        "git_commit?": short, "hostname?": text, "platform?": text, "cpu?": text, "gpu?": text, "device?": short,
        "extra": text,
    }, unique=("study_id", "session"), parent=("study_id", "mimax_studies"))


def downgrade() -> None:
    op.drop_table("mimax_environment")
    with op.batch_alter_table("mimax_trials") as batch:
        batch.drop_column("checkpoint_step")
