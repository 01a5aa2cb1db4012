"""Runs that wait (issue 10): claims with 10,000 waiting runs, wake latencies, the cost
of retries, and resuming a long run after a sleep; DBOS side by side where it has the
feature (step retries, ``DBOS.sleep``).

    python benchmarks/run.py --only waiting,dbos-waiting
    python benchmarks/bench_waiting.py [WORKDIR]      # the claim figures only

Each figure runs in a fresh interpreter (``Context.child``):

- ``claims_with_waiting``: two roots (fsync off to build them), one with no waiting run
  and one with 10,000 runs waiting an hour to start; 500 pending one-step runs drained by
  ``process_until_idle()`` in each (best of two, alternating), and the CPU of an idle
  poll over the 10,000 waiting runs when every poll lists ``wait/`` (polls 0.6 s apart,
  past the listing's trust).
- ``wake_latencies``: a real ``durably worker`` process (polling every 1 s, fsync on)
  and, from this process, runs that sleep until a time, wait for a signal, or invoke a
  child. Medians of: the time a sleeping run's next step starts after its wake time; a
  signal sent from here to the waiter's next step; the child's step to the parent's next
  step.
- ``retry_cost``: a step that fails twice and succeeds at its third attempt with
  ``Retry(max_attempts=3, delay=0.01, jitter=False)``, timed around ``step.run`` in the
  job, minus the waits (0.01 + 0.02 s), over a step that succeeds at once (fsync on);
  again minus what two such waits cost this machine beyond their length (a process
  woken from a timed wait writes and syncs more slowly: measured beside it); and with
  ``delay=0``, the retry machinery alone.
- ``resume_after_sleep``: a run of 1,000 steps sleeps 2.5 s (it releases the worker);
  from the ``process_one()`` that claims it again to its next step.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pydantic

from benchmarks.registry import REPO, Context, Result, benchmark, result_from, run_json
from durably import BatchItem, Durably, Retry, define_job

SECTION = "runs that wait"


class In(pydantic.BaseModel):
    n: int = 0


@define_job(name="one", input=In)
def one(step: Any, p: In) -> None:
    step.run("s", lambda: p.n)


def _build(path: Path, waiting: int) -> Durably:
    shutil.rmtree(path, ignore_errors=True)
    d = Durably(path, jobs=[one], fsync=False)
    h = d.register(one)
    for _ in range(0, waiting, 1000):
        h.batch_trigger([BatchItem(input={"n": j}, delay=3600) for j in range(1000)])
    return d


def claims_with_waiting(workdir: str) -> dict[str, float]:
    """Claim + execute 500 runs with 0 and 10,000 waiting runs; an idle poll's CPU."""
    work = Path(workdir)
    best: dict[int, float] = {}
    for waiting in (0, 10_000, 0, 10_000):
        d = _build(work / f"w{waiting}", waiting)
        d.register(one).batch_trigger([{"n": i} for i in range(500)])
        t = time.perf_counter()
        assert d.process_until_idle() == 500
        best[waiting] = min(best.get(waiting, float("inf")), time.perf_counter() - t)
    d = Durably(work / "w10000", jobs=[one], fsync=False)
    cpu = 0.0
    for _ in range(10):
        time.sleep(0.6)
        t = time.process_time()
        d.process_one()
        cpu += time.process_time() - t
    return {
        "rate_none": 500 / best[0],
        "rate_waiting": 500 / best[10_000],
        "ratio": best[0] / best[10_000],
        "idle_poll_cpu_pct": cpu / 10 * 100,
    }


def _stamps(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            tag, _, t = line.partition(" ")
            out[tag] = float(t)
    return out


def _until(predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.002)


def wake_latencies(workdir: str, runs: int = 7) -> dict[str, float]:
    """Medians of the three wake latencies (see the module docstring)."""
    from benchmarks._waiting_jobs import Tagged, parent, signalled, sleeper  # noqa: PLC0415

    root, stamps = Path(workdir) / "root", Path(workdir) / "stamps"
    d = Durably(root, jobs=[sleeper, signalled, parent])
    d.register(signalled).trigger(Tagged(tag="warm-up"))  # creates the root
    env = {**os.environ, "BENCH_STAMPS": str(stamps), "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "durably", "worker", "benchmarks._waiting_jobs:app", "--root", str(root)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert worker.stderr is not None
        _until(lambda: b"ready" in worker.stderr.readline() or worker.poll() is not None)
        assert worker.poll() is None, "the worker did not start"
        out: dict[str, float] = {}

        # Sleeps: wake times 1.3 s apart, so the worker is idle at each.
        start = time.time() + 3.0
        wakes = {f"sleep{i}": start + 1.3 * i for i in range(runs)}
        for tag, wake in wakes.items():
            d.register(sleeper).trigger(Tagged(tag=tag, wake=wake))

        def all_stamped(tags: list[str]) -> dict[str, float] | None:
            got = _stamps(stamps)
            return got if all(t in got for t in tags) else None

        got = _until(lambda: all_stamped(list(wakes)), timeout=120)
        out["sleep_s"] = statistics.median(got[t] - wakes[t] for t in wakes)

        # Signals: the waiter parked and its worker idle, then the signal from here.
        lat = []
        for i in range(runs):
            run = d.register(signalled).trigger(Tagged(tag=f"signal{i}"))
            _until(lambda run=run: (r := d.get_run(run.id)) is not None and r.waiting_for == "signal go")
            time.sleep(0.3)  # let the worker go back to its idle wait
            t0 = time.time()
            d.signal(run.id, "go")
            lat.append(_until(lambda i=i: _stamps(stamps).get(f"signal{i}")) - t0)
        out["signal_s"] = statistics.median(lat)

        # Children: the child's step to the parent's next step.
        lat = []
        for i in range(runs):
            d.register(parent).trigger(Tagged(tag=f"child{i}"))
            got = _until(lambda i=i: all_stamped([f"child{i}"]))
            lat.append(got[f"child{i}"] - got[f"child{i}.kid"])
        out["child_s"] = statistics.median(lat)
        out["polling_interval_s"] = 1.0
        return out
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)


def retry_cost(runs: int = 30, delay: float = 0.01) -> dict[str, float]:
    """Median time of a step that succeeds at once, and of one that succeeds at its third
    attempt (minus its nominal waits, ``delay`` then twice ``delay``); their ratio."""
    attempts: dict[int, int] = {}
    times: dict[str, list[float]] = {"ok": [], "flaky": []}

    def flaky(n: int) -> int:
        attempts[n] = attempts.get(n, 0) + 1
        if attempts[n] < 3:
            raise ConnectionError("try again")
        return n

    @define_job(name="bench-ok", input=In)
    def ok(step: Any, p: In) -> None:
        t = time.perf_counter()
        step.run("s", lambda: p.n)
        times["ok"].append(time.perf_counter() - t)

    @define_job(name="bench-flaky", input=In)
    def flaky_job(step: Any, p: In) -> None:
        t = time.perf_counter()
        step.run("s", lambda: flaky(p.n), retry=Retry(max_attempts=3, delay=delay, jitter=False))
        times["flaky"].append(time.perf_counter() - t - 3 * delay)

    with tempfile.TemporaryDirectory() as tmp:
        d = Durably(tmp, jobs=[ok, flaky_job])
        for i in range(runs):
            d.register(ok).trigger({"n": i})
            d.register(flaky_job).trigger({"n": i})
        d.process_until_idle()
        late = _wait_lateness(Path(tmp) / "floor", delay, runs)
    assert len(times["ok"]) == len(times["flaky"]) == runs, times
    ok_s, flaky_s = statistics.median(times["ok"]), statistics.median(times["flaky"])
    return {
        "ok_s": ok_s,
        "flaky_s": flaky_s,
        "ratio": flaky_s / ok_s,
        "wait_lateness_s": late,
        "ratio_actual_waits": (flaky_s - late) / ok_s,
    }


def _wait_lateness(path: Path, delay: float, n: int) -> float:
    """What the two waits of a retry cost beyond their nominal length on this machine:
    a timed ``Event.wait`` of ``delay`` and of twice ``delay``, each followed by an append
    and ``fdatasync`` (a process that slept writes more slowly), minus the same appends
    without the waits. The floor under ``retry_cost``'s figure."""
    event = threading.Event()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def once(wait: float) -> float:
        t = time.perf_counter()
        if wait:
            event.wait(wait)
        os.write(fd, b"x" * 200)
        os.fdatasync(fd)
        return time.perf_counter() - t - wait

    try:
        if not delay:
            return 0.0
        # Paired and interleaved: the disk's load drifts; each pair sees the same.
        pairs = [(once(delay) + once(2 * delay)) - (once(0) + once(0)) for _ in range(2 * n)]
        return max(0.0, statistics.median(pairs))
    finally:
        os.close(fd)


def resume_after_sleep(steps: int = 1000) -> dict[str, float]:
    """From the claim of a slept 1,000-step run to its next step."""
    marks: dict[str, float] = {}

    @define_job(name="bench-long-sleeper", input=In)
    def long_sleeper(step: Any, p: In) -> None:
        for i in range(steps):
            step.run(f"s{i}", lambda i=i: i)
        step.sleep("nap", 2.5)
        marks.setdefault("next", time.perf_counter())
        step.run("next", lambda: None)

    with tempfile.TemporaryDirectory() as tmp:
        d = Durably(tmp, jobs=[long_sleeper])
        run = d.register(long_sleeper).trigger({})
        assert d.process_one()
        got = d.get_run(run.id)
        assert got is not None
        assert got.wake_at is not None, "the run did not sleep"
        time.sleep(max(0.0, got.wake_at.timestamp() - time.time()) + 0.05)
        t0 = time.perf_counter()
        assert d.process_one()
        done = d.get_run(run.id)
        assert done is not None
        assert done.status.value == "completed", done
    return {"resume_s": marks["next"] - t0, "steps": steps}


def short_sleep(runs: int = 5) -> dict[str, float]:
    """Lateness of a 1 s sleep spent in the worker (a short wait: the run stays leased)."""
    late: list[float] = []

    @define_job(name="bench-short-sleeper", input=In)
    def short_sleeper(step: Any, p: In) -> None:
        t0 = time.time()
        step.sleep("nap", 1.0)
        late.append(step.run("stamp", time.time) - t0 - 1.0)

    with tempfile.TemporaryDirectory() as tmp:
        d = Durably(tmp, jobs=[short_sleeper])
        for _ in range(runs):
            d.register(short_sleeper).trigger({})
        d.process_until_idle()
    return {"sleep_s": statistics.median(late)}


ROWS = {
    "short-sleep": "sleep 1 s, spent in the worker: lateness of the next step",
    "claims": "claim + execute 500 runs: with 10,000 waiting ÷ with none",
    "idle": "idle poll over 10,000 waiting runs (% of a core)",
    "retry-time": "retried step: fails twice, succeeds at attempt 3 (delay 0.01 s), waits excluded",
    "ok-time": "step that succeeds at once",
    "sleep": "due sleep: wake time to next step (polling 1 s)",
    "signal": "signal from another process to the waiter's next step",
    "child": "child's end to the parent's next step",
    "retry": "retried step (3rd attempt succeeds, delay 0.01 s) ÷ step that succeeds, waits excluded",
    "retry-late": "the same, minus what two waits of 10 and 20 ms cost here beyond 30 ms (a floor)",
    "retry0": "the same with delay 0 (the retry machinery alone)",
    "resume": "resume a slept 1,000-step run: claim to next step",
}


@benchmark("waiting")
def waiting(ctx: Context) -> list[Result]:
    out = []
    claims = ctx.child("benchmarks.bench_waiting", "claims_with_waiting", workdir=str(ctx.scratch("claims")))
    out.append(result_from(claims, "ratio", SECTION, ROWS["claims"], "durably", unit="x"))
    out.append(result_from(claims, "idle_poll_cpu_pct", SECTION, ROWS["idle"], "durably", unit="%"))
    wake = ctx.child("benchmarks.bench_waiting", "wake_latencies", workdir=str(ctx.scratch("wake")))
    for key in ("sleep", "signal", "child"):
        out.append(result_from(wake, f"{key}_s", SECTION, ROWS[key], "durably"))
    short = ctx.child("benchmarks.bench_waiting", "short_sleep")
    out.append(result_from(short, "sleep_s", SECTION, ROWS["short-sleep"], "durably"))
    retry = ctx.child("benchmarks.bench_waiting", "retry_cost", delay=0.01)
    out.append(result_from(retry, "flaky_s", SECTION, ROWS["retry-time"], "durably"))
    out.append(result_from(retry, "ok_s", SECTION, ROWS["ok-time"], "durably"))
    out.append(result_from(retry, "ratio", SECTION, ROWS["retry"], "durably", unit="x"))
    out.append(result_from(retry, "ratio_actual_waits", SECTION, ROWS["retry-late"], "durably", unit="x"))
    retry = ctx.child("benchmarks.bench_waiting", "retry_cost", delay=0.0)
    out.append(result_from(retry, "ratio", SECTION, ROWS["retry0"], "durably", unit="x"))
    resume = ctx.child("benchmarks.bench_waiting", "resume_after_sleep")
    out.append(result_from(resume, "resume_s", SECTION, ROWS["resume"], "durably"))
    return out


@benchmark("dbos-waiting")
def dbos_waiting(ctx: Context) -> list[Result]:
    """DBOS's step retries and ``DBOS.sleep``, on its default (power-loss safe) SQLite."""
    from benchmarks.bench_peers import ensure_dbos  # noqa: PLC0415

    rows = [("retry-time", "retry", "flaky_s", "s"), ("ok-time", "retry", "ok_s", "s")]
    rows += [("retry", "retry", "ratio", "x"), ("retry-late", "retry", "ratio_actual_waits", "x")]
    rows += [("short-sleep", "sleep", "sleep_s", "s")]
    prefix, why = ensure_dbos(ctx)
    if prefix is None:
        return [Result(SECTION, ROWS[row], "dbos", None, unit, error=why) for row, _, _, unit in rows]
    got: dict[str, dict] = {}
    for figure in ("retry", "sleep"):
        db = str(ctx.scratch(f"dbos-{figure}") / "bench.sqlite")
        got[figure] = run_json([*prefix, figure, "--db", db, "--runs", "30"])
    notes = {
        "retry-time": "failed attempts are not recorded: retried in memory",
        "short-sleep": "DBOS.sleep(1) in a workflow",
    }
    return [
        result_from(got[figure], key, SECTION, ROWS[row], "dbos", unit=unit, note=notes.get(row, ""))
        for row, figure, key, unit in rows
    ]


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="durably-bench-"))
    try:
        out = claims_with_waiting(str(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"claim + execute 500 runs,      0 waiting: {out['rate_none']:7.0f} runs/s")
    print(f"claim + execute 500 runs, 10,000 waiting: {out['rate_waiting']:7.0f} runs/s")
    print(f"ratio, with 10,000 waiting / with none: {out['ratio']:.2f}x")
    print(f"idle poll, 10,000 waiting: {out['idle_poll_cpu_pct']:.2f}% of a core")


if __name__ == "__main__":
    main()
