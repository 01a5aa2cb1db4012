"""The `durably` command line (docs/cli.md), each subcommand run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.cli_app import ADD, FAIL, GATED, STEPS
from cli_harness import (
    APP,
    TESTS,
    Worker,
    durably_cli,
    env,
    files_under,
    one_line,
    popen_cli,
)

from durably import Durably, RunStatus
from durably._cli import main

SUBCOMMANDS = [
    "worker",
    "monitor",
    "trigger",
    "runs",
    "show",
    "logs",
    "cancel",
    "retrigger",
    "resume",
    "delete",
    "purge",
    "workers",
]


@pytest.fixture
def local(root: Path) -> Durably:
    """An in-test instance on the test's root with the test app's jobs."""
    return Durably(root, jobs=[ADD, FAIL, GATED, STEPS], fsync=False)


def trigger(root: Path, *args: str) -> str:
    """`durably trigger` that must succeed; returns the run id it printed."""
    result = durably_cli("trigger", APP, *args, "--root", root)
    assert result.returncode == 0, result.stderr
    return one_line(result.stdout)


def _display_column(line: str, word: str) -> int:
    """The terminal column where ``word`` starts in ``line`` (wide characters count 2)."""
    import unicodedata  # noqa: PLC0415

    before = line[: line.index(word)]
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in before)


def assert_error(result: Any, code: int | None = None) -> str:
    """A failed command: non-zero exit, nothing on stdout, one line on stderr."""
    assert result.returncode != 0
    if code is not None:
        assert result.returncode == code, result.stderr
    assert result.stdout == ""
    return one_line(result.stderr)


class TestHelp:
    def test_top_level_help_lists_every_subcommand(self) -> None:
        """`durably --help` exits 0 and names every subcommand."""
        result = durably_cli("--help")

        assert result.returncode == 0
        for name in SUBCOMMANDS:
            assert name in result.stdout

    @pytest.mark.parametrize("command", SUBCOMMANDS)
    def test_each_subcommand_has_help_with_root(
        self, command: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every subcommand's help exits 0 and documents `--root` (parsed in-process)."""
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])

        assert exit_info.value.code == 0
        assert "--root DIR" in capsys.readouterr().out

    def test_the_console_script_runs_main(self) -> None:
        """The `durably` entry point is `durably._cli:main`."""
        from importlib.metadata import entry_points  # noqa: PLC0415

        (script,) = [e for e in entry_points(group="console_scripts") if e.name == "durably"]
        assert script.value == "durably._cli:main"

    def test_unknown_subcommand_is_one_line_error(self) -> None:
        """An unknown subcommand prints one line on stderr and exits 2."""
        assert "invalid choice" in assert_error(durably_cli("frobnicate"), 2)


class TestTrigger:
    def test_trigger_prints_the_new_run_id(self, root: Path, local: Durably) -> None:
        """`trigger` creates a pending run with the input, keys and labels given."""
        run_id = trigger(
            root,
            "add",
            "--input",
            '{"a": 1, "b": 2}',
            "--idempotency-key",
            "k1",
            "--concurrency-key",
            "c1",
            "--label",
            "env=prod",
            "--label",
            "team=x",
        )

        run = local.get_run(run_id)
        assert run is not None
        assert run.status is RunStatus.PENDING
        assert run.input == {"a": 1, "b": 2}
        assert (run.idempotency_key, run.concurrency_key) == ("k1", "c1")
        assert run.labels == {"env": "prod", "team": "x"}

    @pytest.mark.parametrize("how", ["file", "stdin"])
    def test_input_from_a_file_or_stdin(self, root: Path, local: Durably, tmp_path: Path, how: str) -> None:
        """`--input @FILE` reads the input from a file, `--input -` from standard input."""
        path = tmp_path / "input.json"
        path.write_text('{"a": 6, "b": 7}')
        if how == "file":
            result = durably_cli("trigger", APP, "add", "--input", f"@{path}", "--root", root)
        else:
            result = subprocess.run(
                [sys.executable, "-m", "durably", "trigger", APP, "add", "--input", "-", "--root", str(root)],
                input=path.read_text(),
                cwd=TESTS,
                env=env(),
                capture_output=True,
                text=True,
                check=False,
            )

        assert result.returncode == 0, result.stderr
        run = local.get_run(one_line(result.stdout))
        assert run is not None
        assert run.input == {"a": 6, "b": 7}

    def test_root_defaults_to_the_environment_variable(self, root: Path, local: Durably) -> None:
        """Without `--root`, `$DURABLY_ROOT` is the root."""
        result = durably_cli(
            "trigger", APP, "add", "--input", '{"a": 1, "b": 1}', extra_env={"DURABLY_ROOT": str(root)}
        )

        assert result.returncode == 0, result.stderr
        assert local.get_run(one_line(result.stdout)) is not None

    def test_same_idempotency_key_prints_the_same_run(self, root: Path) -> None:
        """A second trigger with the same idempotency key prints the existing run's id."""
        first = trigger(root, "add", "--input", '{"a": 1, "b": 2}', "--idempotency-key", "same")

        assert trigger(root, "add", "--input", '{"a": 5, "b": 5}', "--idempotency-key", "same") == first

    def test_coalesce_queue_creates_runs_behind_the_pending_one(self, root: Path, local: Durably) -> None:
        """`--coalesce queue` prints a new run's id while one with the key is pending (it
        is queued behind it); without `--coalesce` that is a conflict, and `--coalesce
        skip` prints the latest pending run's id."""
        args = ["add", "--input", '{"a": 1, "b": 2}', "--concurrency-key", "c"]
        first = trigger(root, *args, "--coalesce", "queue")
        second = trigger(root, *args, "--coalesce", "queue")

        assert "pending run already exists" in assert_error(
            durably_cli("trigger", APP, *args, "--root", root)
        )
        assert trigger(root, *args, "--coalesce", "skip") == second
        assert first != second
        assert [r.id for r in local.get_runs()] == [second, first]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["add", "--input", "{not json"], "not valid JSON"),
            (["add", "--input", "@/nonexistent/input.json"], "cannot read --input file"),
            (["add", "--input", '{"a": 1}'], "Invalid input"),
            (["add", "--input", '{"a": 1, "b": 2}', "--label", "novalue"], "KEY=VALUE"),
            (["add", "--input", '{"a": 1, "b": 2}', "--label", "bad key!=x"], "label"),
            (["add", "--input", '{"a": 1, "b": 2}', "--label", "k=a", "--label", "k=b"], "given twice"),
            (["nope", "--input", "{}"], "no job named 'nope'"),
            (
                ["add", "--input", '{"a": 1, "b": 2}', "--concurrency-key", "c", "--coalesce", "later"],
                "--coalesce",
            ),
            (
                ["add", "--input", '{"a": 1, "b": 2}', "--coalesce", "queue"],
                "coalesce requires concurrency_key",
            ),
        ],
    )
    def test_bad_trigger_writes_nothing(self, root: Path, args: list[str], message: str) -> None:
        """Bad input, labels or job names: one line on stderr, non-zero exit, no root."""
        line = assert_error(durably_cli("trigger", APP, *args, "--root", root))

        assert message in line
        assert files_under(root) == []

    @pytest.mark.parametrize(
        ("app", "message"),
        [
            ("apps.cli_app", "module:attribute"),
            ("apps.missing:durably", "no module named 'apps.missing'"),
            ("apps.broken:durably", "this module is broken on purpose"),
            ("apps.cli_app:nothing", "no attribute 'nothing'"),
            ("apps.cli_app:not_durably", "not a Durably instance"),
            ("apps.elsewhere:durably", "but --root is"),
        ],
    )
    def test_bad_app_writes_nothing(self, root: Path, app: str, message: str) -> None:
        """A bad APP: one line on stderr, exit 2, nothing written to the root."""
        line = assert_error(
            durably_cli("trigger", app, "add", "--input", '{"a": 1, "b": 2}', "--root", root), 2
        )

        assert message in line
        assert files_under(root) == []
        assert not Path("/tmp/durably-tests-elsewhere-root-never-written").exists()


@pytest.mark.slow
class TestTriggerWait:
    @pytest.fixture
    def worker(self, root: Path) -> Iterator[Worker]:
        worker = Worker(root)
        worker.ready()
        yield worker
        worker.kill()

    def test_wait_prints_the_output_as_json(self, root: Path, worker: Worker) -> None:
        """`--wait` prints the id, then the output as JSON; logs and progress go to stderr."""
        result = durably_cli("trigger", APP, "add", "--input", '{"a": 2, "b": 3}', "--wait", "--root", root)

        assert result.returncode == 0, result.stderr
        run_id, output = result.stdout.splitlines()
        assert len(run_id) == 26
        assert json.loads(output) == {"sum": 5}
        assert "adding" in result.stderr
        assert "2/2 done" in result.stderr

    def test_wait_exits_1_when_the_run_fails(self, root: Path, worker: Worker) -> None:
        """`--wait` on a failing run prints only its id on stdout and exits 1."""
        result = durably_cli(
            "trigger", APP, "fail", "--input", '{"message": "kaput"}', "--wait", "--root", root
        )

        assert result.returncode == 1
        assert len(one_line(result.stdout)) == 26
        assert result.stderr.splitlines()[-1].endswith("failed: RuntimeError: kaput")


@pytest.mark.slow
def test_wait_exits_1_when_the_run_is_cancelled(root: Path, local: Durably) -> None:
    """`--wait` on a run that is cancelled exits 1 and says so."""
    waiter = popen_cli("trigger", APP, "add", "--input", '{"a": 1, "b": 1}', "--wait", "--root", root)
    assert waiter.stdout is not None
    run_id = waiter.stdout.readline().strip()
    local.cancel(run_id)

    _out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 1
    assert err.splitlines()[-1].endswith(f"run {run_id} was cancelled")


def test_wait_timeout_exits_1_and_the_run_goes_on(root: Path, local: Durably) -> None:
    """`--wait --timeout` gives up with exit 1; the run is still pending."""
    result = durably_cli(
        "trigger", APP, "add", "--input", '{"a": 1, "b": 1}', "--wait", "--timeout", "0.2", "--root", root
    )

    assert result.returncode == 1
    run = local.get_run(one_line(result.stdout))
    assert run is not None
    assert run.status is RunStatus.PENDING
    assert "is still pending after 0.2s" in one_line(result.stderr)


def test_wait_shows_the_whole_run_even_if_it_ended_first(root: Path, local: Durably) -> None:
    """`--wait` on a run that already ended (here: found by its idempotency key) still
    shows all its logs and progress, then its output."""
    local.register(ADD).trigger({"a": 3, "b": 4}, idempotency_key="done-before")
    local.process_until_idle()

    result = durably_cli(
        "trigger",
        APP,
        "add",
        "--input",
        '{"a": 3, "b": 4}',
        "--idempotency-key",
        "done-before",
        "--wait",
        "--root",
        root,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[1]) == {"sum": 7}
    assert "adding" in result.stderr
    assert "added" in result.stderr
    assert "progress: 2/2 done" in result.stderr


@pytest.fixture
def history(root: Path, local: Durably) -> dict[str, str]:
    """Runs in every terminal status plus a pending one, made through the API."""
    add = local.register(ADD)
    done = add.trigger({"a": 1, "b": 2}, labels={"env": "prod"}).id
    failed = local.register(FAIL).trigger({"message": "bad thing"}).id
    local.process_until_idle()
    cancelled = add.trigger({"a": 9, "b": 9}).id
    local.cancel(cancelled)
    pending = add.trigger({"a": 3, "b": 4}, labels={"env": "dev"}).id
    return {"completed": done, "failed": failed, "cancelled": cancelled, "pending": pending}


class TestRuns:
    def test_table_lists_runs_newest_first(self, root: Path, history: dict[str, str]) -> None:
        """`runs` prints a header and one row per run: id, job, status, progress, ..."""
        result = durably_cli("runs", "--root", root)

        assert result.returncode == 0, result.stderr
        header, *rows = result.stdout.splitlines()
        assert header.split() == ["ID", "JOB", "STATUS", "PROGRESS", "STARTED", "DURATION"]
        ids = [row.split()[0] for row in rows]
        assert ids == [history[s] for s in ("pending", "cancelled", "failed", "completed")]
        completed = next(row for row in rows if row.startswith(history["completed"]))
        assert completed.split()[1:4] == ["add", "completed", "2/2"]
        assert "\033[" not in result.stdout  # no colours when stdout is not a terminal

    def test_json_lists_run_objects(self, root: Path, history: dict[str, str]) -> None:
        """`runs --json` prints a JSON list of runs with their fields."""
        result = durably_cli("runs", "--json", "--root", root)

        runs = json.loads(result.stdout)
        assert [r["id"] for r in runs][-1] == history["completed"]
        assert runs[-1]["status"] == "completed"
        assert runs[-1]["output"] == {"sum": 3}
        assert runs[-1]["progress"] == {"current": 2, "total": 2, "message": "done"}

    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            (["--status", "failed"], ["failed"]),
            (["--status", "failed", "--status", "cancelled"], ["cancelled", "failed"]),
            (["--job", "fail"], ["failed"]),
            (["--label", "env=dev"], ["pending"]),
            (["--limit", "2"], ["pending", "cancelled"]),
        ],
    )
    def test_filters(self, root: Path, history: dict[str, str], args: list[str], expected: list[str]) -> None:
        """`--status`, `--job`, `--label` and `--limit` narrow the list."""
        result = durably_cli("runs", "--json", *args, "--root", root)

        assert [r["id"] for r in json.loads(result.stdout)] == [history[s] for s in expected]

    def test_unknown_root_is_an_error(self, tmp_path: Path) -> None:
        """`runs` on a directory that does not exist says so and creates nothing."""
        missing = tmp_path / "missing"

        assert "no durably root" in assert_error(durably_cli("runs", "--root", missing))
        assert not missing.exists()

    def test_a_file_given_as_root_is_named_as_not_a_directory(self, root: Path, tmp_path: Path) -> None:
        """A plain file as `--root` is not mistaken for a root nothing was triggered in."""
        plain = tmp_path / "plain"
        plain.write_text("x")
        line = assert_error(durably_cli("runs", "--root", plain))
        assert "is not a directory" in line
        assert "nothing triggered" not in line

    @pytest.mark.parametrize("word", ["running", "leased", "RUNNING"])
    def test_running_and_leased_name_one_status(self, root: Path, word: str) -> None:
        """`--status running` (the word `runs` and the monitor show) and the API's `leased` agree."""
        d = Durably(root, jobs=[ADD], fsync=False)
        d.register(ADD).trigger({"a": 1, "b": 1})
        result = durably_cli("runs", "--status", word, "--root", root)
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""

    def test_a_job_name_with_emoji_keeps_the_columns_aligned(self, root: Path) -> None:
        """Columns after a wide character (an emoji job name) line up by display width."""
        from durably import define_job  # noqa: PLC0415

        jobs = [define_job(name=n, input=dict, run=lambda step, payload: None) for n in ("📦 pack", "plain")]
        d = Durably(root, jobs=jobs, fsync=False)
        d.jobs["📦 pack"].trigger({})
        d.jobs["plain"].trigger({})
        lines = durably_cli("runs", "--root", root).stdout.splitlines()
        starts = [_display_column(line, "pending") for line in lines[1:]]
        assert len(set(starts)) == 1, lines
        assert _display_column(lines[0], "STATUS") == starts[0]

    @pytest.mark.parametrize("args", [["--status", "bogus"], ["--limit", "0"]])
    def test_bad_options_are_one_line_errors(
        self, root: Path, history: dict[str, str], args: list[str]
    ) -> None:
        """A bad filter value is a usage error: one line, exit 2."""
        assert_error(durably_cli("runs", *args, "--root", root), 2)


class TestShow:
    def test_shows_steps_errors_and_logs(self, root: Path, history: dict[str, str]) -> None:
        """`show` prints the run, its steps with their errors and tracebacks, and logs."""
        result = durably_cli("show", history["failed"], "--root", root)

        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert history["failed"] in out.splitlines()[0]
        assert "failed" in out.splitlines()[0]
        assert "bad thing" in out
        assert "explode" in out
        assert "Traceback (most recent call last)" in out
        assert "RuntimeError: bad thing" in out
        assert "about to fail" in out

    def test_json_is_the_run_with_its_steps(self, root: Path, history: dict[str, str]) -> None:
        """`show --json` prints the run object with a `steps` list."""
        result = durably_cli("show", history["completed"], "--json", "--root", root)

        run = json.loads(result.stdout)
        assert run["id"] == history["completed"]
        assert run["output"] == {"sum": 3}
        assert [(s["name"], s["status"]) for s in run["steps"]] == [("add", "completed")]
        assert run["steps"][0]["duration"] >= 0

    @pytest.mark.parametrize("command", ["show", "logs", "cancel", "delete"])
    def test_unknown_run_is_an_error(self, root: Path, history: dict[str, str], command: str) -> None:
        """Commands given an unknown run id: one line, exit 1, nothing written."""
        before = files_under(root)

        line = assert_error(durably_cli(command, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--root", root), 1)

        assert "Run not found" in line
        assert files_under(root) == before


class TestLogs:
    def test_one_log_per_line(self, root: Path, history: dict[str, str]) -> None:
        """`logs` prints each log with its time, level, step and message."""
        result = durably_cli("logs", history["completed"], "--root", root)

        lines = result.stdout.splitlines()
        assert len(lines) == 2
        assert lines[0].split()[1:] == ["info", "adding", '{"a":1,"b":2}']
        assert lines[1].split()[1:] == ["warn", "added"]

    @pytest.mark.slow
    def test_follow_prints_until_the_run_ends(self, root: Path, local: Durably) -> None:
        """`logs --follow` prints logs written by another process and exits at the end."""
        run_id = local.register(ADD).trigger({"a": 4, "b": 4}).id
        follower = popen_cli("logs", run_id, "--follow", "--root", root)

        local.process_until_idle()

        out, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
        assert [line.split()[2] for line in out.splitlines()] == ["adding", "added"]
        assert err.splitlines()[-1] == f"durably logs: run {run_id} completed"

    @pytest.mark.slow
    def test_follow_of_a_failing_run_says_so_and_exits_1(self, root: Path, local: Durably) -> None:
        """`logs --follow` of a run that fails ends with a line naming the error, exit 1."""
        run_id = local.register(FAIL).trigger({"message": "kaput"}).id
        follower = popen_cli("logs", run_id, "--follow", "--root", root)

        local.process_until_idle()

        out, err = follower.communicate(timeout=60)
        assert follower.returncode == 1, err
        assert "about to fail" in out
        assert err.splitlines()[-1] == f"durably logs: run {run_id} failed: RuntimeError: kaput"

    def test_follow_of_a_cancelled_run_says_so_and_exits_1(self, root: Path, local: Durably) -> None:
        """`logs --follow` of a cancelled run ends with `was cancelled`, exit 1."""
        run_id = local.register(ADD).trigger({"a": 1, "b": 1}).id
        local.cancel(run_id)

        result = durably_cli("logs", run_id, "--follow", "--root", root)
        assert result.returncode == 1
        assert result.stderr.splitlines()[-1] == f"durably logs: run {run_id} was cancelled"


class TestManage:
    def test_cancel_a_pending_run(self, root: Path, local: Durably, history: dict[str, str]) -> None:
        """`cancel` makes a pending run cancelled."""
        result = durably_cli("cancel", history["pending"], "--root", root)

        assert result.returncode == 0, result.stderr
        run = local.get_run(history["pending"])
        assert run is not None
        assert run.status is RunStatus.CANCELLED

    def test_cancel_an_ended_run_is_a_conflict(self, root: Path, history: dict[str, str]) -> None:
        """Cancelling a completed run is refused with one line and exit 1."""
        assert "Cannot cancel" in assert_error(durably_cli("cancel", history["completed"], "--root", root), 1)

    def test_retrigger_prints_a_new_run_with_the_same_input(
        self, root: Path, local: Durably, history: dict[str, str]
    ) -> None:
        """`retrigger` prints the id of a new pending run with the old input and labels."""
        result = durably_cli("retrigger", APP, history["completed"], "--root", root)

        new = local.get_run(one_line(result.stdout))
        assert new is not None
        assert new.id != history["completed"]
        assert (new.status, new.input, new.labels) == (RunStatus.PENDING, {"a": 1, "b": 2}, {"env": "prod"})

    @pytest.mark.parametrize(
        ("which", "message"), [("pending", "Cannot retrigger"), ("unknown", "Run not found")]
    )
    def test_retrigger_errors(self, root: Path, history: dict[str, str], which: str, message: str) -> None:
        """Retriggering a pending or unknown run: one line, exit 1, nothing written."""
        run_id = history.get(which, "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        before = files_under(root)

        assert message in assert_error(durably_cli("retrigger", APP, run_id, "--root", root), 1)
        assert files_under(root) == before

    def test_delete_an_ended_run(self, root: Path, local: Durably, history: dict[str, str]) -> None:
        """`delete` removes an ended run."""
        result = durably_cli("delete", history["failed"], "--root", root)

        assert result.returncode == 0, result.stderr
        assert local.get_run(history["failed"]) is None

    def test_delete_a_pending_run_is_a_conflict(
        self, root: Path, local: Durably, history: dict[str, str]
    ) -> None:
        """Deleting a pending run is refused and the run stays."""
        assert "Cannot delete" in assert_error(durably_cli("delete", history["pending"], "--root", root), 1)
        assert local.get_run(history["pending"]) is not None

    def test_purge_deletes_ended_runs_older_than_the_age(
        self, root: Path, local: Durably, history: dict[str, str]
    ) -> None:
        """`purge --older-than` deletes ended runs older than the age, never active ones."""
        kept = durably_cli("purge", "--older-than", "30d", "--root", root)
        assert kept.returncode == 0, kept.stderr
        assert "purged 0" in kept.stdout

        result = durably_cli("purge", "--older-than", "0s", "--root", root)

        assert "purged 3" in result.stdout
        assert [r.id for r in local.get_runs()] == [history["pending"]]

    @pytest.mark.parametrize("age", ["30", "thirty days", "-1d"])
    def test_purge_with_a_bad_age_writes_nothing(self, root: Path, history: dict[str, str], age: str) -> None:
        """A malformed age is one line on stderr with exit 2."""
        before = files_under(root)

        assert "--older-than" in assert_error(durably_cli("purge", f"--older-than={age}", "--root", root), 2)
        assert files_under(root) == before


class TestMonitor:
    def test_missing_monitor_is_one_clear_line(self, root: Path, tmp_path: Path) -> None:
        """Without textual, `durably monitor` says how to install it, in one line."""
        fake = tmp_path / "fake"
        (fake / "durably_monitor").mkdir(parents=True)
        (fake / "durably_monitor" / "__init__.py").write_text(
            "raise ModuleNotFoundError(\"No module named 'textual'\", name='textual')\n"
        )

        result = durably_cli("monitor", root, cwd=fake)

        line = assert_error(result, 2)
        assert "textual" in line
        assert "durably[monitor]" in line
