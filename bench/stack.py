"""Everything the benchmark starts, and stops again whatever happens: a private Redis, a
fresh PostgreSQL database, the service's Procfile processes and the receiver.

Each piece is a context manager; `ExitStack` in `bench.run` unwinds them on success,
error, Ctrl-C or SIGTERM. Every child runs in its own session, so a Ctrl-C at the
terminal reaches only the benchmark, which then stops its children in order (TERM,
then KILL after a grace period) by process group id.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from urllib.request import urlopen

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
STOP_GRACE_S = 10.0
START_TIMEOUT_S = 60.0


class BenchError(Exception):
    """The benchmark could not set up or run; the message says what and where to look."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


# -- child processes ----------------------------------------------------------------


class Child:
    """A started process with its output in `log_path`, in a session of its own."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        log_dir: Path,
        stdout_pipe: bool = False,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=log_dir,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """`stop_signal` (TERM) to the process group, KILL after `STOP_GRACE_S`."""
        if self.alive():
            self._signal_group(self.stop_signal)
            try:
                self.popen.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def cpu_s(self) -> float | None:
        return cpu_s(self.pid)

    def rss_mb(self) -> float | None:
        return rss_mb(self.pid)


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds so far of process `pid` (Linux `/proc`), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Server:
    """A server the bench did not start (PostgreSQL), watched for CPU like a `Child`."""

    name: str
    command: str

    def cpu_s(self) -> float | None:
        return server_cpu_s(self.command)


def server_cpu_s(command: str) -> float | None:
    """CPU seconds so far of every process named `command` on this machine (a server and
    its workers, `postgres`), with what its exited children used; None if there is none.
    A server on another machine, or one shared with other work, is not told apart."""
    total, found = 0, False
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue  # exited meanwhile
        name, _, rest = stat.partition(" (")[2].rpartition(")")
        if name != command:
            continue
        fields = rest.split()
        # utime, stime, cutime, cstime (proc(5) fields 14-17): a backend that exited is
        # counted in its parent's cutime and cstime.
        total += sum(int(value) for value in fields[11:15])
        found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


def rss_mb(pid: int) -> float | None:
    """Resident memory of process `pid` (Linux `/proc`), None where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def fd_count(pid: int) -> int | None:
    """Open file descriptors of process `pid` (Linux `/proc`), None where unknown."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@contextmanager
def running(child: Child) -> Iterator[Child]:
    try:
        yield child
    finally:
        child.stop()


@contextmanager
def temp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="webhooks-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- Redis --------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisProcess:
    child: Child
    url: str


@contextmanager
def private_redis(work_dir: Path) -> Iterator[RedisProcess]:
    """A `redis-server` of our own on a free port, no persistence."""
    if shutil.which("redis-server") is None:
        raise BenchError("redis-server is not installed: install it or pass --redis-url")
    port = free_port()
    redis_dir = work_dir / "redis"
    redis_dir.mkdir()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(redis_dir)]
    with running(Child("redis", argv, env=dict(os.environ), log_dir=work_dir)) as child:

        def listening() -> bool:
            child.check_alive()
            return _port_open(port)

        wait_until(listening, timeout_s=10, what="redis-server")
        yield RedisProcess(child, f"redis://127.0.0.1:{port}/0")


# -- PostgreSQL ---------------------------------------------------------------------


def _pg_execute(admin_url: str, sql: str) -> None:
    import asyncpg

    async def execute() -> None:
        connection = await asyncpg.connect(admin_url, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    try:
        asyncio.run(execute())
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"PostgreSQL: {sql.split()[0]} failed: {exc}") from exc


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def fresh_postgres(url: str) -> Iterator[str]:
    """A new database `bench_<random>` on the server of `url`, dropped afterwards; the
    database that `url` names is only used to connect, never written."""
    url = "postgresql://" + url.split("://", 1)[1]
    name = f"bench_{uuid.uuid4().hex[:12]}"
    _pg_execute(url, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(url, name)
    finally:
        _pg_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the service --------------------------------------------------------------------


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def service_env(
    *, database_url: str, redis_url: str | None, port: int, worker_concurrency: int
) -> dict[str, str]:
    """The service's environment; without `redis_url`, none (`webhooks serve`)."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "PORT"}}
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(
        DATABASE_URL=database_url,
        PORT=str(port),
        WEBHOOKS_ALLOW_PRIVATE_TARGETS="1",
        WEBHOOKS_WORKER_CONCURRENCY=str(worker_concurrency),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    return env


def webhooks_cli(env: dict[str, str], *args: str) -> str:
    """Run `webhooks ARGS` to completion; its stdout."""
    argv = [str(VENV_BIN / "webhooks"), *args]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise BenchError(f"`webhooks {' '.join(args)}` failed:\n{result.stderr[-3000:]}")
    return result.stdout


def create_api_key(env: dict[str, str], name: str) -> str:
    created: dict[str, Any] = json.loads(webhooks_cli(env, "client", "create", name))
    return str(created["api_key"])


@dataclass
class Service:
    """The Procfile's processes, started exactly as it declares them."""

    env: dict[str, str]
    log_dir: Path
    port: int
    processes: list[Child] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str, kind: str) -> Child:
        """The Procfile's `kind` process, as `name`."""
        return self.start_command(name, procfile()[kind])

    def start_command(self, name: str, command: str) -> Child:
        child = Child(name, ["bash", "-c", f"exec {command}"], env=self.env, log_dir=self.log_dir)
        self.processes.append(child)
        return child

    def workers(self) -> list[Child]:
        return [child for child in self.processes if child.name.startswith("worker")]

    def check_alive(self) -> None:
        for child in self.processes:
            child.check_alive()

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            self.check_alive()
            try:
                with urlopen(self.base_url + "/healthz", timeout=1) as response:
                    return int(response.status) == 200
            except OSError:
                return False

        wait_until(healthy, timeout_s=START_TIMEOUT_S, what="web to answer /healthz")

    def log_tails(self, *, lines: int = 8) -> str:
        return "\n".join(
            f"-- {child.name} (last lines)\n" + "\n".join(child.log_tail().splitlines()[-lines:])
            for child in self.processes
        )

    def stop(self) -> None:
        # Web first, so nothing new is written; then the poller; workers last.
        for child in self.processes:
            child.stop()


@contextmanager
def procfile_service(env: dict[str, str], log_dir: Path, *, workers: int) -> Iterator[Service]:
    service = Service(env, log_dir, int(env["PORT"]))
    try:
        service.start("web", "web")
        service.start("poller", "poller")
        for number in range(1, workers + 1):
            service.start(f"worker{number}", "worker")
        service.wait_healthy()
        yield service
    finally:
        service.stop()


@contextmanager
def serve_service(env: dict[str, str], log_dir: Path) -> Iterator[Service]:
    """`webhooks serve`: web, poller and worker in one process, no Redis."""
    service = Service(env, log_dir, int(env["PORT"]))
    try:
        service.start_command("serve", "webhooks serve")
        service.wait_healthy()
        yield service
    finally:
        service.stop()


# -- the receiver -------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiverProcess:
    child: Child
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def receiver_process(log_dir: Path) -> Iterator[ReceiverProcess]:
    argv = [sys.executable, "-m", "bench.receiver", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": _python_path()}
    with running(Child("receiver", argv, env=env, log_dir=log_dir, stdout_pipe=True)) as child:
        assert child.popen.stdout is not None
        line = child.popen.stdout.readline().decode().strip()
        if not line.startswith("PORT "):
            raise BenchError(f"the receiver did not start:\n{child.log_tail()}")
        yield ReceiverProcess(child, int(line.split()[1]))


def _python_path() -> str:
    existing = os.environ.get("PYTHONPATH")
    return f"{REPO}{os.pathsep}{existing}" if existing else str(REPO)
