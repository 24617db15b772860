"""W3C trace context of events and their deliveries (SPEC 17)

Revision ID: 0007_traceparent
Revises: 0006_erasures
Create Date: 2026-12-12 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_traceparent"
down_revision = "0006_erasures"
branch_labels = None
depends_on = None

TABLES = ("outbox", "deliveries")


def upgrade() -> None:
    # Nullable, no default: existing rows have no trace, and adding the column rewrites
    # nothing on PostgreSQL.
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("traceparent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("traceparent")
