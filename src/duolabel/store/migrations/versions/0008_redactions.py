"""redactions: personal data replaced before an item's text went to a remote labeler

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "redactions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("end", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("placeholder", sa.String(length=64), nullable=False),
        sa.Column("original", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("item_id", "start", name="uq_redactions_item_start"),
    )
    with op.batch_alter_table("redactions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_redactions_item_id"), ["item_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("redactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_redactions_item_id"))
    op.drop_table("redactions")
