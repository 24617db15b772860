"""Real processes for end-to-end tests: the Procfile's processes or `webhooks serve`,
and a recording HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
WEBHOOKS = str(Path(sys.executable).parent / "webhooks")


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


# -- the receiver ------------------------------------------------------------------


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers by path: `/ok/*` 200; `/flaky/N/*` `statuses[path]` (500 unless set) for
    the first N tries of each webhook-id, then 200; `/dead/*` 500; `/status/*` whatever
    `statuses[path]` says. Every answer to a path carries the headers in `headers[path]`."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    _tries: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.path == path]

    def _status(self, path: str, webhook_id: str) -> int:
        parts = path.strip("/").split("/")
        if parts[0] == "flaky":
            tries = self._tries.get((path, webhook_id), 0) + 1
            self._tries[(path, webhook_id)] = tries
            return self.statuses.get(path, 500) if tries <= int(parts[1]) else 200
        if parts[0] == "dead":
            return 500
        if parts[0] == "status":
            return self.statuses.get(path, 200)
        return 200

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        item = Received(time.time(), request.url.path, dict(request.headers), body)
        with self._lock:
            self.received.append(item)
            status = self._status(item.path, item.headers.get("webhook-id", ""))
            headers = self.headers.get(item.path)
        text = "ok" if status < 300 else "nope"
        return PlainTextResponse(text, status_code=status, headers=headers)

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", ws="none"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, timeout_s=10, what="the receiver")
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=10)


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
        result = subprocess.run(
            [WEBHOOKS, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def new_client(self, name: str = "client") -> dict[str, str]:
        created = json.loads(self.cli("client", "create", name))
        return {"Authorization": f"Bearer {created['api_key']}"}


def stack_env(database_url: str, redis_url: str | None, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOKS_", "REDIS_"))}
    env.update(
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
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
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
