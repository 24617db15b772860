"""signature schemes (v1a) and idempotency keys

Revision ID: 0003_trust
Revises: 0002_portal
Create Date: 2026-12-10 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_trust"
down_revision = "0002_portal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_configs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("signature_scheme", sa.String(length=8), server_default="v1", nullable=False)
        )
    op.create_table(
        "idempotency_keys",
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("route", sa.String(length=300), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_idempotency_keys_client_id_clients")
        ),
        sa.PrimaryKeyConstraint("client_id", "route", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_expires_at"))
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("webhook_configs", schema=None) as batch_op:
        batch_op.drop_column("signature_scheme")
