"""The states of a delivery, and which transitions each allows.

pending ──attempt ok──▶ delivered ──redeliver──▶ pending
   │  ╲──attempts spent──▶ failed ──redeliver / recover──▶ pending
   │   ╲──configuration disabled──▶ held ──configuration enabled──▶ pending
   ╰──configuration deleted, or its survey erased (pending or held)──▶ cancelled (final)
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    HELD = "held"
    CANCELLED = "cancelled"


CANCELLABLE = (Status.PENDING, Status.HELD)
"""Cancelled with their configuration, or with the erasure of their survey."""
REDELIVERABLE = (Status.DELIVERED, Status.FAILED, Status.PENDING)
"""Sent again (same `webhook-id`) on request."""
FINAL = (Status.DELIVERED, Status.FAILED)
"""Attempted to the end: what retention prunes."""
