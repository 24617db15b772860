"""The transactional outbox: events written in the caller's transaction, the poller
that fans them out into deliveries and hands those to Dramatiq, and the sweep that
re-enqueues deliveries whose worker died or whose queue message was lost."""
