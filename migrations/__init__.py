"""Alembic migrations; run them with `webhooks migrate` (see `core.migrate`)."""
