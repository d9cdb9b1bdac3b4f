"""retention (purged_at on studies and outputs) and the audit trail of delivery tries

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("purged_instances", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("purged_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("output", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "delivery_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destination", sa.String(length=128), nullable=False),
        sa.Column("peer_ae_title", sa.String(length=16), nullable=False),
        sa.Column("peer_host", sa.String(length=255), nullable=False),
        sa.Column("peer_port", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["delivery_id"], ["delivery.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delivery_attempt", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delivery_attempt_delivery_id"), ["delivery_id"], unique=False
        )
        batch_op.create_index("ix_delivery_attempt_at", ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_attempt_at")
        batch_op.drop_index(batch_op.f("ix_delivery_attempt_delivery_id"))
    op.drop_table("delivery_attempt")
    # Plain ALTER TABLE DROP COLUMN (SQLite 3.35 and later too): a batch copy of ``study``
    # would drop the table its series and jobs refer to.
    op.drop_column("output", "purged_at")
    for column in ("purged_bytes", "purged_instances", "purged_at"):
        op.drop_column("study", column)
