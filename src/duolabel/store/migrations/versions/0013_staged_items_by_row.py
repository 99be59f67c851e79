"""staged_items: an index on (import_id, ord), for publishing and dropping an import's
staged rows a range of file rows at a time (issue 12 item 9)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 08:10:00.000000
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("staged_items", schema=None) as batch_op:
        batch_op.create_index("ix_staged_items_import_id_ord", ["import_id", "ord"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("staged_items", schema=None) as batch_op:
        batch_op.drop_index("ix_staged_items_import_id_ord")
