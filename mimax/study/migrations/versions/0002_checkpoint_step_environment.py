"""Trials remember the step of their checkpoint; one environment row per driver session.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("mimax_trials", sa.Column("checkpoint_step", sa.Integer, nullable=True))
    op.create_table(
        "mimax_environment",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("session", sa.Integer, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mimax_version", sa.String(64), nullable=True),
        sa.Column("python", sa.String(64), nullable=True),
        sa.Column("torch", sa.String(64), nullable=True),
        sa.Column("ray", sa.String(64), nullable=True),
        sa.Column("optuna", sa.String(64), nullable=True),
        sa.Column("sqlalchemy", sa.String(64), nullable=True),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("hostname", sa.Text, nullable=True),
        sa.Column("platform", sa.Text, nullable=True),
        sa.Column("cpu", sa.Text, nullable=True),
        sa.Column("gpu", sa.Text, nullable=True),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("extra", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mimax_environment"),
        sa.ForeignKeyConstraint(["study_id"], ["mimax_studies.id"], name="fk_mimax_environment_study_id"),
        sa.UniqueConstraint("study_id", "session", name="uq_mimax_environment_study_id_session"),
    )


def downgrade() -> None:
    op.drop_table("mimax_environment")
    with op.batch_alter_table("mimax_trials") as batch:
        batch.drop_column("checkpoint_step")
