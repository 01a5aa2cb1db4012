"""A nightly import on a cron schedule, whose last step fails until the target is fixed.

    python examples/nightly.py                 # schedule it; wait for a tick; it fails
    WAREHOUSE_UP=1 python examples/nightly.py resume RUN_ID   # after the fix: resume

The schedule fires at 02:30 in Berlin (``$NIGHTLY_CRON`` overrides the cron expression:
``NIGHTLY_CRON="*/5 * * * * *"`` fires every five seconds, to watch it now). Each tick
becomes exactly one run, with the idempotency key ``"nightly-import@<tick in UTC>"``,
however many workers share the root. The job fetches three pages (checkpointed), then
publishes them to a warehouse that is down unless ``$WAREHOUSE_UP`` is set, so the run
fails at its last step. ``resume`` starts a new run that replays the three fetched pages
from their checkpoints and runs only the publish step again.

In production the schedule is fired by the workers: ``durably worker examples.nightly:durably``.
Runs are stored under ``.durably`` (or ``$DURABLY_ROOT``); ``durably schedules`` lists the
schedule, ``durably schedule pause nightly-import`` pauses it.
"""

from __future__ import annotations

import os
import sys
import threading

from pydantic import BaseModel

from durably import Durably, Step, define_job


class ImportIn(BaseModel):
    pages: int = 3


def fetch(run_id: str, page: int) -> list[str]:
    print(f"  fetching page {page} for run {run_id}", flush=True)  # the call not to repeat
    return [f"order-{page}-{i}" for i in range(3)]


def publish(orders: list[str]) -> int:
    if not os.environ.get("WAREHOUSE_UP"):
        raise ConnectionError("the warehouse API is down")
    return len(orders)


@define_job(name="import-orders", input=ImportIn, output=int)
def import_orders(step: Step, payload: ImportIn) -> int:
    orders: list[str] = []
    for page in range(payload.pages):
        orders += step.run(f"fetch-{page}", lambda page=page: fetch(step.run_id, page))
    return step.run("publish", lambda: publish(orders))


durably = Durably(jobs=[import_orders], polling_interval=0.2)
# Safe at import time in every process: the same arguments again change nothing.
durably.schedule(
    "nightly-import",
    import_orders,
    os.environ.get("NIGHTLY_CRON", "30 2 * * *"),
    input=ImportIn(pages=3),
    timezone="Europe/Berlin",
)


def wait_for_a_tick() -> int:
    """Run a worker until the schedule's next tick has run; print how it ended."""
    schedule = durably.get_schedule("nightly-import")
    assert schedule is not None
    print(f"nightly-import fires next at {schedule.next_run_at} (UTC); waiting for it", flush=True)
    ended = threading.Event()
    durably.on("run:complete", lambda e: ended.set())
    durably.on("run:fail", lambda e: ended.set())
    durably.on(
        "schedule:fire", lambda e: print(f"fired {e.run_id} for the tick {e.scheduled_at}", flush=True)
    )
    durably.start()
    try:
        ended.wait()
    finally:
        durably.stop()
    last = durably.get_schedule("nightly-import")
    run = durably.get_run(last.last_run_id) if last and last.last_run_id else None
    assert run is not None
    print(f"run {run.id} {run.status.value}: {run.error or run.output}")
    if run.error:
        print(f"fix it, then: WAREHOUSE_UP=1 python examples/nightly.py resume {run.id}")
    return 0


def resume(run_id: str) -> int:
    """Resume a failed run: its fetched pages are replayed, only publishing runs again."""
    new = durably.resume(run_id)
    print(f"resuming {run_id} as {new.id}", flush=True)
    durably.process_until_idle()
    run = durably.get_run(new.id)
    assert run is not None
    print(f"run {run.id} {run.status.value}: {run.error or run.output}")
    return 0 if run.status.value == "completed" else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["resume"] and len(sys.argv) == 3:
        sys.exit(resume(sys.argv[2]))
    sys.exit(wait_for_a_tick())
