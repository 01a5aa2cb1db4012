"""Child-process side of the fault tests: a job, a fault server, and a worker "host".

``python -m apps.fault_server serve ROOT`` reads one JSON command per line on stdin and
answers one JSON line per command on stdout. It runs under ``fiu-run -x`` (libfiu's POSIX wrappers
preloaded) so a command can make the N-th ``write``/``fsync``/``fdatasync``/``open``
after a chosen moment fail with an errno; the test may also attach ``strace -e inject``
to it between commands. Executions of step bodies are counted in memory (this process is
the only executor), because a log file write would itself go through the fault point.

``python -m apps.fault_server work ROOT WHO LOG HOST LEASE UNTIL`` is one "host" of the
multi-host tests: it processes runs until none is left and appends one line per step
execution to LOG (``hold``: it claims one run and blocks in its step 1). The readers and
sync tests use the job (``rel-work``) in the test process.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys
import threading
import time
from collections import Counter
from functools import partial
from typing import Any

from pydantic import BaseModel

import durably
from durably import Step, define_job

from .common import append_line

EXECUTED: Counter[tuple[str, int]] = Counter()
ARM: dict[str, Any] = {}
READER_ERRORS: list[str] = []
WORKER_ERRORS: list[str] = []
WORKER = True  # a background worker (d.start()); False: runs execute in the main thread
TRIGGERED = threading.Event()  # the case's trigger returned: only then arm the fault
_FIU: Any = None
_CB_TYPE = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.POINTER(ctypes.c_int),
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_uint),
)
_keep: list[Any] = []
STEP_LOG: str | None = None
STEP_DELAY = float(os.environ.get("RELAPP_STEP_DELAY", "0"))
GATE: str | None = None  # step 1 blocks until this file exists (the lease holder)


class Work(BaseModel):
    tag: str = ""
    steps: int = 4
    size: int = 0  # bytes of padding in each step's value
    arm_at: int = -1  # step whose body arms the fault (once per case)


def value_of(k: int, size: int) -> dict[str, Any]:
    return {"k": k, "sq": k * k, "pad": "x" * size}


def _body(run_id: str, tag: str, k: int, size: int, arm_at: int) -> dict[str, Any]:
    EXECUTED[(run_id, k)] += 1
    if STEP_LOG is not None:
        _log_line(f"{os.environ.get('RELAPP_WHO', '?')} {run_id} {k} {os.getpid()}")
    if STEP_DELAY:
        time.sleep(STEP_DELAY)
    if GATE is not None and k == 1:
        _log_line(f"{os.environ.get('RELAPP_WHO', '?')} blocked {run_id} {k} {os.getpid()}")
        while not os.path.exists(GATE):
            time.sleep(0.01)
    if k == arm_at and ARM and not ARM.get("armed"):
        TRIGGERED.wait(30)  # the worker may run step 1 before trigger() returned
        ARM["armed"] = True
        fiu_fail_nth(ARM["point"], ARM["nth"], ARM["errno"])
    return value_of(k, size)


def _work(step: Step, payload: Work) -> dict[str, Any]:
    total = 0
    for k in range(payload.steps):
        value = step.run(
            f"step-{k}", partial(_body, step.run_id, payload.tag, k, payload.size, payload.arm_at)
        )
        assert value["k"] == k, value
        total += value["sq"]
    return {"total": total, "tag": payload.tag}


WORK = define_job(name="rel-work", input=Work, run=_work)


def expected(steps: int, tag: str) -> dict[str, Any]:
    return {"total": sum(k * k for k in range(steps)), "tag": tag}


def make(root: str, **options: Any) -> durably.Durably:
    options.setdefault("polling_interval", 0.02)
    options.setdefault("preserve_steps", True)
    return durably.Durably(root, jobs=[WORK], **options)


def _log_line(line: str) -> None:
    assert STEP_LOG is not None
    append_line(STEP_LOG, line, sync=False)


# -- libfiu, armed from inside the process (docs/reliability.md, test_rel_faults.py) ----


def fiu_fail_nth(point: str, nth: int, err: int, *, main_only: bool = False) -> None:
    """The ``nth`` call through ``point`` from now on fails once with ``err``.

    ``main_only``: count only calls of the main thread (a trigger or a delete made there),
    not those of the background worker finishing an earlier run meanwhile.
    """
    main = threading.main_thread()
    global _FIU  # noqa: PLW0603
    if _FIU is None:
        _FIU = ctypes.CDLL("libfiu.so.0")
        _FIU.fiu_failinfo.restype = ctypes.c_void_p
    calls = {"n": 0}

    def cb(_name: bytes, _failnum: Any, failinfo: Any, _flags: Any) -> int:
        if main_only and threading.current_thread() is not main:
            return 0
        calls["n"] += 1
        if calls["n"] == nth:
            failinfo[0] = err
            return 1
        return 0

    c = _CB_TYPE(cb)
    _keep.append(c)
    assert _FIU.fiu_enable_external(point.encode(), 1, None, 0, c) == 0
    ARM["calls"] = calls


# libfiu's POSIX wrappers cover open() and rename(), not openat() and renameat(), which
# durably uses for every name below the root (directory descriptors from files.open_dir).
# The Python-level calls with a directory descriptor go through the same fault points
# here, so "the N-th open" or "rename" counts both forms, as before durably used them.
_AT_CALLS = {
    "open": ("posix/io/oc/open", ("dir_fd",)),
    "rename": ("posix/io/dir/rename", ("src_dir_fd", "dst_dir_fd")),
}


def route_at_calls_through_fiu() -> None:
    for name, (point, keys) in _AT_CALLS.items():
        real = getattr(os, name)

        def wrapped(
            *args: Any,
            _real: Any = real,
            _point: bytes = point.encode(),
            _keys: tuple[str, ...] = keys,
            **kwargs: Any,
        ) -> Any:
            if _FIU is not None and any(kwargs.get(k) is not None for k in _keys) and _FIU.fiu_fail(_point):
                err = _FIU.fiu_failinfo() or errno.EIO
                raise OSError(err, os.strerror(err))
            return _real(*args, **kwargs)

        setattr(os, name, wrapped)


def fiu_disable() -> None:
    if _FIU is not None and ARM.get("point"):
        _FIU.fiu_disable(ARM["point"].encode())


# -- the fault server ---------------------------------------------------------------------


def drain(d: durably.Durably) -> None:
    """Without a background worker: execute runs in this thread until none is left.

    A fault may make a claim or an end fail (``StoreError``); like the worker loop, retry.
    """
    for _ in range(20):
        try:
            d.process_until_idle()
            return
        except durably.DurablyError as exc:
            WORKER_ERRORS.append(f"{type(exc).__name__}: {exc}")


def _wait_terminal(d: durably.Durably, run_id: str, timeout: float = 30.0) -> durably.Run[Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not WORKER:
            drain(d)  # a claim that failed is skipped by this pass: the next one retries it
        try:
            run = d.get_run(run_id)
        except durably.DurablyError as exc:  # this reader met the fault: clear, transient
            READER_ERRORS.append(str(exc))
            continue
        if run is not None and run.status in ("completed", "failed", "cancelled"):
            return run
        time.sleep(0.005)
    return d.get_run(run_id)


def _summary(d: durably.Durably, run: durably.Run[Any] | None) -> dict[str, Any]:
    if run is None:
        return {"status": None}
    steps = d.get_steps(run.id)
    return {
        "id": run.id,
        "status": str(run.status.value),
        "error": run.error,
        "output": run.output,
        "done": [s.name for s in steps if s.status == "completed"],
        "executed": {str(k): n for (r, k), n in EXECUTED.items() if r == run.id},
    }


def _health(d: durably.Durably, handle: Any, tag: str) -> dict[str, Any]:
    res = handle.trigger(Work(tag=tag, steps=2))
    return _summary(d, _wait_terminal(d, res.id))


def case_commit(d: durably.Durably, handle: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    """A run whose step ``arm_at`` arms the fault; its commit (or what follows) meets it."""
    ARM.clear()
    if cmd.get("point"):
        ARM.update(point=cmd["point"], nth=cmd["nth"], errno=cmd["errno"])
    tag = cmd["tag"]
    if WORKER:
        TRIGGERED.clear()
    errors_before = len(WORKER_ERRORS)
    res = handle.trigger(Work(tag=tag, steps=4, arm_at=cmd.get("arm_at", 1)))
    TRIGGERED.set()
    run = _wait_terminal(d, res.id)
    fiu_disable()
    out = {
        "run": _summary(d, run),
        "fired": ARM.get("calls", {}).get("n", 0) >= cmd.get("nth", 0),
        "worker_errors": WORKER_ERRORS[errors_before:],
    }
    if run is not None and run.status == "failed":
        again = d.retrigger(run.id)
        out["retried"] = _summary(d, _wait_terminal(d, again.id))
    out["health"] = _health(d, handle, tag + "-health")
    return out


def case_trigger(d: durably.Durably, handle: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    """A keyed trigger that meets the fault; then the same trigger again, and its run."""
    ARM.clear()
    tag = cmd["tag"]
    if cmd.get("point"):
        ARM.update(point=cmd["point"], nth=cmd["nth"], errno=cmd["errno"], armed=True)
        fiu_fail_nth(cmd["point"], cmd["nth"], cmd["errno"], main_only=True)
    error: dict[str, Any] | None = None
    try:
        handle.trigger(Work(tag=tag, steps=2), idempotency_key=tag, concurrency_key=tag)
    except durably.DurablyError as exc:
        error = {"type": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        error = {"type": type(exc).__name__, "message": str(exc), "unexpected": True}
    fiu_disable()
    out: dict[str, Any] = {"error": error, "fired": ARM.get("calls", {}).get("n", 0) >= cmd.get("nth", 0)}
    keyed = [r.id for r in d.get_runs() if r.idempotency_key == tag]
    out["visible_after_fault"] = len(keyed)
    res = handle.trigger(Work(tag=tag, steps=2), idempotency_key=tag, concurrency_key=tag, coalesce="skip")
    out["disposition"] = res.disposition
    out["run"] = _summary(d, _wait_terminal(d, res.id))
    out["keyed_runs"] = len([r for r in d.get_runs() if r.idempotency_key == tag])
    return out


def case_delete(d: durably.Durably, handle: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    """Delete a completed keyed run while the fault is armed; then delete it again."""
    tag = cmd["tag"]
    res = handle.trigger(Work(tag=tag, steps=2), idempotency_key=tag)
    _wait_terminal(d, res.id)
    ARM.clear()
    ARM.update(point=cmd["point"], nth=cmd["nth"], errno=cmd["errno"], armed=True)
    fiu_fail_nth(cmd["point"], cmd["nth"], cmd["errno"], main_only=True)
    error: dict[str, Any] | None = None
    try:
        d.delete_run(res.id)
    except durably.DurablyError as exc:
        error = {"type": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        error = {"type": type(exc).__name__, "message": str(exc), "unexpected": True}
    fiu_disable()
    out: dict[str, Any] = {"error": error, "fired": ARM["calls"]["n"] >= cmd["nth"]}
    out["after_fault"] = _summary(d, d.get_run(res.id))
    if d.get_run(res.id) is not None:
        d.delete_run(res.id)
    out["gone"] = d.get_run(res.id) is None
    out["retrigger"] = handle.trigger(Work(tag=tag, steps=2), idempotency_key=tag).disposition
    return out


def serve(root: str, worker: bool) -> None:
    global WORKER  # noqa: PLW0603
    WORKER = worker
    route_at_calls_through_fiu()
    d = make(root, fsync=True)
    handle = d.get_job("rel-work")
    if worker:
        d.start()
    else:
        TRIGGERED.set()
    errors = WORKER_ERRORS
    d.on("worker:error", lambda ev: errors.append(ev.error))
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            fn = {"commit": case_commit, "trigger": case_trigger, "delete": case_delete}[cmd["op"]]
            out = fn(d, handle, cmd)
        except Exception as exc:  # noqa: BLE001 - the test fails on it with the message
            fiu_disable()
            import traceback  # noqa: PLC0415

            out = {
                "crash": f"{type(exc).__name__}: {exc}",
                "arm": {k: v for k, v in ARM.items() if k != "calls"},
                "calls": ARM.get("calls"),
                "traceback": traceback.format_exc()[-1500:],
            }
        out["worker_errors"] = errors[:]
        out["reader_errors"] = READER_ERRORS[:]
        errors.clear()
        READER_ERRORS.clear()
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    d.stop(timeout=30)


# -- one "host" of the multi-host tests ---------------------------------------------------


def work(root: str, who: str, log: str, host: str | None, lease: float, until_file: str) -> None:
    """Process runs until ``until_file`` exists and nothing is claimable."""
    global STEP_LOG  # noqa: PLW0603
    STEP_LOG = log
    os.environ["RELAPP_WHO"] = who
    if host:
        import durably._locks  # noqa: PLC0415

        durably._locks.HOST = host
    d = make(root, fsync=False, lease_duration=lease, lease_renew_interval=min(1.0, lease / 4))
    go = os.environ.get("RELAPP_GO")
    while go and not os.path.exists(go):  # start together with the other "hosts"
        time.sleep(0.005)
    while True:
        ran = d.process_until_idle()
        # After the stop file, one more pass: runs may have been freed meanwhile.
        if not ran and os.path.exists(until_file) and not d.process_until_idle():
            break
        time.sleep(0.005)


def hold(root: str, who: str, log: str, host: str | None, lease: float, gate: str) -> None:
    """Claim one run and execute it, blocking in step 1 until ``gate`` exists."""
    global STEP_LOG, GATE
    STEP_LOG, GATE = log, gate
    os.environ["RELAPP_WHO"] = who
    if host:
        import durably._locks  # noqa: PLC0415

        durably._locks.HOST = host
    d = make(root, fsync=False, lease_duration=lease, lease_renew_interval=min(1.0, lease / 4))
    d.on("worker:error", lambda ev: _log_line(f"{who} worker-error {ev.error}"))
    d.process_one()
    _log_line(f"{who} returned")


def main(argv: list[str]) -> None:
    op = argv[0]
    if op == "serve":
        serve(argv[1], worker=argv[2:] != ["--inline"])
    elif op in ("work", "hold"):
        fn = work if op == "work" else hold
        fn(argv[1], argv[2], argv[3], argv[4] or None, float(argv[5]), argv[6])
    else:
        raise SystemExit(f"unknown op {op}")


if __name__ == "__main__":
    main(sys.argv[1:])
