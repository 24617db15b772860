"""What `service`, `outbox` and `workers` share: settings, tables, database access, events."""
