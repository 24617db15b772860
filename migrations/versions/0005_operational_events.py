"""operational events: the configuration an outbox event is about

Revision ID: 0005_operational_events
Revises: 0004_delivery_controls
Create Date: 2026-12-03 10:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_operational_events"
down_revision = "0004_delivery_controls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("source_config_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("source_config_id")
