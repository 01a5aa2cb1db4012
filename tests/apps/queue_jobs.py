"""A job for the queueing tests (tests/test_queue_processes.py): its one step appends
``start <run id> <key> <n> <pid>`` and ``end <run id> <key> <n> <pid>`` lines to
``$QUEUE_EVENTS`` (one ``O_APPEND`` file, so the order of the lines is the order of the
events across processes; no clock is compared), and between the two blocks until the
file ``gate`` exists, if the input names one."""

from __future__ import annotations

import os
import time
from typing import Any

import pydantic

from durably import Durably, define_job

from .common import append_line, wait_for_file


class Item(pydantic.BaseModel):
    key: str = "-"
    n: int = 0
    gate: str = ""


@define_job(name="q-item", input=Item, output=int)
def item(step: Any, p: Item) -> int:
    def work() -> int:
        events = os.environ["QUEUE_EVENTS"]
        append_line(events, f"start {step.run_id} {p.key} {p.n} {os.getpid()}", sync=False)
        if p.gate:
            wait_for_file(p.gate)
        time.sleep(0.01)  # widen the window in which an overlap would show
        append_line(events, f"end {step.run_id} {p.key} {p.n} {os.getpid()}", sync=False)
        return p.n

    return int(step.run("work", work))


durably = Durably(jobs=[item], polling_interval=0.05, lease_duration=3600.0, fsync=False)
