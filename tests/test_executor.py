"""`durably worker APP --processes N` (docs/workers.md, docs/cli.md), the multiprocess
executor, as a real process.

The test app (tests/apps/cli_app.py) leases for an hour, so any run that resumes after a
worker process dies proves it was claimed without waiting for the lease to expire.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apps.cli_app import ADD, CRASH, GATED, POLITE, STEPS, STUBBORN
from cli_harness import (
    APP,
    TESTS,
    Worker,
    durably_cli,
    files_under,
    one_line,
    pid_alive,
    wait_until,
    worker_processes,
)

from durably import Durably, RunStatus

pytestmark = pytest.mark.slow


@pytest.fixture
def local(root: Path) -> Durably:
    """An in-test instance on the test's root (to trigger and inspect runs)."""
    return Durably(root, jobs=[ADD, CRASH, GATED, POLITE, STEPS, STUBBORN], fsync=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the jobs record their calls and wait for gates."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def workers(root: Path) -> Iterator[Callable[..., Worker]]:
    """Start `durably worker` processes; all are killed at teardown."""
    started: list[Worker] = []

    def start(
        *args: str, processes: int = 1, app: str = APP, extra_env: dict[str, str] | None = None
    ) -> Worker:
        worker = Worker(root, *args, processes=processes, app=app, extra_env=extra_env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def status(local: Durably, run_id: str) -> RunStatus | None:
    run = local.get_run(run_id)
    return None if run is None else run.status


def gated(local: Durably, workdir: Path, name: str, job: str = "gated") -> str:
    return local.get_job(job).trigger({"workdir": str(workdir), "name": name}).id  # type: ignore[union-attr]


def started_pid(workdir: Path, name: str) -> int:
    """Wait until the job `name` announced itself; the pid of the process running it."""
    path = workdir / f"started-{name}"
    return int(wait_until(lambda: path.exists() and path.read_text()))


class TestStartUp:
    def test_prints_one_line_per_process_with_pid_and_root(
        self, root: Path, workers: Callable[..., Worker]
    ) -> None:
        """Each child prints its pid and the root it serves once it is ready."""
        worker = workers(processes=2)

        pids = worker.ready(2)

        assert len(set(pids)) == 2
        assert all(pid_alive(pid) for pid in pids)
        ready = [line for line in worker.lines if "ready (root" in line]
        assert all(f"root {root}" in line for line in ready)

    @pytest.mark.parametrize(
        ("app", "message"),
        [
            ("apps.missing:durably", "no module named 'apps.missing'"),
            ("apps.broken:durably", "this module is broken on purpose"),
            ("apps.cli_app:not_durably", "not a Durably instance"),
            ("apps.elsewhere:durably", "but --root is"),
            ("apps.cli_app", "module:attribute"),
        ],
    )
    def test_a_bad_app_is_one_line_and_a_non_zero_exit(self, root: Path, app: str, message: str) -> None:
        """Import errors and a root mismatch: one line on stderr, non-zero exit, no root."""
        result = durably_cli("worker", app, "--processes", "2", "--root", root)

        assert result.returncode == 2
        assert message in one_line(result.stderr)
        assert files_under(root) == []

    def test_an_unusable_root_is_one_line_and_a_non_zero_exit(self, tmp_path: Path) -> None:
        """A root that cannot be created (under a regular file) stops the start-up."""
        (tmp_path / "a-file").write_text("")

        result = durably_cli("worker", "apps.cli_app:durably", "--root", tmp_path / "a-file" / "root")

        assert result.returncode == 2
        assert "Not a directory" in one_line(result.stderr)

    def test_root_is_exported_before_the_app_is_imported(
        self, root: Path, local: Durably, workdir: Path, workers: Callable[..., Worker]
    ) -> None:
        """An app created with the default root executes the runs of `--root`."""
        run_id = local.register(ADD).trigger({"a": 20, "b": 22}).id
        workers()

        assert local.wait_for_run(run_id, timeout=60).output == {"sum": 42}


def _calls(workdir: Path, run_id: str) -> Counter[str]:
    path = workdir / f"calls-{run_id}"
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines())


def test_crash_of_the_whole_group_loses_nothing(
    local: Durably, workdir: Path, workers: Callable[..., Worker]
) -> None:
    """SIGKILL of supervisor and children mid-way, then a restart: every run completes,
    and in each run every step ran once, except at most one step in flight at the kill."""
    handle = local.get_job("steps")
    assert handle is not None
    ids = [handle.trigger({"workdir": str(workdir), "n": 10, "work": 60_000}).id for _ in range(40)]
    first = workers(processes=2)

    def total_calls() -> int:
        return sum(sum(_calls(workdir, run_id).values()) for run_id in ids)

    wait_until(lambda: total_calls() >= 100)
    first.kill()  # the whole process group, at once
    assert any(status(local, run_id) is not RunStatus.COMPLETED for run_id in ids)
    workers(processes=2)

    for run_id in ids:
        run = local.wait_for_run(run_id, timeout=120)
        assert run.output == {"total": sum(i * i for i in range(10)), "n": 10}
        calls = _calls(workdir, run_id)
        assert set(calls) == {f"step-{i}" for i in range(10)}
        repeated = [name for name, count in calls.items() if count > 1]
        assert len(repeated) <= 1, calls
        assert all(calls[name] == 2 for name in repeated), calls


class TestSignals:
    @pytest.mark.parametrize(
        ("signum", "group"),
        [
            (signal.SIGTERM, False),  # systemd, docker stop: the supervisor forwards it
            (signal.SIGINT, True),  # Ctrl-C in a terminal reaches the whole group
            (signal.SIGTERM, True),  # systemd KillMode=control-group
        ],
    )
    def test_first_signal_drains(
        self, local: Durably, workdir: Path, workers: Callable[..., Worker], signum: int, group: bool
    ) -> None:
        """Runs in flight complete, nothing new is claimed, and the exit code is 0."""
        worker = workers(processes=2)
        busy = [gated(local, workdir, "a"), gated(local, workdir, "b")]
        started_pid(workdir, "a")
        started_pid(workdir, "b")
        waiting = local.register(ADD).trigger({"a": 1, "b": 1}).id

        worker.signal(signum, group=group)
        worker.wait_line("stopping")
        (workdir / "open-a").touch()
        (workdir / "open-b").touch()

        assert worker.wait() == 0, worker.output()
        assert [status(local, r) for r in busy] == [RunStatus.COMPLETED] * 2
        assert status(local, waiting) is RunStatus.PENDING

    def test_a_signal_to_the_group_exits_idle_processes_quietly(self, workers: Callable[..., Worker]) -> None:
        """SIGTERM to the whole group (the supervisor forwards it too): idle processes
        exit 0, and no process is reported killed."""
        worker = workers(processes=4)
        worker.ready(4)

        worker.signal(signal.SIGTERM, group=True)

        assert worker.wait() == 0, worker.output()
        assert "killed" not in worker.output()

    def test_second_signal_stops_at_once(
        self, local: Durably, workdir: Path, workers: Callable[..., Worker]
    ) -> None:
        """A second signal kills the runs in flight; they stay leased, to be resumed."""
        worker = workers()
        run_id = gated(local, workdir, "a")
        pid = started_pid(workdir, "a")

        worker.signal(signal.SIGTERM)
        worker.wait_line("stopping")
        worker.signal(signal.SIGTERM)

        assert worker.wait() != 0
        wait_until(lambda: not pid_alive(pid))
        assert status(local, run_id) is RunStatus.LEASED
        assert "stopped at once" in worker.output()


def test_a_killed_child_is_replaced_and_its_run_resumes(
    local: Durably, workdir: Path, workers: Callable[..., Worker]
) -> None:
    """SIGKILL of the child running a run: a new child resumes it (no lease wait)."""
    worker = workers("--verbose")
    run_id = gated(local, workdir, "k")
    victim = started_pid(workdir, "k")
    worker.wait_line(f"process {victim} runs {run_id}")
    (workdir / "started-k").unlink()

    os.kill(victim, signal.SIGKILL)

    resumed_by = started_pid(workdir, "k")  # the replacement re-runs the step in flight
    assert resumed_by != victim
    (workdir / "open-k").touch()
    run = local.wait_for_run(run_id, timeout=60)
    assert run.output == {"pid": resumed_by, "after": 1}
    assert (workdir / "calls-k").read_text().split("\n")[:3] == [
        f"wait {victim}",
        f"wait {resumed_by}",
        "after",
    ]
    assert "will be resumed; starting a new one" in worker.wait_line(f"process {victim} was killed")


def test_a_crash_loop_backs_off(local: Durably, workdir: Path, workers: Callable[..., Worker]) -> None:
    """A run that kills its process every time is resumed again and again, but the
    replacements are spaced out once the deaths come in a row."""
    worker = workers()
    run_id = local.register(CRASH).trigger({"workdir": str(workdir)}).id

    worker.wait_line("(it keeps dying)")

    assert status(local, run_id) is RunStatus.LEASED
    assert "exited with code 3" in worker.output()
    local.cancel(run_id)


def test_a_process_killed_during_start_up_is_replaced(
    root: Path, local: Durably, workers: Callable[..., Worker]
) -> None:
    """A replacement SIGKILLed before it is ready is replaced in turn (spaced out while
    it keeps dying); the other process serves meanwhile, and the worker goes on."""
    worker = workers(processes=2, app="apps.dies_at_start:durably")
    victim, _ = worker.ready(2)
    marker, deaths = root.parent / "die-at-start", root.parent / "died-at-start"
    marker.touch()

    os.kill(victim, signal.SIGKILL)

    wait_until(
        lambda: worker.proc.poll() is not None or (deaths.exists() and len(deaths.read_text().split()) >= 2)
    )
    assert worker.proc.poll() is None, worker.output()
    served = local.register(ADD).trigger({"a": 1, "b": 2}).id
    assert local.wait_for_run(served, timeout=60).output == {"sum": 3}
    marker.unlink()
    worker.ready(3)
    later = local.register(ADD).trigger({"a": 2, "b": 3}).id
    assert local.wait_for_run(later, timeout=60).output == {"sum": 5}
    assert "was killed by SIGKILL during start-up; starting a new one" in worker.output()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()


def test_an_app_that_never_starts_stops_the_worker(tmp_path: Path, root: Path) -> None:
    """A process that dies during start-up every time, before any was ready: after a few
    attempts the worker stops with one line and exit 2."""
    (tmp_path / "die-at-start").touch()

    result = durably_cli("worker", "apps.dies_at_start:durably", "--root", root)

    assert result.returncode == 2
    assert "during start-up (5 times in a row)" in result.stderr.splitlines()[-1]


def test_processes_orphaned_during_start_up_exit_without_claiming(
    root: Path, local: Durably, workers: Callable[..., Worker]
) -> None:
    """SIGKILL of the supervisor while its processes are still starting (held before any
    durably code runs): they never claim a run, and they exit."""
    gate = root.parent / "start-gate"
    worker = workers(
        processes=2,
        extra_env={
            "DURABLY_TEST_START_GATE": str(gate),
            "PYTHONPATH": os.pathsep.join(
                [str(TESTS / "apps" / "startgate"), os.environ.get("PYTHONPATH", "")]
            ),
        },
    )
    wait_until(lambda: len(worker_processes(root)) == 2)

    worker.signal(signal.SIGKILL)
    worker.wait()
    run_id = local.register(ADD).trigger({"a": 1, "b": 1}).id
    gate.touch()

    wait_until(lambda: not worker_processes(root))
    assert status(local, run_id) is RunStatus.PENDING


def test_processes_orphaned_while_importing_the_app_exit_at_once(
    root: Path, local: Durably, workers: Callable[..., Worker]
) -> None:
    """SIGKILL of the supervisor while its processes import a slow APP: they exit without
    finishing the import, so they never claim a run."""
    importing = root.parent / "importing"
    worker = workers(processes=2, app="apps.slow_import:durably")
    wait_until(lambda: importing.exists() and len(importing.read_text().split()) == 2)

    worker.signal(signal.SIGKILL)
    worker.wait()
    run_id = local.register(ADD).trigger({"a": 1, "b": 1}).id

    wait_until(lambda: not worker_processes(root))  # the import gate never opens
    assert status(local, run_id) is RunStatus.PENDING


def test_workers_outliving_a_killed_supervisor_finish_their_run_and_exit(
    local: Durably, workdir: Path, workers: Callable[..., Worker]
) -> None:
    """SIGKILL of the supervisor alone: its worker finishes the run in flight and exits."""
    worker = workers()
    run_id = gated(local, workdir, "o")
    pid = started_pid(workdir, "o")

    worker.signal(signal.SIGKILL)
    worker.wait()
    (workdir / "open-o").touch()

    assert local.wait_for_run(run_id, timeout=60).output == {"pid": pid, "after": 1}
    wait_until(lambda: not pid_alive(pid))


class TestCancel:
    def test_a_step_polling_its_signal_sees_a_cancel_from_another_process(
        self, root: Path, local: Durably, workdir: Path, workers: Callable[..., Worker]
    ) -> None:
        """`durably cancel` in another process sets the executing step's signal."""
        worker = workers("--cancel-grace", "60")
        run_id = gated(local, workdir, "p", job="polite")
        pid = started_pid(workdir, "p")

        assert durably_cli("cancel", run_id, "--root", root).returncode == 0

        seen = wait_until((workdir / "saw-signal-p").exists)
        assert seen
        assert status(local, run_id) is RunStatus.CANCELLED
        assert not (workdir / "calls-p").exists()  # the next step.run raised CancelledError
        assert pid_alive(pid)  # it stopped by itself: nothing was killed
        assert "killing" not in worker.output()

    def test_a_run_ignoring_cancel_is_stopped_after_the_grace(
        self, root: Path, local: Durably, workdir: Path, workers: Callable[..., Worker]
    ) -> None:
        """A step that ignores the signal: its process is killed after `--cancel-grace`,
        the run stays cancelled with that step cancelled, and a new process takes over."""
        worker = workers("--cancel-grace", "1")
        run_id = gated(local, workdir, "s", job="stubborn")
        pid = started_pid(workdir, "s")

        assert durably_cli("cancel", run_id, "--root", root).returncode == 0

        wait_until(lambda: not pid_alive(pid))
        assert f"killing process {pid}" in worker.wait_line(f"run {run_id} was cancelled")
        assert status(local, run_id) is RunStatus.CANCELLED
        assert [(s.name, s.status) for s in local.get_steps(run_id)] == [("ignore", "cancelled")]
        after = local.register(ADD).trigger({"a": 2, "b": 2}).id
        assert local.wait_for_run(after, timeout=60).output == {"sum": 4}


class TestTimeouts:
    def test_job_timeout_fails_the_run_and_kills_a_stubborn_step(
        self, local: Durably, workdir: Path, workers: Callable[..., Worker]
    ) -> None:
        """`--job-timeout JOB=S` fails the run with a clear error and kills its process."""
        worker = workers("--job-timeout", "stubborn=1", "--cancel-grace", "1")
        run_id = gated(local, workdir, "t", job="stubborn")
        pid = started_pid(workdir, "t")

        wait_until(lambda: status(local, run_id) is RunStatus.FAILED)
        wait_until(lambda: not pid_alive(pid))

        run = local.get_run(run_id)
        assert run is not None
        assert run.error == "Run timed out after 1s"
        assert [s.status for s in local.get_steps(run_id)] == ["failed"]
        assert f"killing process {pid}" in worker.wait_line(f"run {run_id} timed out")

    def test_run_timeout_ends_a_polite_run_without_killing(
        self, local: Durably, workdir: Path, workers: Callable[..., Worker]
    ) -> None:
        """`--run-timeout` fails any job's run; a step watching its signal stops by itself."""
        worker = workers("--run-timeout", "1", "--cancel-grace", "60")
        run_id = gated(local, workdir, "q", job="polite")
        pid = started_pid(workdir, "q")

        wait_until((workdir / "saw-signal-q").exists)

        run = local.get_run(run_id)
        assert run is not None
        assert (run.status, run.error) == (RunStatus.FAILED, "Run timed out after 1s")
        assert pid_alive(pid)
        assert "killing" not in worker.output()

    def test_other_jobs_are_not_timed_out(
        self, local: Durably, workdir: Path, workers: Callable[..., Worker]
    ) -> None:
        """`--job-timeout` applies to its job only."""
        workers("--job-timeout", "stubborn=1")
        run_id = local.register(ADD).trigger({"a": 1, "b": 2}).id

        assert local.wait_for_run(run_id, timeout=60).output == {"sum": 3}


@pytest.mark.parametrize(
    "args",
    [["--processes", "0"], ["--cancel-grace", "-1"], ["--job-timeout", "stubborn"], ["--run-timeout", "x"]],
)
def test_bad_worker_options_are_one_line_errors(root: Path, args: list[str]) -> None:
    """Bad option values: one line on stderr, exit 2, no root created."""
    result = durably_cli("worker", "apps.cli_app:durably", *args, "--root", root)

    assert result.returncode == 2
    one_line(result.stderr)
    assert files_under(root) == []
