"""Real processes for end-to-end tests: the Procfile's processes or `webhooks serve`,
and what a test does with them: its CLI, its API (`make_config`, `create_survey`,
`list_deliveries`, `settled`). The receiver they deliver to is `tests.receivers.Receiver`."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.processes import WEBHOOKS, process_env, webhooks_ok
from tests.servers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
CONFIGS = "/api/v2/config/webhook"
SETTLE_TIMEOUT_S = 30.0


def procfile() -> dict[str, str]:
    """The Procfile's commands by process name, in its order."""
    commands: dict[str, str] = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        name, _, command = (part.strip() for part in line.partition(":"))
        if name:
            assert name not in commands, f"the Procfile declares {name} twice"
            commands[name] = command
    return commands


# -- the service's processes -------------------------------------------------------


class Process:
    def __init__(self, name: str, command: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
        )

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, *, timeout_s: float = 10) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Stack:
    """A running service: `api` talks to its `web`; `processes` by name."""

    env: dict[str, str]
    log_dir: Path
    port: int
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str, command: str, *, env: dict[str, str] | None = None) -> Process:
        """Start `command` as process `name`, with the stack's environment unless `env`."""
        process = Process(name, command, self.env if env is None else env, self.log_dir)
        self.processes[name] = process
        return process

    def wait_ready(self) -> None:
        def healthy() -> bool:
            for process in self.processes.values():
                if process.popen.poll() is not None:
                    raise AssertionError(f"{process.name} exited:\n{process.log()[-3000:]}")
            try:
                return httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout_s=30, what="web to answer /healthz")

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.log()[-4000:]}" for p in self.processes.values())

    def cli(self, *args: str) -> str:
        return webhooks_ok(*args, env=self.env)

    def api(self) -> httpx.Client:
        """A client of the stack's API (to be closed: `with stack.api() as api`)."""
        return httpx.Client(base_url=self.base_url, timeout=10)

    def new_client(self, name: str = "client") -> dict[str, str]:
        created = json.loads(self.cli("client", "create", name))
        return {"Authorization": f"Bearer {created['api_key']}"}


def stack_env(database_url: str, redis_url: str | None, port: int, **extra: str) -> dict[str, str]:
    env = process_env(
        DATABASE_URL=database_url,
        PORT=str(port),
        WEBHOOKS_ALLOW_PRIVATE_TARGETS="1",
        WEBHOOKS_MIN_BACKOFF_MS="200",
        WEBHOOKS_MAX_BACKOFF_MS="2000",
        WEBHOOKS_MAX_ATTEMPTS="4",
        WEBHOOKS_DELIVERY_LEASE_S="5",
        WEBHOOKS_REQUEST_TIMEOUT_S="3",
        WEBHOOKS_POLL_INTERVAL_S="0.5",
        WEBHOOKS_WORKER_CONCURRENCY="8",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


@contextmanager
def procfile_stack(
    database_url: str, redis_url: str, log_dir: Path, **extra: str
) -> Iterator[Stack]:
    """web, poller and worker, each started exactly as the Procfile says."""
    port = free_port()
    stack = Stack(stack_env(database_url, redis_url, port, **extra), log_dir, port)
    commands = procfile()
    try:
        for name in ("web", "poller", "worker"):
            stack.start(name, commands[name])
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@contextmanager
def single_process_stack(
    database_url: str, log_dir: Path, *, name: str, command: str, **extra: str
) -> Iterator[Stack]:
    """One process that serves HTTP on the stack's port, with no Redis."""
    port = free_port()
    stack = Stack(stack_env(database_url, None, port, **extra), log_dir, port)
    try:
        stack.start(name, command)
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@contextmanager
def serve_stack(
    database_url: str, log_dir: Path, *, log_format: str = "text", **extra: str
) -> Iterator[Stack]:
    """`webhooks serve` alone: no Redis."""
    command = f"{shlex.quote(WEBHOOKS)} --log-format {log_format} serve"
    with single_process_stack(
        database_url, log_dir, name="serve", command=command, **extra
    ) as stack:
        yield stack


# -- the API of a running stack ------------------------------------------------------


def make_config(
    api: httpx.Client, headers: dict[str, str], url: str, events: list[str] | None = None
) -> dict[str, Any]:
    """A new configuration of the client of `headers`, subscribed to `events`
    (`survey_created` unless given); as the API created it."""
    response = api.post(
        CONFIGS,
        json={"url": url, "subscribed_events": events or ["survey_created"]},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_survey(api: httpx.Client, headers: dict[str, str], patient: str = "p") -> dict[str, Any]:
    response = api.post("/api/v2/surveys", json={"patient_id": patient}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def list_deliveries(
    api: httpx.Client, headers: dict[str, str], config_id: str
) -> list[dict[str, Any]]:
    """The configuration's deliveries (the first 100), newest first."""
    response = api.get(f"{CONFIGS}/{config_id}/deliveries?limit=100", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def attempts_of(
    api: httpx.Client, headers: dict[str, str], config_id: str, delivery_id: str
) -> list[dict[str, Any]]:
    """The delivery's attempts, as its detail lists them."""
    response = api.get(f"{CONFIGS}/{config_id}/deliveries/{delivery_id}", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["attempts"])


def settled(
    api: httpx.Client,
    headers: dict[str, str],
    config_id: str,
    count: int,
    *,
    status: str | None = None,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Wait until the configuration has `count` deliveries and none is pending; if
    `status` is given, each must then be `status`. Returns them."""

    def done() -> list[dict[str, Any]] | None:
        items = list_deliveries(api, headers, config_id)
        ok = len(items) == count and all(item["status"] != "pending" for item in items)
        return items if ok else None

    items = list(wait_for(done, timeout_s=timeout_s, what=f"{count} settled deliveries"))
    if status is not None:
        assert [item["status"] for item in items] == [status] * count, items
    return items
