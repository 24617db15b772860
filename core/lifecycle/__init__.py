"""The delivery lifecycle: the one place that makes delivery rows and changes their
status (`status` draws the state machine).

- `making`: new rows, `pending` or `held`, one per (event, configuration).
- `attempts`: a worker's claim (the lease), parking (hold, cancel) and release.
- `records`: an attempt's outcome, the delivery's next state, the endpoint's health.
- `changes`: hold and release with the configuration, cancel, redeliver, recover,
  empty the deliveries of erased surveys.
- `ordering`: the fifo rule of the claim, and the hand-over to the next head.
- `sweep`: deliveries that no worker is on, due again.
- `retention`: final deliveries and dispatched events past the retention, removed.
"""

from core.lifecycle.attempts import EARLY_ARRIVAL_SLACK, Claim, claim, park, release
from core.lifecycle.changes import (
    cancelling,
    emptying,
    locked_state,
    recover,
    redeliver,
    releasing_held,
)
from core.lifecycle.making import (
    DELIVERY_COLUMNS,
    deliveries_insert,
    delivery_row,
    insert_deliveries,
)
from core.lifecycle.ordering import mark_waiting_in_order, next_in_order
from core.lifecycle.records import AttemptRecord, Health, Result, record
from core.lifecycle.retention import Pruned, prune
from core.lifecycle.status import CANCELLABLE, FINAL, REDELIVERABLE, Status
from core.lifecycle.sweep import sweep_stranded

__all__ = [
    "CANCELLABLE",
    "DELIVERY_COLUMNS",
    "EARLY_ARRIVAL_SLACK",
    "FINAL",
    "REDELIVERABLE",
    "AttemptRecord",
    "Claim",
    "Health",
    "Pruned",
    "Result",
    "Status",
    "cancelling",
    "claim",
    "deliveries_insert",
    "delivery_row",
    "emptying",
    "insert_deliveries",
    "locked_state",
    "mark_waiting_in_order",
    "next_in_order",
    "park",
    "prune",
    "record",
    "recover",
    "redeliver",
    "release",
    "releasing_held",
    "sweep_stranded",
]
