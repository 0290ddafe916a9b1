"""What the migrations share: a mimax table written as its columns. A migration is frozen history, so it
spells out its own column types instead of reading ``mimax.storage.models``; the constraint names follow
``mimax.storage.models.NAMING``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

TS = sa.DateTime(timezone=True)


def create_table(name: str, columns: dict, unique: tuple[str, ...], parent: tuple[str, str] | None = None) -> None:
    """Table ``name``: an integer primary key ``id``, then ``columns`` ({name: type}, in order; a name
    ending in "?" is nullable), a foreign key ``parent`` = (column, table) to that table's ``id``, and a
    unique constraint over ``unique``."""
    cols = [sa.Column(c.rstrip("?"), t, nullable=c.endswith("?")) for c, t in columns.items()]
    fks = [sa.ForeignKeyConstraint([parent[0]], [f"{parent[1]}.id"], name=f"fk_{name}_{parent[0]}")] if parent else []
    op.create_table(name, sa.Column("id", sa.Integer, nullable=False), *cols,
                    sa.PrimaryKeyConstraint("id", name=f"pk_{name}"), *fks,
                    sa.UniqueConstraint(*unique, name=f"uq_{name}_{'_'.join(unique)}"))
