"""route positions: the order of the people's queue, which active learning may change

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("routes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position", sa.Integer(), nullable=True))
    # Existing routes keep the order they had: import order.
    op.execute("UPDATE routes SET position = (SELECT items.seq FROM items WHERE items.id = routes.item_id)")
    with op.batch_alter_table("routes", schema=None) as batch_op:
        batch_op.alter_column("position", existing_type=sa.Integer(), nullable=False)
        batch_op.create_index(batch_op.f("ix_routes_position"), ["position"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("routes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_routes_position"))
        batch_op.drop_column("position")
