"""What the soak samples while the load runs: each process's resident memory, open file
descriptors and CPU seconds (a few reads of `/proc`), and the PostgreSQL connections to
the bench database, on a fixed schedule that includes the three marks the report uses.

The marks: the start (after the warm-up), the middle of the measured window, the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.stack import BenchError, cpu_s, fd_count, rss_mb

SAMPLE_INTERVAL_S = 5.0
WARMUP_FRACTION = 0.1
WARMUP_MAX_S = 30.0


@dataclass(frozen=True)
class Sample:
    """One reading of every process, `at_s` seconds into the load."""

    at_s: float
    rss_mb: dict[str, float | None]
    fds: dict[str, int | None]
    cpu_s: dict[str, float | None]
    pg_connections: int | None = None


@dataclass(frozen=True)
class Marks:
    """Seconds into the load: after the warm-up, the middle of the rest, the end."""

    start: float
    middle: float
    end: float


def marks(duration_s: float) -> Marks:
    """The warm-up is 10 % of the run, at most 30 s.

    >>> marks(600.0)
    Marks(start=30.0, middle=315.0, end=600.0)
    """
    start = min(WARMUP_MAX_S, duration_s * WARMUP_FRACTION)
    return Marks(start, start + (duration_s - start) / 2, duration_s)


def schedule(duration_s: float, *, interval_s: float = SAMPLE_INTERVAL_S) -> list[float]:
    """Every `interval_s` from 0 to `duration_s`, and the marks, in order."""
    ticks = [step * interval_s for step in range(int(duration_s // interval_s) + 1)]
    at = marks(duration_s)
    return sorted({round(t, 3) for t in [*ticks, at.start, at.middle, at.end]})


def read_processes(at_s: float, pids: Mapping[str, int], pg_connections: int | None) -> Sample:
    return Sample(
        at_s=at_s,
        rss_mb={name: rss_mb(pid) for name, pid in pids.items()},
        fds={name: fd_count(pid) for name, pid in pids.items()},
        cpu_s={name: cpu_s(pid) for name, pid in pids.items()},
        pg_connections=pg_connections,
    )


async def sample_on_schedule(
    offsets: list[float],
    *,
    started: float,
    pids: Mapping[str, int],
    pg_connections: Callable[[], Awaitable[int | None]],
    every_tick: Callable[[float], Awaitable[None]],
) -> list[Sample]:
    """A `Sample` at each offset (seconds after `started`, monotonic); `every_tick`
    (liveness check, progress) runs after each."""
    samples: list[Sample] = []
    for offset in offsets:
        delay = started + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        samples.append(read_processes(offset, pids, await pg_connections()))
        await every_tick(offset)
    return samples


class PgConnections:
    """Connections to one database, from `pg_stat_activity`. This connection goes to the
    database the admin URL names, so it is not among those it counts."""

    def __init__(self, connection: Any, database: str) -> None:
        self._connection = connection
        self._database = database

    @classmethod
    async def open(cls, admin_url: str, database_url: str) -> PgConnections:
        import asyncpg

        url = "postgresql://" + admin_url.split("://", 1)[1]
        try:
            connection = await asyncpg.connect(url, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise BenchError(f"PostgreSQL: cannot connect to count connections: {exc}") from exc
        return cls(connection, urlsplit(database_url).path.lstrip("/"))

    async def count(self) -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
        return int(await self._connection.fetchval(sql, self._database))

    async def close(self) -> None:
        await self._connection.close()
