"""The command line's forms for many runs (docs/cli.md, SPEC §11, §12): `durably resume`,
`cancel`/`delete`/`retrigger`/`resume` with several run ids or a filter, and
`durably runs --since/--until`. Run in-process through `durably._cli.main`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apps.cli_app import ADD, FAIL, STEPS
from cli_harness import APP, files_under

from durably import Durably, RunStatus
from durably._cli import main

UNKNOWN = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


@pytest.fixture
def local(root: Path) -> Durably:
    """An in-test instance on the test's root with the test app's jobs."""
    return Durably(root, jobs=[ADD, FAIL, STEPS], fsync=False)


@pytest.fixture
def runs(local: Durably) -> dict[str, list[str]]:
    """Two failed runs, one completed, two pending (labelled), made through the API."""
    fail = local.register(FAIL)
    add = local.register(ADD)
    failed = [fail.trigger({"message": f"m{i}"}, labels={"env": "prod"}).id for i in range(2)]
    done = [add.trigger({"a": 1, "b": 2}).id]
    local.process_until_idle()
    pending = [add.trigger({"a": i, "b": i}, labels={"env": "dev"}).id for i in range(2)]
    return {"failed": failed, "completed": done, "pending": pending}


@pytest.fixture(autouse=True)
def _fresh_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each command imports APP afresh on its test's root (as a new process would); the
    module of the suite is put back afterwards."""
    monkeypatch.delenv("DURABLY_ROOT", raising=False)
    module = sys.modules["apps.cli_app"]
    yield
    sys.modules["apps.cli_app"] = module


def cli(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, list[str], list[str]]:
    """Run `durably ARGS --root ROOT` in this process: (exit status, stdout, stderr lines)."""
    sys.modules.pop("apps.cli_app", None)
    code = main([*args, "--root", str(root)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def status(local: Durably, run_id: str) -> RunStatus:
    run = local.get_run(run_id)
    assert run is not None
    return run.status


class TestResumeCommand:
    def test_prints_the_new_runs_id(
        self, capsys: pytest.CaptureFixture[str], root: Path, local: Durably, runs: dict[str, list[str]]
    ) -> None:
        """`durably resume APP RUN` prints the id of a new pending run resumed from RUN."""
        code, out, err = cli(capsys, root, "resume", APP, runs["failed"][0])
        assert (code, err) == (0, [])
        assert len(out) == 1
        new = local.get_run(out[0])
        assert new is not None
        assert (new.resumed_from, new.status) == (runs["failed"][0], RunStatus.PENDING)

    def test_from_step_that_never_ran_is_one_line_and_exit_1(
        self, capsys: pytest.CaptureFixture[str], root: Path, runs: dict[str, list[str]]
    ) -> None:
        """A --from-step the run never executed: one error line naming it, nothing written."""
        before = files_under(root)
        code, out, err = cli(capsys, root, "resume", APP, runs["failed"][0], "--from-step", "nope")
        assert (code, out) == (1, [])
        assert len(err) == 1
        assert "'nope'" in err[0]
        assert files_under(root) == before

    def test_show_says_resumed_from(
        self, capsys: pytest.CaptureFixture[str], root: Path, local: Durably, runs: dict[str, list[str]]
    ) -> None:
        """`durably show` of a resumed run prints `resumed from <id>`."""
        new = local.resume(runs["failed"][0]).id
        code, out, _ = cli(capsys, root, "show", new)
        assert code == 0
        assert any(line.split() == ["resumed", "from", runs["failed"][0]] for line in out), out


class TestBulk:
    def test_cancel_several_ids_reports_each(
        self, capsys: pytest.CaptureFixture[str], root: Path, local: Durably, runs: dict[str, list[str]]
    ) -> None:
        """Several ids: one line per run cancelled, one stderr line per refusal, exit 1."""
        ids = [runs["pending"][0], runs["completed"][0], runs["pending"][1], UNKNOWN]
        code, out, err = cli(capsys, root, "cancel", *ids)
        assert code == 1
        assert out == [f"{runs['pending'][0]} cancelled", f"{runs['pending'][1]} cancelled"]
        assert [line.split(":")[1].strip() for line in err] == [runs["completed"][0], UNKNOWN]
        assert "Cannot cancel completed run" in err[0]
        assert all(status(local, r) is RunStatus.CANCELLED for r in runs["pending"])

    def test_cancel_by_label_exits_0_when_every_run_was_acted_on(
        self, capsys: pytest.CaptureFixture[str], root: Path, local: Durably, runs: dict[str, list[str]]
    ) -> None:
        """A filter instead of ids: every matching run, newest first, exit 0."""
        code, out, err = cli(capsys, root, "cancel", "--label", "env=dev", "--status", "pending")
        assert (code, err) == (0, [])
        assert out == [f"{r} cancelled" for r in reversed(runs["pending"])]

    def test_retrigger_by_status_prints_old_and_new_ids(
        self, capsys: pytest.CaptureFixture[str], root: Path, local: Durably, runs: dict[str, list[str]]
    ) -> None:
        """retrigger with a filter: `OLD NEW` per run; the new runs are not acted on."""
        code, out, err = cli(capsys, root, "retrigger", APP, "--status", "failed")
        assert (code, err) == (0, [])
        assert [line.split()[0] for line in out] == list(reversed(runs["failed"]))
        for line in out:
            old, new = line.split()
            run = local.get_run(new)
            assert run is not None
            assert run.input == local.get_run(old).input  # type: ignore[union-attr]

    def test_resume_by_job_and_since(
        self, capsys: pytest.CaptureFixture[str], root: Path, local: Durably, runs: dict[str, list[str]]
    ) -> None:
        """resume with --job and --since: `OLD NEW` per run, the new ones resumed from the old."""
        code, out, err = cli(capsys, root, "resume", APP, "--job", "fail", "--since", "1h")
        assert (code, err) == (0, [])
        pairs = [line.split() for line in out]
        assert [old for old, _ in pairs] == list(reversed(runs["failed"]))
        assert all(local.get_run(new).resumed_from == old for old, new in pairs)  # type: ignore[union-attr]

    def test_resume_refuses_active_runs_and_goes_on(
        self, capsys: pytest.CaptureFixture[str], root: Path, local: Durably, runs: dict[str, list[str]]
    ) -> None:
        """Of several ids, an active run is reported on stderr; the others are resumed."""
        code, out, err = cli(capsys, root, "resume", APP, runs["pending"][0], runs["failed"][1])
        assert code == 1
        assert [line.split()[0] for line in out] == [runs["failed"][1]]
        assert len(err) == 1
        assert runs["pending"][0] in err[0]
        assert "Cannot resume pending run" in err[0]

    def test_delete_by_status(
        self, capsys: pytest.CaptureFixture[str], root: Path, local: Durably, runs: dict[str, list[str]]
    ) -> None:
        """delete --status failed removes exactly the failed runs."""
        code, out, _ = cli(capsys, root, "delete", "--status", "failed")
        assert code == 0
        assert out == [f"{r} deleted" for r in reversed(runs["failed"])]
        assert all(local.get_run(r) is None for r in runs["failed"])
        assert local.get_run(runs["completed"][0]) is not None

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ([], "give one or more run ids, or a filter"),
            ([UNKNOWN, "--status", "failed"], "not both"),
        ],
    )
    def test_ids_and_filter_together_or_neither_is_a_usage_error(
        self,
        capsys: pytest.CaptureFixture[str],
        root: Path,
        runs: dict[str, list[str]],
        args: list[str],
        message: str,
    ) -> None:
        """Neither ids nor a filter, or both: exit 2, one line, nothing written."""
        before = files_under(root)
        code, out, err = cli(capsys, root, "cancel", *args)
        assert (code, out) == (2, [])
        assert len(err) == 1
        assert message in err[0]
        assert files_under(root) == before

    def test_one_id_keeps_the_one_run_form(
        self, capsys: pytest.CaptureFixture[str], root: Path, runs: dict[str, list[str]]
    ) -> None:
        """One id and no filter: the one-run output (`cancelled RUN`); an error exits 1."""
        assert cli(capsys, root, "cancel", runs["pending"][0])[:2] == (0, [f"cancelled {runs['pending'][0]}"])
        code, out, err = cli(capsys, root, "cancel", runs["completed"][0])
        assert (code, out) == (1, [])
        assert err[0].startswith("durably cancel: error: Cannot cancel")


class TestRunsWindow:
    def test_since_and_until(
        self, capsys: pytest.CaptureFixture[str], root: Path, runs: dict[str, list[str]]
    ) -> None:
        """`runs --since 2h` lists today's runs; `--until` an hour ago lists none."""
        code, out, _ = cli(capsys, root, "runs", "--since", "2h", "--limit", "50")
        assert code == 0
        assert len(out) == 1 + 5  # the heading and every run
        hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        code, out, err = cli(capsys, root, "runs", "--until", hour_ago)
        assert (code, out, err) == (0, [], ["no runs"])

    def test_a_time_without_a_zone_is_a_usage_error(
        self, capsys: pytest.CaptureFixture[str], root: Path, runs: dict[str, list[str]]
    ) -> None:
        """`--since 2026-12-01T00:00` (no time zone) exits 2 with one line."""
        with pytest.raises(SystemExit) as info:
            main(["runs", "--since", "2026-12-01T00:00", "--root", str(root)])
        assert info.value.code == 2
        assert "has no time zone" in capsys.readouterr().err
