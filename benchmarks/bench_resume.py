"""Recovering from failures (issue 11): resuming a failed run of 10,000 completed steps,
and finding runs by creation time over 100,000 runs.

    python benchmarks/run.py --only resume
    python -m benchmarks._child benchmarks.bench_resume resume_failed '{"steps": 10000}'

Each figure runs in a fresh interpreter (``Context.child``):

- ``resume_failed``: a run of N completed steps whose last step failed (built with
  fsync off); then, with ``fsync=True``: ``durably.resume(run_id)`` (it copies the N
  checkpoints into the new run), and from the ``process_one()`` that claims the new run
  to the start of its first new step (the N replayed ones are dictionary lookups).
- ``created_window``: a root of 100,000 pending runs created 3.6 s apart over 100 hours
  (ids and ``created_at`` agree; built once, cached); ``get_runs(created_after=<an hour
  before the newest run>, limit=50)`` in a fresh process, first call and median of 20,
  beside ``get_runs(limit=50)``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from benchmarks.registry import Context, Result, benchmark, result_from

MODULE = "benchmarks.bench_resume"
SECTION = "recovering"
ROWS = {
    "resume": "resume() of a failed run with {n:,} completed steps (fsync on)",
    "next": "its claim to the first new step ({n:,} replayed)",
    "window": "get_runs(created_after=1 h before the newest, limit=50), {n:,} runs, first call",
    "window-warm": "the same, repeated (median)",
    "page": "get_runs(limit=50) beside it (median)",
}


class In(BaseModel):
    steps: int


def resume_failed(steps: int = 10_000) -> dict[str, Any]:
    """Resume a failed run of ``steps`` completed steps; time the resume and the claim."""
    from durably import Durably, define_job  # noqa: PLC0415 - imported in the child only

    marks: dict[str, float] = {}
    broken = {"yes": True}

    def last() -> str:
        marks.setdefault("next", time.perf_counter())
        if broken["yes"]:
            raise RuntimeError("the service is down")
        return "ok"

    @define_job(name="bench-resume", input=In)
    def long_job(step: Any, p: In) -> str:
        for i in range(p.steps):
            step.run(f"s{i}", lambda i=i: {"i": i, "v": [i, i * 2]})
        return str(step.run("last", last))

    with tempfile.TemporaryDirectory() as tmp:
        setup = Durably(tmp, jobs=[long_job], fsync=False)
        failed = setup.register(long_job).trigger({"steps": steps}).id
        setup.process_until_idle()
        run = setup.get_run(failed)
        if run is None or run.status.value != "failed":
            return {"error": f"setup: the run is {run and run.status}, not failed"}
        broken["yes"] = False
        marks.clear()
        d = Durably(tmp, jobs=[long_job], fsync=True)
        t0 = time.perf_counter()
        new = d.resume(failed).id
        t1 = time.perf_counter()
        if not d.process_one():
            return {"error": "process_one() found no run"}
        done = d.get_run(new)
        if done is None or done.status.value != "completed":
            return {"error": f"the resumed run is {done and done.status}"}
    return {"resume_s": t1 - t0, "next_s": marks["next"] - t1, "steps": steps}


class _FakeTime:
    """A clock for ``Durably(clock=)`` that ``new_id`` advances: ids and created_at agree."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.at = start
        self.step = step

    def now(self) -> datetime:
        return self.at


def build_window_root(root: str, count: int) -> dict[str, Any]:
    """``count`` pending runs 3.6 s apart over the 100 hours before now (fsync off)."""
    import durably._trigger as trigger_module  # noqa: PLC0415
    from durably import Durably, define_job  # noqa: PLC0415
    from durably._ids import time_prefix  # noqa: PLC0415

    step = timedelta(hours=100) / count
    fake = _FakeTime(datetime.now(UTC) - timedelta(hours=100), step)
    serial = iter(range(1 << 62))

    def new_id() -> str:
        fake.at += fake.step
        return time_prefix(int(fake.at.timestamp() * 1000)) + f"{next(serial):016d}"

    trigger_module.new_id = new_id  # type: ignore[assignment]  # this child process only
    job = define_job(name="bench-window", input=In, run=lambda step, p: None)
    d = Durably(root, jobs=[job], fsync=False, clock=fake)
    handle = d.register(job)
    t0 = time.perf_counter()
    for _ in range(count):
        handle.trigger({"steps": 0})
    return {"build_s": time.perf_counter() - t0, "count": count}


def created_window(root: str, repeat: int = 20) -> dict[str, Any]:
    """get_runs(created_after=an hour before the newest run, limit=50) in a fresh process."""
    from durably import Durably  # noqa: PLC0415

    d = Durably(root, fsync=True)
    newest = d.get_runs(limit=1)
    if not newest:
        return {"error": "empty root"}
    after = newest[0].created_at - timedelta(hours=1)
    d = Durably(root, fsync=True)  # fresh caches for the first call
    t0 = time.perf_counter()
    page = d.get_runs(created_after=after, limit=50)
    first = time.perf_counter() - t0
    if len(page) != 50 or any(r.created_at < after for r in page):
        return {"error": f"the window returned {len(page)} runs"}
    warm, plain = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        d.get_runs(created_after=after, limit=50)
        t1 = time.perf_counter()
        d.get_runs(limit=50)
        warm.append(t1 - t0)
        plain.append(time.perf_counter() - t1)
    return {"first_s": first, "median_s": statistics.median(warm), "page_s": statistics.median(plain)}


@benchmark("resume")
def resume(ctx: Context) -> list[Result]:
    steps = 1000 if ctx.quick else 10_000
    count = 2000 if ctx.quick else 100_000
    ctx.log(f"durably: resume of a failed run with {steps:,} steps")
    r = ctx.child("benchmarks.bench_resume", "resume_failed", steps=steps)
    out = [
        result_from(r, "resume_s", SECTION, ROWS["resume"].format(n=steps), "durably"),
        result_from(r, "next_s", SECTION, ROWS["next"].format(n=steps), "durably", note="target < 0.5 s"),
    ]
    cached = ctx.cache / f"resume-window-{count}"
    if not (cached / ".complete").exists():
        shutil.rmtree(cached, ignore_errors=True)
        ctx.log(f"durably: building a root of {count:,} runs over 100 hours (cached for reruns)")
        where = str(cached / "root")
        built = ctx.child(MODULE, "build_window_root", root=where, count=count, timeout=1800)
        if built.get("error"):
            row = ROWS["window"].format(n=count)
            return [*out, Result(SECTION, row, "durably", None, error=built["error"])]
        (cached / ".complete").write_text(str(count))
    w = ctx.child("benchmarks.bench_resume", "created_window", root=str(cached / "root"))
    out.append(
        result_from(w, "first_s", SECTION, ROWS["window"].format(n=count), "durably", note="target < 50 ms")
    )
    out.append(result_from(w, "median_s", SECTION, ROWS["window-warm"], "durably"))
    out.append(result_from(w, "page_s", SECTION, ROWS["page"], "durably"))
    return out
