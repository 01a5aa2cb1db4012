"""Keep a worker busy with varied jobs, so `durably monitor` has something to show.

    python examples/live_demo.py [ROOT]        # default root: $DURABLY_ROOT or .durably
    durably monitor [ROOT]                     # in another terminal

It triggers a run every half second or so, picked from five jobs: fast ones, slow ones,
ones that fail with a traceback, one that reports a lot of progress and one that logs at
every level, with labels (`tenant`, `env`). A background worker executes them, up to three
at a time. Ctrl-C stops triggering and lets the runs in flight finish.

For the retrigger action, start the monitor with this file as its app:

    durably monitor ROOT --app examples.live_demo:durably

`--runs N` triggers N runs, waits until they are done and exits (CI runs it that way).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

from pydantic import BaseModel

from durably import Durably, Step, define_job

# --- jobs ------------------------------------------------------------------------------


class Numbers(BaseModel):
    values: list[int]


class Report(BaseModel):
    pages: int
    seconds_per_page: float = 0.6


class Import(BaseModel):
    source: str
    rows: int
    fail_at: int | None = None


class Images(BaseModel):
    bucket: str
    count: int


class Sync(BaseModel):
    accounts: int


def pause(step: Step, seconds: float) -> None:
    """Sleep, waking at once if the run is cancelled."""
    step.signal.wait(seconds)
    step.raise_if_aborted()


@define_job(name="quick-math", input=Numbers)
def quick_math(step: Step, payload: Numbers) -> dict[str, int]:
    """Fast: three tiny steps."""
    total = step.run("sum", lambda: sum(payload.values))
    biggest = step.run("max", lambda: max(payload.values))
    count = step.run("count", lambda: len(payload.values))
    return {"sum": total, "max": biggest, "count": count}


@define_job(name="slow-report", input=Report)
def slow_report(step: Step, payload: Report) -> dict[str, int]:
    """Slow: one step per page, with progress."""
    for page in range(1, payload.pages + 1):
        step.run(f"render-page-{page}", lambda: pause(step, payload.seconds_per_page))
        step.progress(page, payload.pages, f"page {page} of {payload.pages}")
    return {"pages": payload.pages}


class ImportFailedError(RuntimeError):
    """The fake upstream rejected a row."""


def _import_row(source: str, row: int, fail_at: int | None) -> int:
    if row == fail_at:
        raise ImportFailedError(f"{source}: row {row} has an invalid date '2026-02-30'")
    return row


@define_job(name="flaky-import", input=Import)
def flaky_import(step: Step, payload: Import) -> dict[str, int]:
    """Fails part of the time, at a row chosen by the trigger, with a traceback."""
    for row in range(payload.rows):
        step.run(f"row-{row}", lambda row=row: _import_row(payload.source, row, payload.fail_at))
        step.progress(row + 1, payload.rows, f"importing {payload.source}")
        pause(step, 0.15)
    return {"rows": payload.rows}


@define_job(name="resize-images", input=Images)
def resize_images(step: Step, payload: Images) -> dict[str, int]:
    """Progress-heavy: many short steps, progress after each."""
    for i in range(payload.count):
        step.run(f"resize-{i:04d}", lambda i=i: {"image": f"IMG_{i:04d}.jpg", "px": 1024})
        step.progress(i + 1, payload.count, f"resizing IMG_{i:04d}.jpg")
        pause(step, 0.05)
    return {"resized": payload.count}


@define_job(name="chatty-sync", input=Sync)
def chatty_sync(step: Step, payload: Sync) -> dict[str, int]:
    """Logs at every level while it works."""
    skipped = 0
    step.log.info("starting sync", data={"accounts": payload.accounts})
    for account in range(payload.accounts):
        step.run(f"sync-account-{account}", lambda: pause(step, 0.2))
        if account % 4 == 3:
            skipped += 1
            step.log.warn(f"account {account} has no email; skipped", data={"account": account})
        else:
            step.log.info(f"synced account {account}")
    if skipped > 1:
        step.log.error(f"{skipped} accounts need attention")
    return {"synced": payload.accounts - skipped, "skipped": skipped}


JOBS = [quick_math, slow_report, flaky_import, resize_images, chatty_sync]

durably = Durably(jobs=JOBS, max_concurrent_runs=3)
"""Uses $DURABLY_ROOT (else `.durably`); `main()` sets it from the command line first."""


# --- the trigger loop ------------------------------------------------------------------


def trigger_one(app: Durably, rng: random.Random) -> str:
    """Trigger a random job with random input and labels; return the run id."""
    labels = {"tenant": rng.choice(["acme", "globex", "initech"]), "env": rng.choice(["prod", "staging"])}
    kind = rng.choices(["quick", "slow", "flaky", "images", "chatty"], weights=[4, 1, 2, 2, 2])[0]
    if kind == "quick":
        handle, payload = app.jobs["quick-math"], {"values": [rng.randint(1, 99) for _ in range(5)]}
    elif kind == "slow":
        handle, payload = app.jobs["slow-report"], {"pages": rng.randint(4, 12)}
    elif kind == "flaky":
        rows = rng.randint(5, 15)
        fail_at = rng.randrange(rows) if rng.random() < 0.5 else None
        handle = app.jobs["flaky-import"]
        payload = {
            "source": rng.choice(["crm.csv", "ledger.csv", "orders.csv"]),
            "rows": rows,
            "fail_at": fail_at,
        }
    elif kind == "images":
        handle, payload = app.jobs["resize-images"], {"bucket": "photos", "count": rng.randint(20, 80)}
    else:
        handle, payload = app.jobs["chatty-sync"], {"accounts": rng.randint(4, 12)}
    return handle.trigger(payload, labels=labels).id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep a worker busy so the monitor has something to show.")
    parser.add_argument("root", nargs="?", help="root directory (default $DURABLY_ROOT or .durably)")
    parser.add_argument("--runs", type=int, default=None, help="trigger this many runs, wait, exit")
    parser.add_argument("--interval", type=float, default=1.0, help="mean seconds between triggers")
    parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable demos)")
    args = parser.parse_args(argv)
    root = args.root or os.environ.get("DURABLY_ROOT") or ".durably"
    rng = random.Random(args.seed)
    app = Durably(root, jobs=JOBS, max_concurrent_runs=3, polling_interval=0.2)
    print(f"live demo on {os.path.abspath(root)}; watch it with:  durably monitor {root}")
    triggered = 0
    with app:
        app.start()
        try:
            while args.runs is None or triggered < args.runs:
                run_id = trigger_one(app, rng)
                triggered += 1
                print(f"triggered {run_id}", flush=True)
                time.sleep(rng.uniform(0.5, 1.5) * args.interval)
            while app.get_runs(status=["pending", "leased"], limit=1):
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("stopping: letting the runs in flight finish (Ctrl-C again to quit now)")
    print(f"triggered {triggered} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
