"""durably's side of the benchmarks: the jobs, and the figures run in child processes.

Imported only in child interpreters (``Context.child``), so that run.py still prints
the peers and the floors when the core package is broken.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from pathlib import Path

from pydantic import BaseModel

from benchmarks.bench_floors import append_floor
from durably import Durably, Step, define_job


class Steps(BaseModel):
    n: int


_STATE: dict[str, float | None] = {"per_step": None, "entered": None}
KILL_ENV = "DURABLY_BENCH_KILL"


@define_job(name="steps", input=Steps)
def steps_job(step: Step, payload: Steps) -> None:
    """n trivial steps; records the mean cost of one step.run (claim and completion excluded)."""
    t0 = time.perf_counter()
    for i in range(payload.n):
        step.run(f"s{i}", lambda i=i: i)
    _STATE["per_step"] = (time.perf_counter() - t0) / payload.n


@define_job(name="replay", input=Steps)
def replay_job(step: Step, payload: Steps) -> None:
    """n trivial steps, then a sentinel step that SIGKILLs the process the first time."""
    for i in range(payload.n):
        step.run(f"s{i}", lambda i=i: i)

    def sentinel() -> int:
        if os.environ.get(KILL_ENV):
            os.kill(os.getpid(), signal.SIGKILL)
        _STATE["entered"] = time.perf_counter()
        return payload.n

    step.run("sentinel", sentinel)


def _open(root: str, fsync: bool) -> Durably:
    return Durably(root, jobs=[steps_job, replay_job], fsync=fsync)


def _floor(root: str, sync: bool, iterations: int = 250) -> float:
    """The matching floor, measured beside the durably figure on the same file system."""
    return append_floor(Path(root).parent / f".floor-{os.getpid()}-{sync}", iterations, sync)


def step(root: str, fsync: bool, steps: int) -> dict:
    """Per-step checkpoint cost in a run of ``steps`` steps, and the floor around it."""
    d = _open(root, fsync)
    job = d.register(steps_job)
    job.trigger({"n": 50})  # warm up: imports, root creation, first files
    d.process_one()
    before = _floor(root, fsync)
    job.trigger({"n": steps})
    if not d.process_one():
        return {"error": "process_one() found no run"}
    after = _floor(root, fsync)
    return {"step_s": _STATE["per_step"], "floor_s": statistics.mean([before, after]),
            "steps": steps}


def trigger(root: str, fsync: bool, count: int) -> dict:
    """Triggers per second, no worker."""
    d = _open(root, fsync)
    job = d.register(steps_job)
    for _ in range(20):
        job.trigger({"n": 1})
    t0 = time.perf_counter()
    for _ in range(count):
        job.trigger({"n": 1})
    return {"trigger_per_s": count / (time.perf_counter() - t0), "count": count}


def e2e(root: str, fsync: bool, runs: int, steps: int) -> dict:
    """Trigger ``runs`` runs of ``steps`` steps, then process_until_idle(); wall time."""
    d = _open(root, fsync)
    job = d.register(steps_job)
    t0 = time.perf_counter()
    for _ in range(runs):
        job.trigger({"n": steps})
    done = d.process_until_idle()
    dt = time.perf_counter() - t0
    if done != runs:
        return {"error": f"processed {done} of {runs} runs"}
    return {"e2e_s": dt, "runs": runs, "steps": steps}


def replay_setup(root: str, steps: int) -> dict:
    """Run the replay job until its sentinel step kills this process (SIGKILL)."""
    d = _open(root, fsync=False)  # setup only: the replay itself is what is timed
    d.register(replay_job).trigger({"n": steps})
    d.process_one()
    return {"error": "the sentinel step did not kill the process"}


def replay(root: str, fsync: bool, steps: int) -> dict:
    """In a fresh process: time from process_one() until the sentinel step is entered."""
    t0 = time.perf_counter()
    d = _open(root, fsync)
    t1 = time.perf_counter()
    if not d.process_one():
        return {"error": "process_one() found no run to resume"}
    if _STATE["entered"] is None:
        return {"error": "the sentinel step was not reached"}
    runs = d.get_runs(limit=1)
    status = runs[0].status.value if runs else "?"
    return {"replay_s": _STATE["entered"] - t1, "construct_s": t1 - t0, "steps": steps,
            "status": status}


def build_runs(root: str, count: int) -> dict:
    """Create ``count`` pending runs quickly (fsync=False, batches)."""
    d = _open(root, fsync=False)
    job = d.register(steps_job)
    t0 = time.perf_counter()
    done = 0
    while done < count:
        n = min(1000, count - done)
        job.batch_trigger([{"n": 1}] * n)
        done += n
    return {"build_s": time.perf_counter() - t0, "count": count}


def get_runs(root: str, repeat: int = 20) -> dict:
    """get_runs(limit=50) in a fresh process: the first call, and the median of repeats."""
    d = _open(root, fsync=True)
    t0 = time.perf_counter()
    page = d.get_runs(limit=50)
    first = time.perf_counter() - t0
    if len(page) != 50:
        return {"error": f"get_runs(limit=50) returned {len(page)} runs"}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        d.get_runs(limit=50)
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "median_s": statistics.median(times)}
