"""``durably worker``: a supervisor and N worker processes over one root.

The supervisor never imports the user's code. Each child is a fresh interpreter
(``sys.executable -c ...``, so nothing is forked or pickled) that imports ``APP``
(``module:attribute`` naming a ``Durably`` instance) with the working directory on
``sys.path``, then claims and executes runs one at a time with ``process_one()``.
A child tells the supervisor what it does over a pipe, one JSON line per message:

    {"t": "ready", "pid": ..., "root": ..., "jobs": [...]}    import done
    {"t": "error", "message": ...}                            import failed; exits 2
    {"t": "run", "run": ..., "job": ...}                      claimed a run (run:leased)
    {"t": "idle", "run": ...}                                 that run's execution ended

The supervisor uses these to replace children that die (spaced out while one keeps
dying, even during start-up; only an error the child reports, or start-up deaths in a
row before any child was ready, stop the worker), to stop a run that ignores a cancel
(or a run timeout) by killing its process after a grace period, and to drain on
SIGINT/SIGTERM. Killing a child is safe: the kernel drops its run lock, so another
child resumes the run at once from its checkpoints (the step in flight runs again).

A child never outlives its supervisor as a worker: it is given the supervisor's pid and
asks Linux for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), then checks that the
parent is still that pid (it may have died before). An orphan exits at once while still
starting up, and otherwise finishes the run in flight, claims nothing more and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import IO, Any

import orjson

from . import _doorbell as doorbell
from . import _manage as manage
from . import _workers as workers
from ._app_loader import AppError, load_app, one_line
from ._durably import Durably, runtime_of
from ._errors import DurablyError
from ._models import RunStatus

CHECK_INTERVAL = 0.25  # seconds between checks of the runs children execute
QUICK_DEATH = 2.0  # a child dying this soon after start-up counts towards a crash loop
MAX_BACKOFF = 10.0  # longest wait before replacing a child in a crash loop
START_ATTEMPTS = 5  # start-up deaths in a row, before any child was ready, that stop it all
PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal a Linux process gets when its parent dies
_CHILD_CODE = "from durably._supervisor import child_main; child_main()"


# -- the child --------------------------------------------------------------------------


class _Child:
    """One worker process: executes runs one at a time until told to stop."""

    def __init__(self, app: str, fd: int, root: str | None, parent: int) -> None:
        self.app = app
        self.fd = fd
        self.root = root
        self.parent = parent
        self.stopping = threading.Event()
        self.started = False
        self.current: str | None = None
        self.heartbeat: workers.Heartbeat | None = None
        self.bell: doorbell.Doorbell | None = None
        self._beat_lock = threading.Lock()

    def send(self, **message: Any) -> None:
        """Tell the supervisor (one JSON line; only the main thread writes this pipe)."""
        data = orjson.dumps(message) + b"\n"
        with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
            while data:
                data = data[os.write(self.fd, data) :]

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        if not self.started:  # still importing APP: nothing claimed, nothing to finish
            os._exit(0)
        # One SIGTERM is enough: the next ones (a signal to the whole process group, then
        # the supervisor's own) must not kill the interpreter once it restores SIG_DFL
        # while exiting.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.stopping.set()
        if self.bell is not None:
            self.bell.ring_self()

    def orphaned(self) -> bool:
        """Whether the supervisor that started this process is gone."""
        return os.getppid() != self.parent

    def _on_leased(self, event: Any) -> None:
        self.current = event.run_id
        self.send(t="run", run=event.run_id, job=event.job_name)
        self._beat()

    def _on_error(self, event: Any) -> None:
        where = f" (run {event.run_id})" if event.run_id else ""
        print(
            f"durably worker [{os.getpid()}]: {event.context} error{where}: {event.error}",
            file=sys.stderr,
            flush=True,
        )

    def run(self) -> int:
        os.set_inheritable(self.fd, False)  # a job's own subprocesses never hold the pipe
        # Ctrl-C reaches the whole process group: the supervisor decides what it means.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_term)
        _term_on_parent_death()
        # After prctl, not before: the supervisor may have died before it (while this
        # interpreter started), and then no signal comes.
        if self.orphaned():
            return 0
        try:
            durably = load_app(self.app, self.root)
            rt = runtime_of(durably)
            rt.store.ensure_ready()  # an unusable root stops the start-up, clearly
        except (AppError, DurablyError) as exc:
            self.send(t="error", message=str(exc))
            return 2
        if durably.is_read_only():
            self.send(t="error", message=read_only_error(durably.root))
            return 2
        self.started = True
        self.heartbeat = workers.Heartbeat(durably.root, list(durably.jobs))
        with contextlib.suppress(DurablyError, OSError):
            self.heartbeat.sweep()  # records of workers killed without a chance to clean up
        self._beat()
        self.bell = doorbell.Doorbell(durably.root)
        self.bell.open()
        self.send(t="ready", pid=os.getpid(), root=durably.root, jobs=sorted(durably.jobs))
        durably.on("run:leased", self._on_leased)
        durably.on("worker:error", self._on_error)
        beats = threading.Thread(target=self._beats, name="durably-heartbeat", daemon=True)
        beats.start()
        try:
            return self._serve(durably, rt)
        finally:
            self.stopping.set()
            beats.join(5)
            self.heartbeat.remove()
            self.bell.close()

    def _beat(self) -> None:
        """Refresh this process's record in ``workers/`` (a failure is reported, not fatal)."""
        if self.heartbeat is None:
            return
        with self._beat_lock:
            try:
                self.heartbeat.beat([self.current] if self.current else [])
            except DurablyError as exc:
                print(
                    f"durably worker [{os.getpid()}]: heartbeat: {one_line(exc)}", file=sys.stderr, flush=True
                )

    def _beats(self) -> None:
        while not self.stopping.wait(workers.BEAT_INTERVAL):
            self._beat()

    def _serve(self, durably: Durably, rt: Any) -> int:
        interval = rt.options.polling_interval
        errors = 0
        # An orphan (the supervisor was killed) stops claiming, like a drained child: on
        # Linux its SIGTERM comes at once; elsewhere this check sees it before each claim.
        while not self.stopping.is_set() and not self.orphaned():
            try:
                ran = durably.process_one()
                errors = 0
            except Exception as exc:  # noqa: BLE001 - keep serving: report and back off
                errors += 1
                print(f"durably worker [{os.getpid()}]: {one_line(exc)}", file=sys.stderr, flush=True)
                ran = False
            if self.current is not None:
                self.send(t="idle", run=self.current)
                self.current = None
                self._beat()
            if not ran:
                if not errors:
                    manage.idle_maintenance(rt)
                    # Until the next poll, or a ring: a run woke up (a signal, a child's end).
                    if self.bell is not None and self.bell.fd >= 0 and not self.stopping.is_set():
                        self.bell.wait(interval)
                        continue
                self.stopping.wait(min(30.0, interval * 2**errors))
        return 0


def _term_on_parent_death() -> None:
    """On Linux, have the kernel send this process SIGTERM when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def child_main() -> None:
    """Entry point of a worker process: ``APP FD ROOT PARENT`` in ``sys.argv``."""
    app, fd, root, parent = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, int(sys.argv[4])
    raise SystemExit(_Child(app, fd, root, parent).run())


# -- the supervisor ---------------------------------------------------------------------


@dataclasses.dataclass
class _Proc:
    """The supervisor's view of one child process."""

    slot: int
    proc: subprocess.Popen[bytes]
    fd: int
    buffer: bytes = b""
    ready: bool = False
    ready_at: float = 0.0
    error: str | None = None
    run_id: str | None = None
    job: str | None = None
    run_started: float = 0.0
    ended_seen: float | None = None  # when we saw its run ended by someone else
    timed_out: bool = False
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclasses.dataclass
class WorkerOptions:
    """What ``durably worker`` was asked to do."""

    app: str
    processes: int = 1
    root: str | None = None
    cancel_grace: float = 30.0
    run_timeout: float | None = None
    job_timeouts: Mapping[str, float] = dataclasses.field(default_factory=dict)
    verbose: bool = False


class Supervisor:
    """Runs N worker processes, replaces dead ones, stops runs that overstay, drains."""

    def __init__(self, options: WorkerOptions, out: IO[str] | None = None) -> None:
        self.options = options
        self.out = out or sys.stderr
        self.procs: dict[int, _Proc] = {}  # by slot
        self.selector = selectors.DefaultSelector()
        self.signals = 0
        self.draining = False
        self.fatal: str | None = None
        self.durably: Durably | None = None
        self.root: str | None = None
        self.last_check = 0.0
        self.quick_deaths: dict[int, int] = {}  # by slot: deaths in a row soon after start
        self.respawn_at: dict[int, float] = {}  # by slot: when to replace a crash-looping child
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def say(self, text: str) -> None:
        """Print one line of the supervisor's log."""
        print(f"durably worker: {text}", file=self.out, flush=True)

    # -- processes ----------------------------------------------------------------------

    def spawn(self, slot: int) -> None:
        """Start the child of ``slot``."""
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _CHILD_CODE,
                    self.options.app,
                    str(write_fd),
                    self.options.root or "",
                    str(os.getpid()),
                ],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        child = _Proc(slot, proc, read_fd)
        self.procs[slot] = child
        self.selector.register(read_fd, selectors.EVENT_READ, child)

    def _read(self, child: _Proc) -> bool:
        """Handle everything the child wrote so far; False at end of file."""
        while True:
            try:
                data = os.read(child.fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                return False
            child.buffer += data
            *lines, child.buffer = child.buffer.split(b"\n")
            for line in lines:
                with contextlib.suppress(orjson.JSONDecodeError):
                    self._message(child, orjson.loads(line))

    def _message(self, child: _Proc, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "ready":
            child.ready, child.ready_at = True, time.monotonic()
            root = str(msg.get("root"))
            if self.root is None:
                self.root = root
                self.durably = Durably(root)
            jobs = ", ".join(msg.get("jobs") or []) or "none"
            self.say(f"process {child.pid} ready (root {root}; jobs: {jobs})")
        elif kind == "error":
            child.error = str(msg.get("message"))
        elif kind == "run":
            child.run_id, child.job = str(msg["run"]), str(msg.get("job"))
            child.run_started = time.monotonic()
            child.ended_seen, child.timed_out = None, False
            if self.options.verbose:
                self.say(f"process {child.pid} runs {child.run_id} ({child.job})")
        elif kind == "idle":
            child.run_id = child.job = None
            child.ended_seen = None

    def _reap(self, child: _Proc) -> None:
        """Handle the exit of a child: replace it (later, if it keeps dying), or stop on
        a start-up error it reported (an APP that cannot import, an unusable root)."""
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(child.fd)
        self._read(child)
        os.close(child.fd)
        del self.procs[child.slot]
        code = child.proc.wait()
        if child.error is not None:
            self._stop(child.error)
            return
        run = f"; run {child.run_id} will be resumed" if child.run_id and not child.killed else ""
        if self.draining:
            if code != 0 and child.ready:
                self.say(f"process {child.pid} {_describe_exit(code)}{run}")
            return
        quick = not child.ready or (time.monotonic() - child.ready_at < QUICK_DEATH and not child.killed)
        deaths = self.quick_deaths[child.slot] = self.quick_deaths.get(child.slot, 0) + 1 if quick else 0
        death = f"process {child.pid} {_describe_exit(code)}"
        if not child.ready:
            death += " during start-up"
            if self.root is None and deaths >= START_ATTEMPTS:  # no process was ever ready
                self._stop(f"worker {death} ({deaths} times in a row)")
                return
        delay = 0.0 if deaths < 2 else min(MAX_BACKOFF, 0.5 * 2 ** (deaths - 2))
        later = f" in {_seconds(delay)}s (it keeps dying)" if delay else ""
        self.say(f"{death}{run}; starting a new one{later}")
        if delay:
            self.respawn_at[child.slot] = time.monotonic() + delay
        else:
            self.spawn(child.slot)

    def _stop(self, error: str) -> None:
        """Drain, then exit 2 with ``error`` (the first one given)."""
        if self.fatal is None:
            self.fatal = error
        self._drain()

    def _drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        for child in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)

    def _kill(self, child: _Proc) -> None:
        child.killed = True
        with contextlib.suppress(ProcessLookupError):
            child.proc.kill()

    # -- runs ---------------------------------------------------------------------------

    def _check_runs(self) -> None:
        """Fail runs past their timeout; kill children whose run ended but goes on."""
        now = time.monotonic()
        if now - self.last_check < CHECK_INTERVAL or self.durably is None:
            return
        self.last_check = now
        grace = self.options.cancel_grace
        for child in list(self.procs.values()):
            run_id = child.run_id
            if run_id is None or child.killed:
                continue
            try:
                run = self.durably.get_run(run_id)
            except Exception:  # noqa: BLE001, S112 - a damaged run file never stops the supervisor
                continue
            status = None if run is None else run.status
            if status in (RunStatus.PENDING, RunStatus.LEASED):
                self._check_timeout(child, now)
            elif status in (RunStatus.CANCELLED, RunStatus.FAILED, None):
                if child.ended_seen is None:
                    child.ended_seen = now
                elif now - child.ended_seen >= grace and self._still_runs(child, run_id):
                    why = (
                        "timed out"
                        if child.timed_out
                        else ("was deleted" if status is None else f"was {status}")
                    )
                    self.say(
                        f"run {child.run_id} {why} and did not stop within "
                        f"{_seconds(grace)}s: killing process {child.pid}"
                    )
                    self._kill(child)

    def _still_runs(self, child: _Proc, run_id: str) -> bool:
        """Read the child's latest messages: is it still executing ``run_id``?"""
        self._read(child)
        return child.run_id == run_id and child.proc.poll() is None

    def _check_timeout(self, child: _Proc, now: float) -> None:
        assert self.durably is not None
        assert child.run_id is not None
        limit = self.options.job_timeouts.get(child.job or "", self.options.run_timeout)
        if limit is None or child.timed_out or now - child.run_started < limit:
            return
        child.timed_out = True
        message = f"Run timed out after {_seconds(limit)}s"
        try:
            ended = manage.fail_run(runtime_of(self.durably), child.run_id, message)
        except DurablyError as exc:
            self.say(f"could not fail run {child.run_id} after its timeout: {exc}")
            return
        if ended:
            self.say(f"run {child.run_id} ({child.job}): {message}")
            child.ended_seen = now

    # -- main loop ----------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1

    def run(self) -> int:
        """Start the children and supervise them; return the exit code."""
        if self.options.root is not None:
            os.environ["DURABLY_ROOT"] = os.path.abspath(self.options.root)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        try:
            for slot in range(self.options.processes):
                self.spawn(slot)
            return self._loop()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for child in list(self.procs.values()):
                self._kill(child)
                child.proc.wait()
            self.selector.close()
            os.close(self.wake_r)
            os.close(self.wake_w)

    def _on_signals(self) -> int | None:
        """First signal: drain. Second: kill the children; return the exit code."""
        if self.signals >= 2:
            in_flight = [c.run_id for c in self.procs.values() if c.run_id]
            for child in list(self.procs.values()):
                self._kill(child)
            self.say(f"stopped at once; {len(in_flight)} run(s) in flight will be resumed by the next worker")
            return 1
        self._drain()  # first, so that once the line below is out, every child knows
        self.say(
            "stopping: no new runs are claimed; waiting for runs in flight "
            "(send the signal again to stop at once)"
        )
        return None

    def _loop(self) -> int:
        handled = 0
        while True:
            if self.signals > handled:
                handled = self.signals
                code = self._on_signals()
                if code is not None:
                    return code
            for key, _ in self.selector.select(timeout=CHECK_INTERVAL):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 512)
                elif not self._read(key.data):
                    self.selector.unregister(key.fd)
            for child in list(self.procs.values()):
                if child.proc.poll() is not None:
                    self._reap(child)
            if self.fatal is not None and not self.procs:
                print(f"durably worker: error: {self.fatal}", file=sys.stderr, flush=True)
                return 2
            if self.draining and not self.procs:
                self.say("stopped")
                return 0
            self._respawn_due()
            self._check_runs()

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self.respawn_at.items()):
            if self.draining:
                del self.respawn_at[slot]
            elif now >= when:
                del self.respawn_at[slot]
                self.spawn(slot)


def read_only_error(root: str) -> str:
    """Why a worker refuses to serve ``root``."""
    return (
        f"the root {os.path.abspath(root)} is read-only (a read-only file system, or "
        "no write permission): a worker cannot execute runs there"
    )


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def _seconds(value: float) -> str:
    return f"{value:g}"


def run_worker(options: WorkerOptions, out: IO[str] | None = None) -> int:
    """Run ``durably worker`` until it is stopped; return the process exit code.

    A read-only ``--root`` is refused before any process starts (without ``--root``, the
    first process to import APP refuses it).
    """
    if options.root is not None and Durably(options.root).is_read_only():
        print(f"durably worker: error: {read_only_error(options.root)}", file=sys.stderr, flush=True)
        return 2
    return Supervisor(options, out).run()
