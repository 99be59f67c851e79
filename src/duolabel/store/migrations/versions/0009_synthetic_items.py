"""synthetic_items: LLM-generated training items (items of role 'synthetic') with their
intended label, how they were generated and how they were checked

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 07:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "synthetic_items",
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("leaf", sa.String(length=200), nullable=True),
        sa.Column("logprob", sa.Float(), nullable=True),
        sa.Column("agreement", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("item_id"),
    )
    with op.batch_alter_table("synthetic_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_synthetic_items_label"), ["label"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("synthetic_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_synthetic_items_label"))
    op.drop_table("synthetic_items")
