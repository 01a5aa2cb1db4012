"""Child-process side of the gap tests (``test_rel_gaps_*.py``).

Functions here run in a child: forked by the fork server (``crashapps.zygote``, which
imports this module by name when ``tests/reliability`` is on ``PYTHONPATH``), or started
as ``python gapapp.py FUNCTION JSON-KWARGS`` (under ``strace``, which cannot attach to a
forked child without root). Step executions are logged with ``O_APPEND|O_SYNC`` lines in
``WORKDIR/exec.log`` (``who run_id k``), so they survive a SIGKILL.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import durably
from durably import Step, define_job
from durably._doctor import Doctor

WORKDIR = ""  # set by each child: executions are logged there
WHO = "?"
GATE_WHO = ""  # the worker whose step 1 waits for WORKDIR/gate (hold=True runs only)


class GapIn(BaseModel):
    steps: int = 3
    secret: str = ""
    hold: bool = False


def log_line(name: str, line: str) -> None:
    fd = os.open(os.path.join(WORKDIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_SYNC, 0o600)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def value_of(k: int, secret: str) -> dict[str, Any]:
    return {"k": k, "secret": secret}


def _gap_job(step: Step, payload: GapIn) -> dict[str, Any]:
    total = 0
    for k in range(payload.steps):
        def body(k: int = k) -> dict[str, Any]:
            if WORKDIR:
                log_line("exec.log", f"{WHO} {step.run_id} {k}")
                if payload.hold and k == 1 and WHO == GATE_WHO:
                    log_line("exec.log", f"{WHO} blocked {step.run_id}")
                    deadline = time.monotonic() + 60
                    while not os.path.exists(os.path.join(WORKDIR, "gate")) \
                            and time.monotonic() < deadline:
                        time.sleep(0.005)
            return value_of(k, payload.secret)

        value = step.run(f"s{k}", body)
        total += value["k"]
    return {"sum": total}


GAP = define_job(name="gap-steps", input=GapIn, run=_gap_job)


def expected(steps: int) -> dict[str, Any]:
    return {"sum": sum(range(steps))}


def _spawner_job(step: Step, payload: GapIn) -> str:
    def body() -> str:
        if WHO == "dies":
            # A long-lived child of the job, spawned the usual way, inheriting every
            # descriptor that is not close-on-exec (close_fds=False).
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                     close_fds=False, start_new_session=True)
            Path(WORKDIR, "grandchild").write_text(str(child.pid))
            os.kill(os.getpid(), signal.SIGKILL)
        return WHO

    return step.run("spawn", body)


SPAWNER = define_job(name="gap-spawner", input=GapIn, output=str, run=_spawner_job)
JOBS = [GAP, SPAWNER]


def make(root: str, **options: Any) -> durably.Durably:
    options.setdefault("fsync", True)
    options.setdefault("polling_interval", 0.02)
    options.setdefault("preserve_steps", True)
    return durably.Durably(root, jobs=JOBS, **options)


def executions(workdir: str | Path) -> list[tuple[str, str, int]]:
    """(who, run id, k) of every step execution logged in ``workdir``."""
    path = Path(workdir, "exec.log")
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                out.append((parts[0], parts[1], int(parts[2])))
    return out


# -- workers ---------------------------------------------------------------------------


def worker(root: str, workdir: str, who: str, stop: str, lease: float = 30.0,
           renew: float | None = None, host: str | None = None, gate_who: str = "") -> None:
    """Process runs until ``stop`` exists and nothing is claimable; record worker errors.

    ``host``: pose as a worker on another host (its own host name, and record locks no
    other process of this machine sees): only the files keep the two apart.
    """
    global WORKDIR, WHO, GATE_WHO
    WORKDIR, WHO, GATE_WHO = workdir, who, gate_who
    if host is not None:
        from crashapps.jobs import pose_as_other_host  # noqa: PLC0415

        pose_as_other_host(host)
    d = make(root, lease_duration=lease, lease_renew_interval=renew or lease / 5)
    errors_path = Path(workdir, f"errors-{who}.log")

    def on_error(ev: Any) -> None:
        with errors_path.open("a") as f:
            f.write(f"{ev.context}\t{ev.error}\n")

    d.on("worker:error", on_error)
    claimed = 0
    while True:
        try:
            ran = d.process_one()
        except durably.DurablyError as exc:  # a fault met by the claim or the end: retry
            on_error(type("Ev", (), {"context": "process_one", "error": str(exc)})())
            ran = False
        claimed += ran
        if not ran:
            if os.path.exists(stop) and not d.process_until_idle():
                break
            time.sleep(0.005)
    Path(workdir, f"claimed-{who}").write_text(str(claimed))


def die_with_subprocess(root: str, workdir: str) -> None:
    """Claim a run (lease one hour); its step spawns a long-lived child, then we die."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, "dies"
    make(root, lease_duration=3600.0).process_until_idle()


# -- probes of a damaged root ------------------------------------------------------------


def _outcome(name: str, fn: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        value = fn()
    except durably.DurablyError as exc:
        return {"action": name, "error": type(exc).__name__, "message": str(exc),
                "clear": True, "seconds": time.monotonic() - started}
    except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
        return {"action": name, "error": type(exc).__name__, "message": str(exc)[:500],
                "clear": False, "traceback": traceback.format_exc()[-2000:],
                "seconds": time.monotonic() - started}
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
    handle = d.get_job("gap-steps")
    assert handle is not None
    outcomes = [_outcome("get_runs", lambda: sorted(r.id for r in d.get_runs()))]
    for run_id in ids:
        outcomes.append(_outcome(f"get_run {run_id}", lambda r=run_id: (
            (x := d.get_run(r)) and str(x.status.value))))
        outcomes.append(_outcome(f"get_steps {run_id}", lambda r=run_id: len(d.get_steps(r))))
        outcomes.append(_outcome(f"get_logs {run_id}", lambda r=run_id: len(d.get_logs(r))))
    outcomes.append(_outcome("doctor", lambda: sorted(  # before any writer repairs things
        (p.kind, p.path) for p in Doctor(root).check())))
    outcomes.append(_outcome("trigger same key", lambda: handle.trigger(
        GapIn(steps=1), idempotency_key="k2", concurrency_key="c2", coalesce="skip").disposition))
    outcomes.append(_outcome("trigger new key", lambda: handle.trigger(
        GapIn(steps=1), idempotency_key="fresh").disposition))
    outcomes.append(_outcome("process_until_idle", d.process_until_idle))
    cursor: dict[str, str] = {}

    def changes() -> int:
        _, cursor["c"] = d.changes(None)
        handle.trigger(GapIn(steps=0))
        found, cursor["c"] = d.changes(cursor["c"])
        return -1 if found is None else len(found)

    outcomes.append(_outcome("changes", changes))
    outcomes.append(_outcome("get_runs after", lambda: sorted(
        (r.id, str(r.status.value)) for r in d.get_runs())))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(out).write_text(json.dumps({"outcomes": outcomes, "maxrss_kb": rss}))




def keyed_workload(root: str, workdir: str) -> None:
    """The crash sweeps' workload (``crashapps.jobs``): a keyed trigger of a 3-step run,
    then its execution, in this one process (run under ``strace`` by the test)."""
    from crashapps import jobs  # noqa: PLC0415

    jobs.WORKDIR, jobs.WHO = workdir, "traced"
    d = jobs.make(root, preserve_steps=True)
    handle = d.get_job("steps")
    assert handle is not None
    handle.trigger(jobs.Tag(tag="t", steps=3), idempotency_key="idem", concurrency_key="conc")
    d.process_until_idle()


def contend(root: str, workdir: str, who: str, rounds: int) -> None:
    """Trigger keyed runs and execute them, racing the other contenders: every trigger
    takes the key's trigger lock, every claim a run lock and the key's execution lock.
    The jobs (``crashapps.jobs.KEYED``) log the start and end of each run per key."""
    from crashapps import jobs  # noqa: PLC0415

    jobs.WORKDIR, jobs.WHO = workdir, who
    d = durably.Durably(root, jobs=jobs.ALL_JOBS, fsync=False, polling_interval=0.01)
    for r in range(rounds):
        key = f"k{r % 3}"
        handle = d.get_job(f"keyed-{r % 4}")
        assert handle is not None
        handle.trigger(jobs.KeyIn(key=key, n=r), idempotency_key=f"{who}-{r % 7}",
                       concurrency_key=key, coalesce="skip")
        d.process_one()
    while d.process_one():
        pass


def main(argv: list[str]) -> None:
    """``python gapapp.py FUNCTION '{"kwarg": ...}'``."""
    fn = globals()[argv[0]]
    fn(**json.loads(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
