"""Real servers for tests: PostgreSQL databases, PostgreSQL instances of a test's own,
Redis servers and free ports; `wait_for`, how a test waits for something outside it.

A test that needs a server and finds none is skipped on a developer's machine and
FAILS in CI (`CI` set), so a green CI run never hides a missing server.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get(
    "WEBHOOKS_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def missing(what: str) -> None:
    """Skip locally, fail in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI and is not available")
    pytest.skip(f"{what} is not available")


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    """Poll `predicate` until it returns something true, and return that; fail with
    `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", PG_ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
    )


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test run, dropped afterwards."""
    if shutil.which("psql") is None or not port_open("127.0.0.1", 5432):
        missing("PostgreSQL on 127.0.0.1:5432")
    name = f"webhooks_test_{uuid.uuid4().hex[:12]}"
    _psql(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class PostgresInstance:
    """A PostgreSQL cluster of a test's own, in a temporary directory, on a free port of
    127.0.0.1 with trust authentication: the test may stop and start it at will, and the
    shared server is never touched. As root, its programs run as the `postgres` user
    (PostgreSQL refuses to run as root)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="webhooks-pg-"))
        self.data = self.dir / "data"
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def start(self) -> None:
        """Start and wait until it accepts connections. Durability is off (fsync,
        synchronous_commit): the test stops it cleanly, and it costs less CPU."""
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.dir / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self.running = True

    def stop(self, *, mode: str = "fast") -> None:
        """`pg_ctl stop -m mode`: "fast" rolls back open transactions and closes every
        connection, as a restart in production does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def log(self) -> str:
        path = self.dir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _postgres_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in path.split("/")[4].split(".") if part.isdigit())


@contextmanager
def postgres_instance() -> Iterator[PostgresInstance]:
    """A started `PostgresInstance`, always stopped and removed afterwards."""
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        missing("PostgreSQL's initdb and pg_ctl")
        raise AssertionError("unreachable")  # missing() skips or fails
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing("runuser (to run PostgreSQL as the postgres user)")
    instance = PostgresInstance(bin_dir)
    try:
        instance.init()
        instance.start()
        yield instance
    finally:
        try:
            if instance.running:
                instance.stop(mode="immediate")
        finally:
            shutil.rmtree(instance.dir, ignore_errors=True)


class RedisServer:
    """A private `redis-server` on a free port: tests may FLUSHALL, kill and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="webhooks-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open("127.0.0.1", self.port), timeout_s=10, what="redis-server")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        missing("redis-server")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


class TcpProxy:
    """A TCP relay on a free port of 127.0.0.1 to `target_port`, in the test's event
    loop: `cut()` drops every connection and refuses new ones, as a server that went
    away would; `restore()` accepts again. For outages of a real server that other
    tests share, without stopping it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
