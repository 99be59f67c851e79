"""staged items: imports write here and publish into items in one short transaction

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staged_items",
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("ord", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("gold_label", sa.String(length=200), nullable=True),
        sa.Column("gold_source", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("import_id", "id"),
    )
    with op.batch_alter_table("staged_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staged_items_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("staged_items")
