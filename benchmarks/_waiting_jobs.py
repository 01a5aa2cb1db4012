"""Jobs for the wake-latency benchmark (``bench_waiting.wake_latencies``), served by a
real ``durably worker benchmarks._waiting_jobs:app`` process. Each job's last step
appends ``<tag> <time.time()>`` to ``$BENCH_STAMPS``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import pydantic

from durably import Durably, define_job


class Tagged(pydantic.BaseModel):
    tag: str
    wake: float = 0.0


def stamp(tag: str) -> None:
    """Append ``tag`` and the time now to the stamps file (one write: lines never mix)."""
    fd = os.open(os.environ["BENCH_STAMPS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{tag} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


@define_job(name="bench-sleeper", input=Tagged)
def sleeper(step: Any, p: Tagged) -> None:
    step.sleep_until("nap", datetime.fromtimestamp(p.wake, UTC))
    step.run("after", lambda: stamp(p.tag))


@define_job(name="bench-signalled", input=Tagged)
def signalled(step: Any, p: Tagged) -> None:
    step.wait_for_signal("go")
    step.run("after", lambda: stamp(p.tag))


@define_job(name="bench-kid", input=Tagged)
def kid(step: Any, p: Tagged) -> None:
    step.run("work", lambda: stamp(p.tag + ".kid"))


@define_job(name="bench-parent", input=Tagged)
def parent(step: Any, p: Tagged) -> None:
    step.invoke("child", kid, Tagged(tag=p.tag))
    step.run("after", lambda: stamp(p.tag))


app = Durably(jobs=[sleeper, signalled, kid, parent], polling_interval=1.0)
"""The worker's app: the default polling interval (1 s) and durability (fsync on)."""
