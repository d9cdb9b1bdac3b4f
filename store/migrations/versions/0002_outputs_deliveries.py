"""outputs, deliveries, series embeddings; job leases and the skipped state

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # JobState gains "skipped": the column is a VARCHAR(16) without a CHECK constraint
    # (native_enum=False, create_constraint=False), so the new value needs no DDL.
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )

    op.create_table(
        "output",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=False),
        sa.Column("file_path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("package_hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_instance_uid"),
    )
    with op.batch_alter_table("output", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_output_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_output_study_instance_uid"), ["study_instance_uid"], unique=False
        )

    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("output_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=128), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "PENDING",
                "SENDING",
                "DELIVERED",
                "DEAD",
                name="deliverystate",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sender", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["output_id"], ["output.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("output_id", "destination", name="uq_delivery_output_destination"),
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_due", ["state", "next_attempt_at"], unique=False)

    op.create_table(
        "series_embedding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("package_name", sa.String(length=128), nullable=False),
        sa.Column("package_version", sa.String(length=64), nullable=False),
        sa.Column("package_hash", sa.String(length=128), nullable=False),
        sa.Column("package_path", sa.Text(), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "series_instance_uid", "package_hash", name="uq_embedding_series_package"
        ),
    )
    with op.batch_alter_table("series_embedding", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_series_embedding_study_instance_uid"),
            ["study_instance_uid"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("series_embedding", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_embedding_study_instance_uid"))
    op.drop_table("series_embedding")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_due")
    op.drop_table("delivery")
    with op.batch_alter_table("output", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_output_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_output_job_id"))
    op.drop_table("output")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
