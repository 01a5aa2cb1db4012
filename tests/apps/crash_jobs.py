"""Jobs and child-process entry points of the process-level tests: workers killed at
chosen points and at every file-system call (test_crash), racers and stale owners
(test_races), one child per invariant (test_invariants), lock contention
(reliability/test_rel_locks) and the workload ``strace`` kills from outside
(reliability/test_rel_crash).

Children are forked by ``zygote`` and run one of the functions below; step bodies record
each execution with an O_APPEND|O_SYNC line (``common.append_line``), so the record
survives the SIGKILL that may follow. Module globals (``WORKDIR``, ``WHO``, ``KILL``)
are set by the child function before the worker starts; they are per process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

from helpers import run_dir_of
from pydantic import BaseModel

import durably
from durably import Retry, Step, define_job
from durably._durably import runtime_of
from durably.testing import ManualClock

from . import killhook
from .common import append_line, pose_as_other_host, wait_for_file

WORKDIR = ""  # set by each child; empty in the test process: executions are not logged
WHO = "?"
KILL: dict[str, Any] = {}
PHASES = ("pre", "in", "commit")


class Tag(BaseModel):
    """Input of the crash jobs (the work directory is a per-process global)."""

    tag: str = ""
    steps: int = 20


def exec_log() -> str:
    return os.path.join(WORKDIR, "exec.log")


def value_of(k: int) -> dict[str, Any]:
    """The value step ``k`` returns (a checkable function of k)."""
    return {"k": k, "sq": k * k, "word": f"step-{k:02d}"}


def _maybe_kill(k: int, phase: str) -> None:
    """SIGKILL this process at (or, if it was overshot by replay, past) the kill point."""
    if not KILL:
        return
    point = (KILL["k"], PHASES.index(KILL["phase"]))
    if (k, PHASES.index(phase)) >= point and phase != "commit":
        os.kill(os.getpid(), signal.SIGKILL)
    if phase == "commit" and (k, 2) >= point:
        killhook.arm(int(KILL["j"]))  # die at the j-th file-system call from here


def _body(k: int) -> dict[str, Any]:
    _maybe_kill(k, "pre")
    if WORKDIR:
        append_line(exec_log(), f"{WHO} {k}")
    _maybe_kill(k, "in")
    value = value_of(k)
    _maybe_kill(k, "commit")
    return value


def _steps_job(step: Step, payload: Tag) -> dict[str, Any]:
    total = 0
    for k in range(payload.steps):
        value = step.run(f"step-{k:02d}", partial(_body, k))
        assert value == value_of(k), (k, value)
        total += value["sq"]
    return {"total": total, "count": payload.steps}


STEPS = define_job(name="steps", input=Tag, run=_steps_job)


def expected_output(steps: int) -> dict[str, Any]:
    return {"total": sum(k * k for k in range(steps)), "count": steps}


def make(root: str, **options: Any) -> durably.Durably:
    options.setdefault("fsync", True)
    options.setdefault("polling_interval", 0.05)
    return durably.Durably(root, jobs=ALL_JOBS, **options)


# -- crash test: a worker killed at a chosen point -------------------------------------


def crash_worker(root: str, workdir: str, who: str, kill: dict[str, Any] | None) -> None:
    """Process runs until idle; SIGKILL at the kill point ``{"k", "phase", "j"}``."""
    global WORKDIR, WHO, KILL
    WORKDIR, WHO, KILL = workdir, who, dict(kill or {})
    d = make(root, preserve_steps=True)
    d.process_until_idle()
    killhook.disarm()


# -- a run that waits, for the syscall sweep ----------------------------------------------

WAITS_T0 = datetime(2026, 1, 1, tzinfo=UTC)
"""The time of the ``waits@<hours>`` operations: ``WAITS_T0`` plus that many hours."""
WAITS_STEPS = ("w0", "nap", "flaky", "go", "child", "w1")
WAITS_OUTPUT = {"flaky": 7, "got": {"by": "sweep"}, "child": expected_output(1)}


def waits_log() -> str:
    return os.path.join(WORKDIR, "waits.log")


def _waits_body(name: str) -> str:
    if WORKDIR:
        append_line(waits_log(), f"{WHO} {name}")
    return name


def _waits_flaky() -> int:
    """Fails the first time it runs in this root (the first attempt), then returns 7."""
    first = not os.path.exists(waits_log()) or " flaky" not in Path(waits_log()).read_text()
    _waits_body("flaky")
    if first:
        raise RuntimeError("the first attempt fails")
    return 7


def _waits_job(step: Step, payload: Tag) -> dict[str, Any]:
    """A step, a sleep, a step retried after a wait, a signal, a child run, a step."""
    step.run("w0", partial(_waits_body, "w0"))
    step.sleep("nap", 3600)
    flaky = step.run("flaky", _waits_flaky, retry=Retry(2, delay=60, jitter=False))
    got = step.wait_for_signal("go")
    child = step.invoke("child", STEPS, Tag(tag="kid", steps=1))
    step.run("w1", partial(_waits_body, "w1"))
    return {"flaky": flaky, "got": got, "child": child}


WAITS = define_job(name="waits", input=Tag, run=_waits_job)


def _waits_op(root: str, op: str) -> None:
    """``waits-trigger``, ``waits-signal``, or ``waits@<hours>``: one ``process_one`` at
    ``WAITS_T0`` plus that many hours (a ManualClock: every wait releases the worker)."""
    hours = float(op.split("@")[1]) if "@" in op else 0.0
    d = make(root, preserve_steps=True, clock=ManualClock(WAITS_T0 + timedelta(hours=hours)))
    handle = d.get_job("waits")
    assert handle is not None
    if op == "waits-trigger":
        handle.trigger(Tag(tag="w"))
    elif op == "waits-signal":
        run = d.get_runs(job_name="waits")[0]
        d.signal(run.id, "go", WAITS_OUTPUT["got"])
    else:
        d.process_one()


def sweep_check_waits(root: str, workdir: str, result: str) -> None:
    """After a crash of an operation of the run that waits: the root reads; a worker a
    day later (the signal sent, if it was not) and then two days later ends it, with
    every completed step completed once and not run again, and one child."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, "check"
    clock = ManualClock(WAITS_T0 + timedelta(days=1))
    d = make(root, preserve_steps=True, fsync=False, clock=clock)
    for run in d.get_runs():
        again = d.get_run(run.id)
        assert again is not None
        assert again.status == run.status
        d.get_steps(run.id)
        d.get_logs(run.id)
    (parent,) = d.get_runs(job_name="waits")
    done_before = {(r.id, s.name) for r in d.get_runs() for s in d.get_steps(r.id) if s.status == "completed"}
    started = {s.name for s in d.get_steps(parent.id)}  # a wait that started has its end fixed
    failed = any((s.name, s.status) == ("flaky", "failed") for s in d.get_steps(parent.id))
    lines_before = len(_lines(waits_log())), len(_exec_lines())
    with contextlib.suppress(durably.ConflictError):  # delivered before the crash, or ended
        d.signal(parent.id, "go", WAITS_OUTPUT["got"])
    for _ in range(4):  # each wait the crash made start again is over two days later
        for _ in range(2):  # the first idle sweeps the waits with no time
            d.process_until_idle()
        if all(r.is_terminal for r in d.get_runs()):
            break
        again = d.get_run(parent.id)
        assert again is not None
        waits_for = (again.waiting_for or " ").split(" ")[1]
        assert not (waits_for in started and again.wake_at and again.wake_at > clock.now()), (
            f"the wait of {waits_for} started before the crash, and started again: {again.wake_at}"
        )
        started = set()
        clock.advance(timedelta(days=2))
    runs = d.get_runs()
    assert all(r.is_terminal for r in runs), [(r.id, r.status, r.waiting_for) for r in runs]
    ended = d.get_run(parent.id)
    assert ended is not None
    assert (ended.status, ended.output) == ("completed", WAITS_OUTPUT), (
        ended.status,
        ended.output,
        ended.error,
    )
    steps = [s.name for s in d.get_steps(parent.id) if s.status == "completed"]
    assert sorted(steps) == sorted(WAITS_STEPS), steps
    attempts = [(s.status, s.attempt) for s in d.get_steps(parent.id) if s.name == "flaky"]
    assert not failed or attempts[-1] == ("completed", 2), f"the failed attempt was forgotten: {attempts}"
    children = d.get_runs(parent_id=parent.id)
    assert [c.status for c in children] == ["completed"], children
    rerun = {(parent.id, line.split()[1]) for line in _lines(waits_log())[lines_before[0] :]}
    rerun |= {
        (children[0].id, f"step-{int(line.split()[1]):02d}") for line in _exec_lines()[lines_before[1] :]
    }
    assert not rerun & done_before, f"completed steps ran again: {sorted(rerun & done_before)}"
    Path(result).write_text(json.dumps({"status": str(ended.status.value)}))


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []


# -- syscall sweep: one operation killed at its N-th file-system call ------------------


def sweep_op(root: str, workdir: str, op: str, kill_at: int, result: str) -> None:
    """Do ``op`` with the kill hook armed at ``kill_at`` (0: count calls only)."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, f"op-{op}-{kill_at}"
    if op.startswith("waits"):
        calls: list[str] = []
        killhook.arm(kill_at, trace=calls)
        _waits_op(root, op)
        Path(result).write_text(json.dumps({"count": killhook.disarm(), "trace": calls}))
        return
    d = make(root, preserve_steps=True)
    handle = d.get_job("steps")
    assert handle is not None
    run_id_file = Path(workdir) / "run_id"
    run_id = run_id_file.read_text() if run_id_file.exists() else ""
    trace: list[str] = []
    killhook.arm(kill_at, trace=trace)
    if op == "trigger":
        run_id = handle.trigger(Tag(tag="t", steps=3), idempotency_key="idem", concurrency_key="conc").id
    elif op == "run":
        d.process_one()
    elif op == "cancel":
        d.cancel(run_id)
    elif op == "delete":
        d.delete_run(run_id)
    elif op == "resume":
        d.resume(run_id)
    elif op == "batch":
        handle.batch_trigger([Tag(tag=f"b{i}", steps=1) for i in range(3)])
    elif op == "init":
        runtime_of(d).store.ensure_ready()
    elif op == "kill-in-step":  # setup only: leave a run leased by a dead owner
        killhook.disarm()
        global KILL  # noqa: PLW0603
        KILL = {"k": 1, "phase": "in", "j": 0}
        d.process_one()
    else:
        raise ValueError(op)
    count = killhook.disarm()
    if op == "trigger":
        run_id_file.write_text(run_id)
    Path(result).write_text(json.dumps({"count": count, "trace": trace}))


def sweep_check(root: str, workdir: str, result: str) -> None:
    """After a crash: the root reads, a worker finishes the run, one run per key."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, "check"
    d = make(root, preserve_steps=True, fsync=False)  # durability is not what is checked
    handle = d.get_job("steps")
    assert handle is not None
    runs = d.get_runs()
    for run in runs:
        again = d.get_run(run.id)
        assert again is not None
        assert again.status == run.status
        d.get_steps(run.id)
        d.get_logs(run.id)
    keyed = [r for r in runs if r.idempotency_key == "idem"]
    assert len(keyed) <= 1, f"{len(keyed)} runs hold the idempotency key before repair"
    before = keyed[0] if keyed else None
    done_before = set()
    if before is not None:
        done_before = {s.name for s in d.get_steps(before.id) if s.status == "completed"}
    lines_before = _exec_lines()
    steps_before = d.get_steps(before.id) if before is not None else []
    res = handle.trigger(
        Tag(tag="t", steps=3), idempotency_key="idem", concurrency_key="conc", coalesce="skip"
    )
    if before is None:
        assert res.disposition == "created", res.disposition
    else:
        assert (res.id, res.disposition) == (before.id, "idempotent"), (res.disposition, before)
    d.process_until_idle()
    runs = d.get_runs()
    keyed = [r for r in runs if r.idempotency_key == "idem"]
    assert len(keyed) == 1, f"{len(keyed)} runs hold the idempotency key after repair"
    run = keyed[0]
    assert run.status in ("completed", "cancelled"), run.status
    if run.status == "completed":
        assert run.output == expected_output(3), run.output
        steps = d.get_steps(run.id)
        done = [s.name for s in steps if s.status == "completed"]
        assert sorted(done) == ["step-00", "step-01", "step-02"], done
    rerun = {f"step-{int(line.split()[1]):02d}" for line in _exec_lines()[len(lines_before) :]}
    assert not rerun & done_before, f"completed steps ran again: {sorted(rerun & done_before)}"
    outcome = str(run.status.value)
    resumed = [r for r in runs if r.resumed_from is not None]
    assert len(resumed) <= 1, f"{len(resumed)} resumed runs"
    if resumed:  # a resume killed part-way left a whole new run: it replays and completes
        assert resumed[0].resumed_from == run.id
        assert (resumed[0].status, resumed[0].output) == ("completed", expected_output(3)), resumed[0]
        assert d.get_steps(run.id) == steps_before, "the resumed run's original changed"
        outcome = "resumed"
    Path(result).write_text(
        json.dumps(
            {
                "status": outcome,
                "queue": sorted(os.listdir(os.path.join(root, "queue"))),
                "disposition": res.disposition,
            }
        )
    )


def _exec_lines() -> list[str]:
    try:
        return Path(exec_log()).read_text().splitlines()
    except FileNotFoundError:
        return []


# -- races -------------------------------------------------------------------------------


def race_trigger(
    root: str,
    out: str,
    idem: str | None,
    conc: str | None,
    coalesce: Literal["skip"] | None,
    value: str,
    host: str | None = None,
    window: float = 0.0,
) -> None:
    """Trigger once (released together with the other racers); record the outcome."""
    if host is not None:
        pose_as_other_host(host)
    if window:
        _widen_key_window(window)
    d = make(root, fsync=False)
    handle = d.get_job("steps")
    assert handle is not None
    try:
        res = handle.trigger(
            Tag(tag=value, steps=1), idempotency_key=idem, concurrency_key=conc, coalesce=coalesce
        )
        outcome = {"id": res.id, "disposition": res.disposition, "tag": res.input["tag"]}
    except durably.DurablyError as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    Path(out).write_text(json.dumps(outcome))


def _widen_key_window(seconds: float) -> None:
    """Sleep right after publishing a key file: the window between a key and its run."""
    real = os.link

    def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real(src, dst, *args, **kwargs)
        if f"{os.sep}keys{os.sep}" in killhook.full_path(dst, kwargs.get("dst_dir_fd")):
            time.sleep(seconds)

    os.link = link


def _widen_claim_window(seconds: float) -> None:
    """Sleep right before publishing a claim (``s.<n>``): the window between a worker's
    checks and its claim."""
    real = os.link

    def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.basename(os.fspath(dst)).startswith("s."):
            time.sleep(seconds)
        real(src, dst, *args, **kwargs)

    os.link = link


class KeyIn(BaseModel):
    key: str
    n: int


def _keyed_job(step: Step, payload: KeyIn) -> str:
    def body() -> str:
        append_line(os.path.join(WORKDIR, "intervals.log"), f"start {payload.key} {payload.n} {WHO}")
        for _ in range(3):  # a little work, so that overlaps would have a window
            time.sleep(0.005)
        append_line(os.path.join(WORKDIR, "intervals.log"), f"end {payload.key} {payload.n} {WHO}")
        return f"{payload.key}-{payload.n}"

    return step.run("work", body)


KEYED = [define_job(name=f"keyed-{j}", input=KeyIn, output=str, run=_keyed_job) for j in range(4)]
"""Four jobs sharing concurrency keys: one pending run per (job, key), so several runs of
one key can wait at once, and at most one of them may execute at a time."""


def keyed_worker(
    root: str,
    workdir: str,
    who: str,
    expect: int,
    host: str | None = None,
    job_names: list[str] | None = None,
) -> None:
    """Process runs (of ``job_names`` only, if given) until ``expect`` runs are terminal."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, who
    if host is not None:
        pose_as_other_host(host)
        _widen_claim_window(0.05)
    chosen = [j for j in ALL_JOBS if job_names is None or j.name in job_names]
    d = durably.Durably(root, jobs=chosen, fsync=False, polling_interval=0.05)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if d.process_one():
            continue
        if len(d.get_runs(status=["completed", "failed", "cancelled"])) >= expect:
            return
        time.sleep(0.002)
    raise AssertionError("runs did not finish")


# -- fencing: a stale owner, paused past its lease, and a worker on "another host" -------


class FenceIn(BaseModel):
    steps: int = 4
    stop_step: int = 1
    stop_phase: str = "in"  # "in": inside the body; "commit": after the fence check; "end"


def _fence_job(step: Step, payload: FenceIn) -> dict[str, Any]:
    values = []
    for k in range(payload.steps):

        def body(k: int = k) -> str:
            append_line(exec_log(), f"{WHO} {k}")
            if WHO == "A" and k == payload.stop_step:
                if payload.stop_phase == "in":
                    os.kill(os.getpid(), signal.SIGSTOP)
                elif payload.stop_phase == "commit":
                    STOP["at"] = "write"  # the journal append of this step's checkpoint
            return f"{WHO}-{k}"

        try:
            values.append(step.run(f"s{k}", body))
        except BaseException as exc:
            append_line(os.path.join(WORKDIR, "raised.log"), f"{WHO} s{k} {type(exc).__name__}")
            raise
        if WHO == "A" and payload.stop_phase == "end" and k == payload.steps - 1:
            STOP["at"] = "link"  # the publish of the run's end
    return {"values": values, "by": WHO}


FENCE = define_job(name="fence", input=FenceIn, run=_fence_job)
STOP: dict[str, str] = {}


def _install_self_stop() -> None:
    """SIGSTOP this process on its next ``os.<STOP["at"]>`` call once armed."""
    for name in ("write", "link"):
        real = killhook.REAL[name]

        def hooked(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            if STOP.get("at") == _name:
                STOP.clear()
                append_line(os.path.join(WORKDIR, "stopped"), _name)
                os.kill(os.getpid(), signal.SIGSTOP)
            return _real(*args, **kwargs)

        setattr(os, name, hooked)


def fence_worker(root: str, workdir: str, who: str, host: str | None, run_id: str, lease: float) -> None:
    """Work on one run until it is terminal (or, for a stale owner, until it gives up)."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, who
    if host is not None:
        pose_as_other_host(host)
    _install_self_stop()
    d = make(root, lease_duration=lease, lease_renew_interval=lease / 5, preserve_steps=True)
    errors: list[str] = []
    d.on("worker:error", lambda e: errors.append(e.error))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if d.process_one() and who == "A":
            break
        run = d.get_run(run_id)
        if run is not None and run.is_terminal:
            break
        time.sleep(0.01)
    Path(workdir, f"errors-{who}.json").write_text(json.dumps(errors))


ALL_JOBS: list[durably.JobDefinition[Any, Any]] = [STEPS, *KEYED, FENCE, WAITS]


def exercise_root(root: str, umask: int) -> None:
    """Under ``umask``: trigger with keys, run, fail, cancel and delete runs (every kind
    of file and directory durably makes)."""
    os.umask(umask)
    d = make(root, fsync=False, preserve_steps=True)
    steps = d.get_job("steps")
    assert steps is not None
    done = steps.trigger(Tag(steps=2), idempotency_key="i", concurrency_key="c", labels={"secret": "x"})
    d.process_until_idle()
    gone = steps.trigger(Tag(steps=0), idempotency_key="gone").id
    d.process_until_idle()
    d.delete_run(gone)
    d.cancel(steps.trigger(Tag(steps=1), concurrency_key="c2").id)
    assert d.get_run(done.id) is not None


# -- invariants ----------------------------------------------------------------------------


class OrphanIn(BaseModel):
    """How the step of ``forker`` leaves a long-lived child behind."""

    how: Literal["fork", "subprocess"] = "fork"  # os.fork(), or Popen(close_fds=False)


def _leave_a_child_and_die(step: Step, payload: OrphanIn) -> str:
    def body() -> str:
        if WHO == "dies":
            if payload.how == "fork":
                pid = os.fork()
                if pid == 0:  # a long-lived child of the job (it inherits every fd)
                    time.sleep(60)
                    os._exit(0)
            else:  # spawned the usual way, inheriting every fd not close-on-exec
                pid = subprocess.Popen(
                    [sys.executable, "-c", "import time; time.sleep(120)"],
                    close_fds=False,
                    start_new_session=True,
                ).pid
            Path(WORKDIR, "grandchild").write_text(str(pid))
            os.kill(os.getpid(), signal.SIGKILL)
        return WHO

    return step.run("fork", body)


FORKER = define_job(name="forker", input=OrphanIn, output=str, run=_leave_a_child_and_die)


def die_holding_run(root: str, workdir: str) -> None:
    """Claim a run (lease 3600 s) whose step leaves a long-lived child, then die."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, "dies"
    make(root, lease_duration=3600.0).process_until_idle()


def read_forever(root: str, stop: str) -> None:
    """Call every read API in a loop until the file ``stop`` exists."""
    d = make(root)
    cursor = None
    while not os.path.exists(stop):
        for run in d.get_runs(limit=20):
            d.get_run(run.id)
            d.get_steps(run.id)
            d.get_logs(run.id)
        _, cursor = d.changes(cursor)


ALL_JOBS.append(FORKER)


def race_end(root: str, out: str, run_id: str, role: str) -> None:
    """Cancel the run, or try to execute it, released together with the other racers."""
    d = make(root, fsync=False)
    try:
        if role == "cancel":
            d.cancel(run_id)
            outcome = {"role": role, "ok": True}
        else:
            outcome = {"role": role, "ok": d.process_one()}
    except durably.DurablyError as exc:
        outcome = {"role": role, "error": type(exc).__name__, "message": str(exc)}
    Path(out).write_text(json.dumps(outcome))


def _slow_job(step: Step, payload: Tag) -> str:
    def body() -> str:
        Path(WORKDIR, f"inside-{WHO}").write_text("1")
        deadline = time.monotonic() + 60
        while not Path(WORKDIR, "go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return WHO

    return step.run("slow", body)


SLOW = define_job(name="slow", input=Tag, output=str, run=_slow_job)
ALL_JOBS.append(SLOW)


def try_to_steal(root: str, workdir: str, who: str, host: str, lease: float) -> None:
    """Keep trying to claim (as another host) until the file ``stop`` appears."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, who
    pose_as_other_host(host)
    d = make(root, lease_duration=lease, lease_renew_interval=lease / 10)
    claimed = 0
    while not Path(workdir, "stop").exists():
        claimed += d.process_one()
    Path(workdir, f"claimed-{who}").write_text(str(claimed))


def hold_lease(root: str, workdir: str, who: str, lease: float) -> None:
    """Execute runs with a short lease (renewed every lease/10 s) until idle."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, who
    make(root, lease_duration=lease, lease_renew_interval=lease / 10).process_until_idle()


def delete_paused(root: str, workdir: str, run_id: str) -> None:
    """Delete a run, pausing between reading its key file and unlinking it until the
    racing trigger is done (or 1 s passed: the trigger may be waiting for us)."""
    real_rename, real_unlink = os.rename, os.unlink

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_rename(src, dst, *args, **kwargs)
        if os.path.basename(os.fspath(src)) == run_id:
            Path(workdir, "renamed").write_text("1")

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if f"{os.sep}keys{os.sep}" in killhook.full_path(path, kwargs.get("dir_fd")):
            wait_for_file(os.path.join(workdir, "triggered"), 1.0)
        real_unlink(path, *args, **kwargs)

    os.rename, os.unlink = rename, unlink
    make(root, fsync=False).delete_run(run_id)


def trigger_after_rename(root: str, workdir: str, key: str) -> None:
    """Trigger ``key`` once the racing delete has renamed its run away."""
    assert wait_for_file(os.path.join(workdir, "renamed"), 20)
    handle = make(root, fsync=False).get_job("steps")
    assert handle is not None
    res = handle.trigger(Tag(tag="second", steps=1), idempotency_key=key)
    Path(workdir, "triggered").write_text(res.disposition)


def complete_then_pause_compaction(root: str, workdir: str) -> None:
    """Execute runs; hold each compaction (the rename of journal.jsonl) until a reader
    says it is in the middle of reading the run's journals."""
    real_rename = os.rename

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.basename(os.fspath(dst)) == "journal.jsonl":
            wait_for_file(os.path.join(workdir, "reader-ready"), 5.0)
        real_rename(src, dst, *args, **kwargs)

    os.rename = rename
    make(root, fsync=False, preserve_steps=True).process_until_idle()


def read_steps_across_compaction(root: str, workdir: str, run_id: str, out: str) -> None:
    """Once the run has ended, read its steps, letting the compaction happen between the
    check for journal.jsonl and the read of j.1."""
    d = make(root, fsync=False)
    deadline = time.monotonic() + 20
    while (run := d.get_run(run_id)) is None or not run.is_terminal:
        assert time.monotonic() < deadline, "run never ended"
        time.sleep(0.002)
    real_stat = os.stat
    journal = os.path.join(str(run_dir_of(d, run_id)), "j.1")

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path) == journal and not os.path.exists(os.path.join(workdir, "reader-ready")):
            Path(workdir, "reader-ready").write_text("1")
            limit = time.monotonic() + 5
            while os.path.exists(journal) and time.monotonic() < limit:
                time.sleep(0.002)
        return real_stat(path, *args, **kwargs)

    os.stat = stat
    names = [s.name for s in d.get_steps(run_id) if s.status == "completed"]
    os.stat = real_stat
    Path(out).write_text(json.dumps(names))


# -- run under strace, and lock contention (reliability/test_rel_crash, test_rel_locks) ----


def keyed_workload(root: str, workdir: str) -> None:
    """The crash sweeps' workload: a keyed trigger of a 3-step run, then its execution,
    in this one process (``strace`` kills it at a system call: test_rel_crash)."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, "traced"
    d = make(root, preserve_steps=True)
    handle = d.get_job("steps")
    assert handle is not None
    handle.trigger(Tag(tag="t", steps=3), idempotency_key="idem", concurrency_key="conc")
    d.process_until_idle()


def contend(root: str, workdir: str, who: str, rounds: int) -> None:
    """Trigger keyed runs and execute them, racing the other contenders: every trigger
    takes the key's trigger lock, every claim a run lock and the key's execution lock.
    The jobs (``KEYED``) log the start and end of each run per key."""
    global WORKDIR, WHO
    WORKDIR, WHO = workdir, who
    d = durably.Durably(root, jobs=ALL_JOBS, fsync=False, polling_interval=0.01)
    for r in range(rounds):
        key = f"k{r % 3}"
        handle = d.get_job(f"keyed-{r % 4}")
        assert handle is not None
        handle.trigger(
            KeyIn(key=key, n=r), idempotency_key=f"{who}-{r % 7}", concurrency_key=key, coalesce="skip"
        )
        d.process_one()
    while d.process_one():
        pass
