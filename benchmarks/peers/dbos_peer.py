"""DBOS peer for the durably benchmarks (run by benchmarks/run.py in its own venv).

Usage: python dbos_peer.py FIGURE --db PATH [--mode default|wal-normal] [sizes...]

FIGURE is one of: step, trigger, e2e, replay-setup, replay, retry, sleep. Prints one JSON object
on stdout. The system database is SQLite; ``default`` is DBOS's own setting (rollback
journal, synchronous=FULL: power-loss safe), ``wal-normal`` sets journal_mode=WAL and
synchronous=NORMAL on every connection (process-crash safe).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, DBOSConfig
from sqlalchemy import event

QUEUE = "bench"
STATE = {"kill_at": None, "flag": None, "t_entered": None}


def make_engine(url: str, mode: str) -> sa.Engine | None:
    if mode == "default":
        return None
    engine = sa.create_engine(url)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = "IMMEDIATE"
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    return engine


def config(url: str, mode: str) -> DBOSConfig:
    cfg: DBOSConfig = {
        "name": "durably-bench",
        "system_database_url": url,
        "log_level": "WARNING",
        "application_version": "bench-1",
        "executor_id": "local",
    }
    engine = make_engine(url, mode)
    if engine is not None:
        cfg["system_database_engine"] = engine
    return cfg


@DBOS.step()
def trivial(i: int) -> int:
    return i


@DBOS.step()
def sentinel(i: int) -> int:
    # Step N+1 of the replay job: SIGKILL ourselves the first time, timestamp on resume.
    if STATE["kill_at"] is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    STATE["t_entered"] = time.perf_counter()
    return i


@DBOS.workflow()
def steps_wf(n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        trivial(i)
    return (time.perf_counter() - t0) / n


@DBOS.workflow()
def replay_wf(n: int) -> int:
    for i in range(n):
        trivial(i)
    sentinel(n)
    return n


ATTEMPTS: dict[int, int] = {}


@DBOS.step()
def ok_step(i: int) -> int:
    return i


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.01, backoff_rate=2.0)
def flaky_step(i: int) -> int:
    ATTEMPTS[i] = ATTEMPTS.get(i, 0) + 1
    if ATTEMPTS[i] < 3:
        raise ConnectionError("try again")
    return i


@DBOS.workflow()
def retry_wf(n: int) -> dict:
    ok, flaky = [], []
    for i in range(n):
        t = time.perf_counter()
        ok_step(i)
        ok.append(time.perf_counter() - t)
        t = time.perf_counter()
        flaky_step(i)
        flaky.append(time.perf_counter() - t - 0.03)
    return {"ok": ok, "flaky": flaky}


@DBOS.workflow()
def sleep_wf(seconds: float) -> float:
    t0 = time.time()
    DBOS.sleep(seconds)
    return stamp_step() - t0 - seconds


@DBOS.step()
def stamp_step() -> float:
    return time.time()


def _wait_lateness(path: str, delay: float, n: int) -> float:
    """The same floor as durably's ``bench_waiting._wait_lateness``."""
    import statistics  # noqa: PLC0415
    import threading  # noqa: PLC0415

    ev = threading.Event()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def once(wait: float) -> float:
        t = time.perf_counter()
        if wait:
            ev.wait(wait)
        os.write(fd, b"x" * 200)
        os.fdatasync(fd)
        return time.perf_counter() - t - wait

    try:
        # Paired and interleaved: the disk's load drifts; each pair sees the same.
        pairs = [(once(delay) + once(2 * delay)) - (once(0) + once(0)) for _ in range(2 * n)]
        return max(0.0, statistics.median(pairs))
    finally:
        os.close(fd)


def fig_retry(a: argparse.Namespace) -> dict:
    import statistics  # noqa: PLC0415

    launch(a.url, a.mode)
    got = retry_wf(a.runs)
    DBOS.destroy()
    ok, flaky = statistics.median(got["ok"]), statistics.median(got["flaky"])
    late = _wait_lateness(a.db + ".floor", 0.01, a.runs)
    return {"ok_s": ok, "flaky_s": flaky, "ratio": flaky / ok, "ratio_actual_waits": (flaky - late) / ok}


def fig_sleep(a: argparse.Namespace) -> dict:
    import statistics  # noqa: PLC0415

    launch(a.url, a.mode)
    late = [sleep_wf(1.0) for _ in range(5)]
    DBOS.destroy()
    return {"sleep_s": statistics.median(late)}


def launch(url: str, mode: str) -> None:
    DBOS(config=config(url, mode))
    DBOS.launch()
    DBOS.register_queue(QUEUE, polling_interval_sec=0.01)


def fig_step(a: argparse.Namespace) -> dict:
    launch(a.url, a.mode)
    steps_wf(50)  # warm up
    per_step = steps_wf(a.steps)
    DBOS.destroy()
    return {"step_s": per_step, "steps": a.steps}


def fig_trigger(a: argparse.Namespace) -> dict:
    launch(a.url, a.mode)  # create schema and queue, then leave: no worker while enqueuing
    DBOS.destroy()
    client = DBOSClient(system_database_url=a.url, system_database_engine=make_engine(a.url, a.mode))
    opts = {"workflow_name": steps_wf.__qualname__, "queue_name": QUEUE}
    for _ in range(20):
        client.enqueue(opts, 1)  # warm up
    t0 = time.perf_counter()
    for _ in range(a.count):
        client.enqueue(opts, 1)
    dt = time.perf_counter() - t0
    client.destroy()
    return {"trigger_per_s": a.count / dt, "count": a.count}


def fig_e2e(a: argparse.Namespace) -> dict:
    launch(a.url, a.mode)
    t0 = time.perf_counter()
    handles = [DBOS.enqueue_workflow(QUEUE, steps_wf, a.steps) for _ in range(a.runs)]
    for h in handles:
        h.get_result()
    dt = time.perf_counter() - t0
    DBOS.destroy()
    return {"e2e_s": dt, "runs": a.runs, "steps": a.steps}


def fig_replay_setup(a: argparse.Namespace) -> dict:
    STATE["kill_at"] = a.steps
    launch(a.url, a.mode)
    replay_wf(a.steps)  # never returns: sentinel kills the process
    return {"error": "sentinel did not kill the process"}


def fig_replay(a: argparse.Namespace) -> dict:
    # Fresh process: DBOS.launch() recovers the PENDING workflow of executor "local".
    t0 = time.perf_counter()
    launch(a.url, a.mode)
    deadline = time.monotonic() + 120
    while STATE["t_entered"] is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    if STATE["t_entered"] is None:
        return {"error": "step N+1 not reached"}
    dt = STATE["t_entered"] - t0
    DBOS.destroy()
    return {"replay_s": dt, "steps": a.steps}


FIGURES = {
    "step": fig_step,
    "trigger": fig_trigger,
    "e2e": fig_e2e,
    "replay-setup": fig_replay_setup,
    "replay": fig_replay,
    "retry": fig_retry,
    "sleep": fig_sleep,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("figure", choices=sorted(FIGURES))
    p.add_argument("--db", required=True, help="path of the SQLite system database")
    p.add_argument("--mode", choices=["default", "wal-normal"], default="default")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--runs", type=int, default=500)
    a = p.parse_args()
    a.url = f"sqlite:///{a.db}"
    logging.disable(logging.WARNING)
    try:
        out = FIGURES[a.figure](a)
    except Exception as exc:  # noqa: BLE001 -- report as JSON, never hang the orchestrator
        out = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    os._exit(0)  # DBOS leaves non-daemon threads behind


if __name__ == "__main__":
    main()
