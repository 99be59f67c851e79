"""synthetic_items.review, reviewed_by, reviewed_at (a reviewer's accept / reject on the
web app's synthetic review page) and synthetic_items.judged_label (the LLM judge's label,
synthetic.judge)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 10:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("synthetic_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("reviewed_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("reviewed_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("judged_label", sa.String(length=200), nullable=True))
        batch_op.create_foreign_key(
            "fk_synthetic_items_reviewed_by_annotators", "annotators", ["reviewed_by"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("synthetic_items", schema=None) as batch_op:
        batch_op.drop_constraint("fk_synthetic_items_reviewed_by_annotators", type_="foreignkey")
        batch_op.drop_column("judged_label")
        batch_op.drop_column("reviewed_at")
        batch_op.drop_column("reviewed_by")
        batch_op.drop_column("review")
