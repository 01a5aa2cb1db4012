"""A probe of a (damaged) root: every reader and writer entry point, one outcome each.

Run in a child forked by the fork server (``apps.probe:exercise``), which the test
kills when it hangs, so a hang (a FIFO opened for reading) fails the test instead of the
suite. The root is made by ``apps.logged_steps.make``; the outcomes go to a JSON file.
"""

from __future__ import annotations

import json
import resource
import time
import traceback
from pathlib import Path
from typing import Any

import durably
from durably._doctor import Doctor

from .logged_steps import StepsIn, make


def _outcome(name: str, fn: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        value = fn()
    except durably.DurablyError as exc:
        return {
            "action": name,
            "error": type(exc).__name__,
            "message": str(exc),
            "clear": True,
            "seconds": time.monotonic() - started,
        }
    except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
        return {
            "action": name,
            "error": type(exc).__name__,
            "message": str(exc)[:500],
            "clear": False,
            "traceback": traceback.format_exc()[-2000:],
            "seconds": time.monotonic() - started,
        }
    return {"action": name, "value": value, "seconds": time.monotonic() - started}


def exercise(root: str, out: str, ids: list[str], rlimit_mb: int = 0) -> None:
    """Every reader and writer entry point over a (damaged) root; one outcome each.

    With ``rlimit_mb``, the address space is capped first: reading a huge file whole
    then fails with MemoryError instead of swapping the machine.
    """
    if rlimit_mb:
        limit = rlimit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    d = make(root, fsync=False)
    handle = d.get_job("logged-steps")
    assert handle is not None
    outcomes = [_outcome("get_runs", lambda: sorted(r.id for r in d.get_runs()))]
    for run_id in ids:
        outcomes.append(
            _outcome(f"get_run {run_id}", lambda r=run_id: (x := d.get_run(r)) and str(x.status.value))
        )
        outcomes.append(_outcome(f"get_steps {run_id}", lambda r=run_id: len(d.get_steps(r))))
        outcomes.append(_outcome(f"get_logs {run_id}", lambda r=run_id: len(d.get_logs(r))))
    outcomes.append(
        _outcome(
            "doctor",
            lambda: sorted(  # before any writer repairs things
                (p.kind, p.path) for p in Doctor(root).check()
            ),
        )
    )
    outcomes.append(
        _outcome(
            "trigger same key",
            lambda: (
                handle.trigger(
                    StepsIn(steps=1), idempotency_key="k2", concurrency_key="c2", coalesce="skip"
                ).disposition
            ),
        )
    )
    outcomes.append(
        _outcome(
            "trigger new key", lambda: handle.trigger(StepsIn(steps=1), idempotency_key="fresh").disposition
        )
    )
    outcomes.append(_outcome("process_until_idle", d.process_until_idle))
    cursor: dict[str, str] = {}

    def changes() -> int:
        _, cursor["c"] = d.changes(None)
        handle.trigger(StepsIn(steps=0))
        found, cursor["c"] = d.changes(cursor["c"])
        return -1 if found is None else len(found)

    outcomes.append(_outcome("changes", changes))
    outcomes.append(
        _outcome("get_runs after", lambda: sorted((r.id, str(r.status.value)) for r in d.get_runs()))
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(out).write_text(json.dumps({"outcomes": outcomes, "maxrss_kb": rss}))
