"""delivery controls: filter, ordering, rate and in-flight limits, headers, payload

Revision ID: 0004_delivery_controls
Revises: 0003_trust
Create Date: 2026-12-10 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_delivery_controls"
# Re-chained after 0003 (signatures and idempotency) when both branches are merged.
down_revision = "0003_trust"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_configs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("filter", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("ordering", sa.String(length=8), server_default="none", nullable=False)
        )
        batch_op.add_column(sa.Column("rate_limit_per_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_in_flight", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("headers", sa.JSON(), server_default="{}", nullable=False))
        batch_op.add_column(
            sa.Column("payload", sa.String(length=8), server_default="full", nullable=False)
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
        batch_op.add_column(sa.Column("waiting_reason", sa.String(length=16), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_deliveries_config_id_seq"), ["config_id", "seq"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_config_id_seq"))
        batch_op.drop_column("waiting_reason")
        batch_op.drop_column("seq")
    with op.batch_alter_table("webhook_configs", schema=None) as batch_op:
        for column in (
            "payload",
            "headers",
            "max_in_flight",
            "rate_limit_per_s",
            "ordering",
            "filter",
        ):
            batch_op.drop_column(column)
