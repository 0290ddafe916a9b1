"""A database at an older mimax schema revision, as an older mimax would have left it: mimax's migrations
run with plain Alembic (not through the Store). Shared by the store's and the analysis's tests."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from mimax.db import MIGRATIONS


def upgrade_to(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()
