"""annotations.unsure and annotations.comment (the labeling page's "unsure / comment"
option); items.text_parts and staged_items.text_parts (each text field as imported, so the
page shows one block per field)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 09:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unsure", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("comment", sa.Text(), nullable=True))
    for table in ("items", "staged_items"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("text_parts", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("staged_items", "items"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("text_parts")
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_column("comment")
        batch_op.drop_column("unsure")
