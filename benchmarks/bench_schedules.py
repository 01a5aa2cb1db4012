"""Schedules (issue 11): a worker with 1,000 schedules in the root, how late it fires
each tick, and what it costs while nothing is due.

    python benchmarks/run.py --only schedules
    python benchmarks/bench_schedules.py [WORKDIR]

Each figure runs in a fresh interpreter (``Context.child``), fsync on:

- ``firing``: 1,000 schedules, schedule ``i`` firing at second ``i % 60`` of every
  minute (about 17 ticks a second, each schedule once a minute); a ``start()`` worker
  polling every 1 s runs for 20 s. For every tick after the worker started: its ``created_at`` minus its tick
  (read from its idempotency key). Target: every tick within ``polling_interval`` + 1 s.
- ``idle``: 1,000 schedules that fire once a year; a ``start()`` worker polling every
  1 s for 10 s; the process's CPU time over the wall time. Target: under 2 % of a core.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic

from benchmarks.registry import Context, Result, benchmark, result_from
from durably import Durably, define_job

SECTION = "schedules"
SCHEDULES = 1000


class In(pydantic.BaseModel):
    n: int = 0


@define_job(name="tick", input=In)
def tick(step: Any, p: In) -> None:
    step.run("one", lambda: p.n)


def _root(workdir: str, name: str, cron: Any) -> Durably:
    path = Path(workdir) / name
    shutil.rmtree(path, ignore_errors=True)
    d = Durably(path, jobs=[tick], polling_interval=1.0)
    for i in range(SCHEDULES):
        d.schedule(f"s{i:04d}", tick, cron(i), input={"n": i})
    return d


def firing(workdir: str, seconds: float = 20.0) -> dict[str, float]:
    """How late a worker fires the ticks of 1,000 schedules (seconds after the tick)."""
    d = _root(workdir, "firing", lambda i: f"{i % 60} * * * * *")
    d.start()
    started = datetime.now(UTC)  # ticks before this fell while the schedules were created
    time.sleep(seconds)
    d.stop()
    late = []
    for run in d.get_runs(limit=100_000):
        tick_at = datetime.strptime((run.idempotency_key or "").split("@")[1], "%Y-%m-%dT%H:%M:%SZ")
        if tick_at.replace(tzinfo=UTC) > started:
            late.append((run.created_at - tick_at.replace(tzinfo=UTC)).total_seconds())
    return {"fired": len(late), "late_max_s": max(late), "late_median_s": statistics.median(late)}


def idle(workdir: str, seconds: float = 10.0) -> dict[str, float]:
    """CPU of a worker polling every 1 s over 1,000 schedules, none due."""
    d = _root(workdir, "idle", lambda i: f"{i % 60} 3 1 1 *")
    d.process_one()  # the first look reads every record; later ones only stat
    time.sleep(2.5)  # past the moment a just-changed directory is read again
    d.start()
    t, w = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    cpu, wall = time.process_time() - t, time.perf_counter() - w
    d.stop()
    return {"cpu_pct": cpu / wall * 100}


ROWS = {
    "late": "1,000 schedules: latest tick fired after its time (polling 1 s; target ≤ 2 s)",
    "median": "1,000 schedules: median tick fired after its time",
    "idle": "idle worker polling 1 s over 1,000 schedules (% of a core; target < 2 %)",
}


@benchmark("schedules")
def schedules(ctx: Context) -> list[Result]:
    fired = ctx.child("benchmarks.bench_schedules", "firing", workdir=str(ctx.scratch("firing")))
    out = [result_from(fired, "late_max_s", SECTION, ROWS["late"], "durably")]
    out.append(result_from(fired, "late_median_s", SECTION, ROWS["median"], "durably"))
    quiet = ctx.child("benchmarks.bench_schedules", "idle", workdir=str(ctx.scratch("idle")))
    out.append(result_from(quiet, "cpu_pct", SECTION, ROWS["idle"], "durably", unit="%"))
    return out


def main() -> None:
    work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="durably-bench-")
    try:
        got = firing(work)
        print(f"{got['fired']:.0f} ticks fired; latest {got['late_max_s']:.2f} s, median {got['late_median_s']:.2f} s")
        print(f"idle over 1,000 schedules: {idle(work)['cpu_pct']:.2f} % of a core")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
