"""answers as text: the columns that hold an answer (gold labels, annotations, predictions,
final labels, audits) widen from VARCHAR(200) to TEXT, so a list-valued answer (a span list)
of any length fits

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 09:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = [
    ("items", "gold_label", True),
    ("staged_items", "gold_label", True),
    ("predictions", "label", False),
    ("annotations", "label", False),
    ("final_labels", "label", False),
    ("audits", "label", False),
]


def _alter(to: sa.types.TypeEngine, existing: sa.types.TypeEngine) -> None:
    # SQLite never enforces a VARCHAR length (its columns have TEXT affinity), so there is
    # nothing to change there; rebuilding items and every table that references it (what
    # batch mode would do) would only cost time on a large project.
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(table, column, type_=to, existing_type=existing, existing_nullable=nullable)


def upgrade() -> None:
    _alter(sa.Text(), sa.String(length=200))


def downgrade() -> None:
    # Fails (on PostgreSQL) while a stored answer is longer than 200 characters.
    _alter(sa.String(length=200), sa.Text())
