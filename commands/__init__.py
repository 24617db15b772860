"""The `webhooks` command and the processes it runs: `web`, `poller`, `worker` (the
Procfile's) and `serve` (all three in one process). This is where the HTTP face
(`service`), the outbox and the workers are put together; nothing below imports it.

- `cli`: the command group, the process commands, clients, prune.
- `audit`: `webhooks deliveries list|show`.
- `processes`: the wiring of each process.
- `common`: what the commands share.
"""
