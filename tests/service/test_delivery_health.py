"""`service.deliveries.health` and `hourly`, what the portal shows of a configuration's
last 24 hours, on both backends."""

from __future__ import annotations

from datetime import timedelta

from core.clock import utcnow
from core.database import Database
from service.deliveries import HOUR, health, hourly
from tests.outbox.helpers import new_client_id, new_config, new_delivery


async def test_health_counts_the_window_by_status_and_finds_the_newest(db: Database) -> None:
    client_id = await new_client_id(db)
    busy, idle = await new_config(db, client_id), await new_config(db, client_id)
    now = utcnow()
    for status in ("delivered", "delivered", "failed", "pending"):
        await new_delivery(db, busy, status=status, created_at=now - timedelta(hours=1))
    old = now - timedelta(days=2)
    await new_delivery(db, busy, status="failed", created_at=old)
    await new_delivery(db, idle, status="delivered", created_at=old)

    found = await health(db, [busy["id"], idle["id"]], since=now - timedelta(hours=24))

    assert found[busy["id"]].counts == {"delivered": 2, "failed": 1, "pending": 1}
    assert found[busy["id"]].total == 4
    assert found[busy["id"]].success_rate == 2 / 3
    last = found[busy["id"]].last_created_at
    assert last is not None and abs(last - (now - timedelta(hours=1))) < timedelta(seconds=1)
    assert found[idle["id"]].counts == {} and found[idle["id"]].success_rate is None
    assert found[idle["id"]].last_created_at is not None
    assert await health(db, [], since=now) == {}


async def test_hourly_buckets_whole_utc_hours(db: Database) -> None:
    client_id = await new_client_id(db)
    config = await new_config(db, client_id)
    now = utcnow()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    await new_delivery(db, config, status="delivered", created_at=this_hour)
    await new_delivery(db, config, status="failed", created_at=this_hour + timedelta(seconds=1))
    await new_delivery(db, config, status="delivered", created_at=this_hour - 3 * HOUR)
    await new_delivery(db, config, status="delivered", created_at=this_hour - 30 * HOUR)

    buckets = await hourly(db, config["id"], until=now)

    assert len(buckets) == 24
    assert buckets[-1] == (this_hour, {"delivered": 1, "failed": 1})
    assert buckets[-4] == (this_hour - 3 * HOUR, {"delivered": 1})
    assert buckets[0][0] == this_hour - 23 * HOUR
    assert sum(sum(counts.values()) for _, counts in buckets) == 3
