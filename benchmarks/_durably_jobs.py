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
    # Measure the matching floor every ``floor_every`` steps, outside the steps' timing, so
    # that step and floor see the same moments of a noisy shared disk.
    floor_every: int = 0
    floor_sync: bool = False
    floor_path: str = ""


_STATE: dict[str, float | None] = {"per_step": None, "floor": None, "entered": None}
KILL_ENV = "DURABLY_BENCH_KILL"
FLOOR_BATCH = 100


@define_job(name="steps", input=Steps)
def steps_job(step: Step, payload: Steps) -> None:
    """n trivial steps; records the cost of one step.run (claim and completion excluded):
    the median over chunks of the mean cost in each chunk."""
    every = payload.floor_every or payload.n
    chunks: list[float] = []  # mean step cost of each chunk of ``every`` steps
    floors: list[float] = []  # mean floor of the batch measured before each chunk
    clock = time.perf_counter
    for start in range(0, payload.n, every):
        if payload.floor_every:
            floors.append(append_floor(Path(payload.floor_path), FLOOR_BATCH, payload.floor_sync))
        end = min(start + every, payload.n)
        spent = 0.0
        for i in range(start, end):
            t0 = clock()
            step.run(f"s{i}", lambda i=i: i)
            spent += clock() - t0
        chunks.append(spent / (end - start))
    # Medians: a stall of the shared disk spoils one chunk or one batch, not the figure.
    _STATE["per_step"] = statistics.median(chunks)
    _STATE["floor"] = statistics.median(floors) if floors else None


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


def step(root: str, fsync: bool, steps: int) -> dict:
    """Per-step checkpoint cost in one run of ``steps`` steps, and the matching floor
    (append + fdatasync, or a plain append) measured in batches between its steps."""
    d = _open(root, fsync)
    job = d.register(steps_job)
    job.trigger({"n": 50})  # warm up: imports, root creation, first files
    d.process_one()
    floor_path = str(Path(root).parent / f"floor-{os.getpid()}.log")
    job.trigger(
        {"n": steps, "floor_every": max(steps // 10, 1), "floor_sync": fsync, "floor_path": floor_path}
    )
    if not d.process_one():
        return {"error": "process_one() found no run"}
    return {"step_s": _STATE["per_step"], "floor_s": _STATE["floor"], "steps": steps}


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
    return {"replay_s": _STATE["entered"] - t1, "construct_s": t1 - t0, "steps": steps, "status": status}


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
