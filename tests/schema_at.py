"""A database at an older mimax schema revision, as an older mimax would have left it: mimax's migrations
run with plain Alembic (not through the Store); and a migration's own module, for its frozen backfill
functions. Shared by the store's and the analysis's tests."""

from __future__ import annotations

import functools
import importlib.util
from types import ModuleType

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from mimax.storage.db import MIGRATIONS


def upgrade_to(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


@functools.cache
def migration(revision: str) -> ModuleType:
    """The module of migration ``revision`` (``migration("0003").ceiling(config)``)."""
    (path,) = (MIGRATIONS / "versions").glob(f"{revision}_*.py")
    spec = importlib.util.spec_from_file_location(f"migration_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
