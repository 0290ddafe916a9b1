"""Studies, trials and evaluations.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mimax.storage.migrations.tables import TS, create_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S255, S64, TEXT, INT, FLOAT = sa.String(255), sa.String(64), sa.Text, sa.Integer, sa.Float


def upgrade() -> None:
    create_table("mimax_studies", {
        "name": S255, "space_source": TEXT, "space_json": TEXT, "space_fingerprint": sa.String(128),
        "budget?": TEXT, "sampler": S64, "directions": TEXT, "metrics": TEXT, "seeds": INT,
        "n_configs_requested?": INT, "optuna_study_name": S255, "results_dir": TEXT, "status": sa.String(16),
        "created_at": TS, "updated_at": TS, "driver_owner?": TEXT, "driver_heartbeat_at?": TS,
    }, unique=("name",))
    create_table("mimax_trials", {
        "study_id": INT, "trial_key": S255, "optuna_trial_number?": INT, "config_json": TEXT,
        "config_hash": S64, "seed": INT, "replicate_group": S255, "replicate_index": INT,
        "state": sa.String(16), "error?": TEXT, "node?": TEXT, "resources?": TEXT, "started_at?": TS,
        "ended_at?": TS, "checkpoint?": TEXT, "last_step?": INT, "ray_trial_id?": S255, "updated_at": TS,
    }, unique=("study_id", "trial_key"), parent=("study_id", "mimax_studies"))
    create_table("mimax_evaluations", {
        "trial_id": INT, "step": INT, "bound_train?": FLOAT, "bound_test?": FLOAT, "probe_accuracy?": FLOAT,
        "loss?": FLOAT, "wall_s?": FLOAT, "metrics": TEXT, "recorded_at": TS,
    }, unique=("trial_id", "step"), parent=("trial_id", "mimax_trials"))


def downgrade() -> None:
    op.drop_table("mimax_evaluations")
    op.drop_table("mimax_trials")
    op.drop_table("mimax_studies")
