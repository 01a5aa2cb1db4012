"""Runs that wait (issue 10): claims and the idle loop with 10,000 waiting runs in the root.

    python benchmarks/bench_waiting.py [WORKDIR]

Builds two roots (fsync off to build them fast): one with no waiting run and one with
10,000 runs waiting an hour to start (their markers are in ``wait/``), adds 500 pending
one-step runs to each, and times ``process_until_idle()`` draining them (best of two,
the roots alternating). Then measures the CPU of an idle poll over the 10,000 waiting
runs when every poll lists ``wait/`` (polls 0.6 s apart, past the listing's trust).
Prints the rates and their ratio from this one run.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydantic

from durably import BatchItem, Durably, define_job


class In(pydantic.BaseModel):
    n: int = 0


@define_job(name="one", input=In)
def one(step: Any, p: In) -> None:
    step.run("s", lambda: p.n)


def build(path: Path, waiting: int) -> Durably:
    shutil.rmtree(path, ignore_errors=True)
    d = Durably(path, jobs=[one], fsync=False)
    h = d.register(one)
    for _ in range(0, waiting, 1000):
        h.batch_trigger([BatchItem(input={"n": j}, delay=3600) for j in range(1000)])
    return d


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="durably-bench-"))
    best: dict[int, float] = {}
    for waiting in (0, 10_000, 0, 10_000):
        d = build(work / f"w{waiting}", waiting)
        d.register(one).batch_trigger([{"n": i} for i in range(500)])
        t = time.perf_counter()
        assert d.process_until_idle() == 500
        best[waiting] = min(best.get(waiting, float("inf")), time.perf_counter() - t)
    for waiting, seconds in best.items():
        print(f"claim + execute 500 runs, {waiting:>6} waiting: {500 / seconds:7.0f} runs/s")
    print(f"ratio, with 10,000 waiting / with none: {best[0] / best[10_000]:.2f}x")
    d = Durably(work / "w10000", jobs=[one], fsync=False)
    cpu = 0.0
    for _ in range(10):
        time.sleep(0.6)
        t = time.process_time()
        d.process_one()
        cpu += time.process_time() - t
    per_poll = cpu / 10
    print(f"idle poll, 10,000 waiting: {per_poll * 1000:.1f} ms CPU ({per_poll * 100:.2f}% of a core)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
