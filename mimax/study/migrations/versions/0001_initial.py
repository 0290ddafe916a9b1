"""Studies, trials and evaluations.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mimax_studies",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("space_source", sa.Text, nullable=False),
        sa.Column("space_json", sa.Text, nullable=False),
        sa.Column("space_fingerprint", sa.String(128), nullable=False),
        sa.Column("budget", sa.Text, nullable=True),
        sa.Column("sampler", sa.String(64), nullable=False),
        sa.Column("directions", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("seeds", sa.Integer, nullable=False),
        sa.Column("n_configs_requested", sa.Integer, nullable=True),
        sa.Column("optuna_study_name", sa.String(255), nullable=False),
        sa.Column("results_dir", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("driver_owner", sa.Text, nullable=True),
        sa.Column("driver_heartbeat_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_mimax_studies"),
        sa.UniqueConstraint("name", name="uq_mimax_studies_name"),
    )
    op.create_table(
        "mimax_trials",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("trial_key", sa.String(255), nullable=False),
        sa.Column("optuna_trial_number", sa.Integer, nullable=True),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("replicate_group", sa.String(255), nullable=False),
        sa.Column("replicate_index", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("node", sa.Text, nullable=True),
        sa.Column("resources", sa.Text, nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("checkpoint", sa.Text, nullable=True),
        sa.Column("last_step", sa.Integer, nullable=True),
        sa.Column("ray_trial_id", sa.String(255), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mimax_trials"),
        sa.ForeignKeyConstraint(["study_id"], ["mimax_studies.id"], name="fk_mimax_trials_study_id"),
        sa.UniqueConstraint("study_id", "trial_key", name="uq_mimax_trials_study_id_trial_key"),
    )
    op.create_table(
        "mimax_evaluations",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("trial_id", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("bound_train", sa.Float, nullable=True),
        sa.Column("bound_test", sa.Float, nullable=True),
        sa.Column("probe_accuracy", sa.Float, nullable=True),
        sa.Column("loss", sa.Float, nullable=True),
        sa.Column("wall_s", sa.Float, nullable=True),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mimax_evaluations"),
        sa.ForeignKeyConstraint(["trial_id"], ["mimax_trials.id"], name="fk_mimax_evaluations_trial_id"),
        sa.UniqueConstraint("trial_id", "step", name="uq_mimax_evaluations_trial_id_step"),
    )


def downgrade() -> None:
    op.drop_table("mimax_evaluations")
    op.drop_table("mimax_trials")
    op.drop_table("mimax_studies")
