"""login throttling counters and case-insensitive account names

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000

``login_failures`` becomes one counter row per (account name, address) pair and per address,
updated under a row lock (its old rows, recent failed logins, are dropped: at worst a
throttled guesser starts afresh). ``annotators.name_key`` (NFKC, stripped, case-folded name)
is unique; two existing names that fold to the same key keep their accounts, the later one
with ``#id`` after its key, and an admin should rename it.
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("login_failures")
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
        sa.Column("blocked_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "name", "address", name="uq_login_failures_scope"),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failures_last_at"), ["last_at"], unique=False)

    with op.batch_alter_table("annotators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(length=300), nullable=True))
    connection = op.get_bind()
    annotators = sa.table(
        "annotators",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("name_key", sa.String),
    )
    seen: set[str] = set()
    for row_id, name in connection.execute(
        sa.select(annotators.c.id, annotators.c.name).order_by(annotators.c.id)
    ).all():
        key = unicodedata.normalize("NFKC", name).strip().casefold()
        if key in seen:
            key = f"{key}#{row_id}"
        seen.add(key)
        connection.execute(sa.update(annotators).where(annotators.c.id == row_id).values(name_key=key))
    with op.batch_alter_table("annotators", schema=None) as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(length=300), nullable=False)
        batch_op.create_unique_constraint("uq_annotators_name_key", ["name_key"])


def downgrade() -> None:
    with op.batch_alter_table("annotators", schema=None) as batch_op:
        batch_op.drop_constraint("uq_annotators_name_key", type_="unique")
        batch_op.drop_column("name_key")
    op.drop_table("login_failures")
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failures_address"), ["address"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_failures_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_failures_name"), ["name"], unique=False)
