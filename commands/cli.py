"""The `webhooks` command: migrate, run the processes, manage clients."""

from __future__ import annotations

import click

from commands.audit import deliveries
from commands.common import (
    fail,
    migrated_settings,
    needs_redis,
    parse_duration_s,
    print_json,
    run_with_db,
)
from commands.patients import patients


@click.group()
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One JSON object a line with `json`.",
)
@click.option("--log-level", default="INFO", show_default=True)
def main(log_format: str, log_level: str) -> None:
    """Webhook delivery service."""
    from core.logs import configure_logging

    configure_logging(log_format=log_format, level=log_level.upper())


@main.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    settings = migrated_settings()
    click.echo(f"database is up to date ({settings.database_url.backend})")


@main.command()
def web() -> None:
    """Serve the HTTP API (the Procfile's `web`)."""
    from commands.processes import run_web

    run_web(migrated_settings())


@main.command()
def poller() -> None:
    """Move outbox events to the queue and sweep stranded deliveries (needs REDIS_URL)."""
    from commands.processes import run_poller

    run_poller(needs_redis(migrated_settings(), "poller"))


@main.command()
def worker() -> None:
    """Deliver webhooks from the queue (needs REDIS_URL)."""
    from commands.processes import run_worker

    run_worker(needs_redis(migrated_settings(), "worker"))


@main.command()
def serve() -> None:
    """Run web, poller and worker in one process, with an in-process queue (no Redis)."""
    from commands.processes import serve as serve_all

    serve_all(migrated_settings())


@main.group()
def client() -> None:
    """Manage API clients."""


@client.command("create")
@click.argument("name")
def client_create(name: str) -> None:
    """Create a client; prints its API key once, as JSON."""
    from core.clients import create_client

    settings = migrated_settings()
    print_json(run_with_db(settings, lambda db: create_client(db, name)))


@client.command("list")
def client_list() -> None:
    """List clients (never their keys), as JSON lines."""
    from core.clients import list_clients

    settings = migrated_settings()
    for row in run_with_db(settings, list_clients):
        print_json(row)


@client.command("revoke")
@click.argument("client_id")
def client_revoke(client_id: str) -> None:
    """Revoke a client's API key."""
    from core.clients import revoke_client

    settings = migrated_settings()
    if not run_with_db(settings, lambda db: revoke_client(db, client_id)):
        fail(f"no active client {client_id}")
    print_json({"id": client_id, "revoked": True})


@main.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Age, e.g. 30d, 12h, 15m or seconds: final deliveries and dispatched events older go.",
)
def prune(older_than: str) -> None:
    """Remove delivered and failed deliveries, their attempts and dispatched outbox rows
    older than a duration, and expired idempotency keys, in small batches."""
    from datetime import timedelta

    from core.clock import utcnow
    from core.lifecycle import prune as prune_older

    try:
        age = timedelta(seconds=parse_duration_s(older_than))
    except ValueError as exc:
        fail(str(exc))
    settings = migrated_settings()
    pruned = run_with_db(settings, lambda db: prune_older(db, older_than=age, now=utcnow()))
    print_json(
        {
            "deliveries": pruned.deliveries,
            "attempts": pruned.attempts,
            "outbox": pruned.outbox,
            "idempotency_keys": pruned.idempotency_keys,
        }
    )


main.add_command(deliveries)
main.add_command(patients)


if __name__ == "__main__":
    main()
