"""Bad input: hostile names, damaged and newer-format files, unstorable step values,
and file permissions (SPEC §8, DESIGN.md invariants 8-10)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from crashapps.proc import Zygote
from pydantic import BaseModel

import durably
import durably._doctor
from durably import Durably, Step, define_job
from durably import _files as files

Factory = Callable[..., Durably]


class In(BaseModel):
    value: str = ""


HOSTILE = {
    "slash": "a/b/c",
    "dotdot": "..",
    "traversal": "../../etc/passwd",
    "absolute": "/etc/passwd",
    "backslash": "..\\..\\x",
    "dot": ".",
    "tilde": "~",
    "percent": "%2e%2e%2f",
    "fullwidth": "\uff0e\uff0e\uff0f",
    "windows": "CON",
    "windows-nul": "NUL",
    "windows-com": "COM1",
    "windows-ext": "aux.txt",
    "unicode": "日本語 ジョブ 🚀 é\u0301",
    "controls": "tab\there\nnew\rline\x01\x1f\x7f",
    "spaces": "  lead and trail  ",
    "long300": "é" * 300,
    "long10000": "x/" * 5000,
}


STATS: dict[str, int] = {}
_KINDS = {"test_names_keys": "hostile_names", "test_damaged": "damaged_files",
          "test_newer_format": "future_format_files", "test_a_symlink": "planted_symlinks",
          "test_unstorable": "unstorable_values", "test_directories_are": "umasks"}


@pytest.fixture(autouse=True)
def _count_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    """Count the hostile inputs tried, for the figures printed after the run."""
    yield
    kind = next((k for prefix, k in _KINDS.items() if request.node.name.startswith(prefix)), None)
    if kind is not None:
        STATS[kind] = STATS.get(kind, 0) + 1


def _tree(path: Path) -> dict[str, tuple[int, float]]:
    """Every entry under ``path`` (not following symlinks), with size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            out[os.path.relpath(full, path)] = (st.st_size, st.st_mtime)
    return out


class TestHostileNames:
    @pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
    def test_names_keys_and_labels_are_data_and_stay_inside_the_root(
        self, tmp_path: Path, durably_factory: Factory, name: str
    ) -> None:
        """A job name, step name, idempotency key, concurrency key and label value made of
        slashes, dots, unicode, control characters or up to 10,000 characters all work,
        read back exactly, and nothing is written outside the root (whose file names stay
        short and plain ASCII)."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "passwd").write_text("precious")
        root = outside / "deeper" / "root"
        before = _tree(tmp_path)

        def run(step: Step, payload: In) -> str:
            return step.run(name, lambda: payload.value + name)

        job = define_job(name=name, input=In, output=str, run=run)
        d = durably_factory(root_dir=root)
        handle = d.register(job)
        result = handle.trigger(In(value="v"), idempotency_key=name, concurrency_key=name,
                                labels={"k": name})
        assert d.process_until_idle() == 1
        run_ = handle.get_run(result.id)
        assert run_ is not None, result.id
        assert run_.status == "completed", run_
        assert run_.output == "v" + name
        assert (run_.job_name, run_.idempotency_key, run_.concurrency_key, run_.labels) == \
            (name, name, name, {"k": name})
        assert [s.name for s in d.get_steps(result.id)] == [name]
        assert [r.id for r in d.get_runs(labels={"k": name})] == [result.id]
        assert [r.id for r in d.get_runs(job_name=name)] == [result.id]
        again = handle.trigger(In(value="w"), idempotency_key=name)
        assert (again.id, again.disposition) == (result.id, "idempotent")

        after = _tree(tmp_path)
        new = {p for p in after if p not in before}
        outside_root = {p for p in new if not p.startswith(os.path.join("outside", "deeper"))}
        assert outside_root == set(), f"written outside the root: {sorted(outside_root)}"
        assert (outside / "passwd").read_text() == "precious"
        for dirpath, dirnames, filenames in os.walk(root):
            for entry in dirnames + filenames:
                assert entry.isascii(), entry
                assert entry.isprintable(), entry
                assert len(entry) <= 100, entry
                assert not os.path.islink(os.path.join(dirpath, entry))


# -- damaged and newer-format files --------------------------------------------------


def _steps3(step: Step, payload: In) -> str:
    for k in range(3):
        step.run(f"s{k}", lambda k=k: k)
    return payload.value


STEPS3 = define_job(name="steps3", input=In, output=str, run=_steps3)


def _run_files(d: Durably, run_id: str) -> Path:
    matches = list(Path(d.root, "runs").glob(f"*/*/{run_id}"))
    assert len(matches) == 1
    return matches[0]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: max(1, len(data) // 2)])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "nul":
        path.write_bytes(b"\0" * max(16, len(data)))
    elif how == "garbage":
        path.write_bytes(b"\xff\xfe not json \x00")
    else:
        raise ValueError(how)


@pytest.fixture
def damaged(durably_factory: Factory) -> tuple[Durably, dict[str, str]]:
    """A root with a completed run, a pending run, and a healthy pending run."""
    d = durably_factory(preserve_steps=True)
    handle = d.register(STEPS3)
    ids = {"completed": handle.trigger(In(value="c")).id}
    d.process_until_idle()
    ids["pending"] = handle.trigger(In(value="p")).id
    ids["healthy"] = handle.trigger(In(value="h")).id
    return d, ids


class TestDamagedFiles:
    @pytest.mark.parametrize("how", ["truncated", "empty", "nul", "garbage"])
    @pytest.mark.parametrize("which", ["run.json", "state", "journal"])
    def test_damaged_run_file_never_crashes_readers_or_workers(
        self, damaged: tuple[Durably, dict[str, str]], durably_factory: Factory,
        caplog: pytest.LogCaptureFixture, which: str, how: str
    ) -> None:
        """A truncated, empty, NUL-filled or garbage run.json, state file or journal makes
        get_runs/get_run skip the run or raise a clear DurablyError (never a raw parse
        error), and a worker keeps going and finishes the healthy runs."""
        d, ids = damaged
        run_dir = _run_files(d, ids["completed"])
        if which == "run.json":
            target = run_dir / "run.json"
        elif which == "state":
            target = max(run_dir.glob("s.*"), key=lambda p: int(p.name[2:]))
        else:
            target = next(iter([*run_dir.glob("journal.jsonl"), *run_dir.glob("j.*")]))
        _damage(target, how)
        caplog.set_level(logging.DEBUG, logger="durably")
        runs = d.get_runs()
        assert ids["pending"] in [r.id for r in runs]
        try:
            d.get_run(ids["completed"])
            d.get_steps(ids["completed"])
        except durably.DurablyError as exc:  # a clear error is fine; a raw one is not
            message = str(exc)
            assert message
        fresh = durably_factory(preserve_steps=True)
        fresh.register(STEPS3)
        fresh.process_until_idle()
        healthy = fresh.get_run(ids["pending"])
        assert healthy is not None
        assert healthy.status == "completed"

    def test_damaged_run_json_of_a_started_run_is_reported(
        self, damaged: tuple[Durably, dict[str, str]], caplog: pytest.LogCaptureFixture
    ) -> None:
        """A run whose run.json is damaged but which has state files is not silently
        dropped: get_runs warns about it (or get_run raises a clear error)."""
        d, ids = damaged
        _damage(_run_files(d, ids["completed"]) / "run.json", "truncated")
        caplog.set_level(logging.WARNING, logger="durably")
        d.get_runs()
        try:
            d.get_run(ids["completed"])
        except durably.DurablyError:
            return
        assert any(ids["completed"] in r.getMessage() for r in caplog.records)

    def test_damaged_end_state_never_turns_a_completed_run_back_into_a_leased_one(
        self, damaged: tuple[Durably, dict[str, str]], caplog: pytest.LogCaptureFixture
    ) -> None:
        """A completed run whose end-state file is NUL-filled is reported (a clear error or
        a warning), not shown as a leased run that no worker can ever finish."""
        d, ids = damaged
        _damage(_run_files(d, ids["completed"]) / "s.2", "nul")
        caplog.set_level(logging.WARNING, logger="durably")
        try:
            run = d.get_run(ids["completed"])
        except durably.DurablyError:
            return
        assert run is None or run.status != "leased" or any(
            ids["completed"] in r.getMessage() for r in caplog.records), run

    @pytest.mark.parametrize("which", ["run.json", "state", "key", "format.json"])
    def test_newer_format_file_is_refused_clearly_and_left_untouched(
        self, damaged: tuple[Durably, dict[str, str]], durably_factory: Factory,
        caplog: pytest.LogCaptureFixture, which: str
    ) -> None:
        """A file with ``"v": 99`` gives a clear error naming it (or the run is skipped with
        a warning on the ``durably`` logger); workers, get_runs, purge and delete never
        crash on it, and its bytes are unchanged afterwards."""
        d, ids = damaged
        run_dir = _run_files(d, ids["pending"])
        if which == "run.json":
            target = run_dir / "run.json"
        elif which == "state":
            target = run_dir / "s.1"
        elif which == "key":
            target = Path(d.root, "keys", "i", "0" * 32 + ".json")
        else:
            target = Path(d.root, "format.json")
        body = b'{"v": 99, "future": "fields", "id": "' + ids["pending"].encode() + b'"}'
        target.write_bytes(body)
        caplog.set_level(logging.WARNING, logger="durably")

        runs = d.get_runs()  # must not raise
        if which in ("run.json", "state"):
            assert ids["pending"] not in [r.id for r in runs]
            assert any(ids["pending"] in r.getMessage() for r in caplog.records), caplog.text
            with pytest.raises(durably.DurablyError, match="newer"):
                d.get_run(ids["pending"])
        fresh = durably_factory()
        fresh.register(STEPS3)
        if which == "format.json":  # the whole root is from a newer durably: writes refused
            with pytest.raises(durably.DurablyError, match="newer"):
                fresh.process_until_idle()
        else:
            fresh.process_until_idle()  # never raises: the run is skipped
            healthy = fresh.get_run(ids["healthy"])
            assert healthy is not None
            assert healthy.status == "completed"
            fresh.purge_runs(older_than=timedelta(0))
            with pytest.raises(durably.DurablyError):
                fresh.delete_run(ids["pending"])
        assert target.read_bytes() == body


# -- planted symlinks ------------------------------------------------------------------


def _planted(root: Path, run_id: str, where: str) -> Path:
    run_dir = next(root.glob(f"runs/*/*/{run_id}"))
    return {
        "key": root / "keys" / "i" / (files.name_hash("steps3", "k2") + ".json"),
        "run.json": run_dir / "run.json", "lock": run_dir / "lock",
        "next-journal": run_dir / "j.1", "next-state": run_dir / "s.1",
        "format.json": root / "format.json", "tmp": root / "tmp", "locks": root / "locks",
        "queue": root / "queue", "keys": root / "keys", "keys-i": root / "keys" / "i",
        "keys-p": root / "keys" / "p", "keys-x": root / "keys" / "x", "feed": root / "feed",
        "batches": root / "batches",
        "runs": root / "runs", "shard-top": run_dir.parent.parent, "shard": run_dir.parent,
        "run-dir": run_dir,
    }[where]


def _open_fds() -> set[str]:
    """This process's open descriptors and what they point to (Linux; elsewhere: none)."""
    if not os.path.isdir("/proc/self/fd"):
        return set()
    return {f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}" for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


PLANTED_FILES = ("key", "run.json", "lock", "next-journal", "next-state", "format.json")
PLANTED_DIRS = ("tmp", "locks", "queue", "keys", "keys-i", "keys-p", "keys-x", "feed", "batches",
                "runs", "shard-top", "shard", "run-dir")


class TestPlantedSymlinks:
    @pytest.mark.parametrize(("started_after", "where", "moved"), [
        pytest.param(after, where, moved,
                     id=f"{'new-process' if after else 'running'}-{where}{'-moved' if moved else ''}")
        for after in (True, False)
        for where in PLANTED_FILES + PLANTED_DIRS
        for moved in ((False, True) if where in PLANTED_DIRS else (False,))])
    def test_a_symlink_planted_in_the_root_is_refused_and_never_written_through(
        self, tmp_path: Path, durably_factory: Factory, where: str, started_after: bool,
        moved: bool,
    ) -> None:
        """A file or directory of the root replaced by a symlink to something outside it,
        before a process starts or while it runs (a directory either emptied, or moved out
        with its contents and linked back): reads, triggers, batches, workers, cancels,
        deletes, purges, temp clean-up and ``doctor --fix`` raise DurablyError or skip the
        run (never a raw OSError), and nothing outside the root is created or changed."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "target").write_text("precious")
        root = tmp_path / "root"
        d = durably_factory(root_dir=root)
        handle = d.register(STEPS3)
        done = handle.trigger(In(value="d"), idempotency_key="k", concurrency_key="c").id
        handle.batch_trigger([In(value="b")])
        d.process_until_idle()
        pending = handle.trigger(In(value="p"), idempotency_key="k2", concurrency_key="c2").id
        link = _planted(root, pending, where)
        if link.is_dir():
            target = outside
            if moved:
                target = outside / link.name
                link.rename(target)
            else:
                shutil.rmtree(link)
            link.symlink_to(target, target_is_directory=True)
        else:
            link.unlink(missing_ok=True)
            link.symlink_to(outside / "target")
        before = _tree(outside)
        fds = _open_fds()
        fresh = durably_factory(root_dir=root) if started_after else d
        handle = fresh.register(STEPS3)
        actions: dict[str, Callable[[], object]] = {
            "get_runs": fresh.get_runs, "get_run": lambda: fresh.get_run(pending),
            "trigger same key": lambda: handle.trigger(In(value="again"), idempotency_key="k2"),
            "trigger new keys": lambda: handle.trigger(In(value="new"), idempotency_key="new",
                                                       concurrency_key="new"),
            "trigger coalesce": lambda: handle.trigger(In(value="c2"), concurrency_key="c2",
                                                       coalesce="skip"),
            "batch_trigger": lambda: handle.batch_trigger([In(value="b2"), In(value="b3")]),
            "cancel": lambda: fresh.cancel(pending), "process": fresh.process_until_idle,
            "delete_run": lambda: fresh.delete_run(done),
            "purge_runs": lambda: fresh.purge_runs(older_than=timedelta(0)),
            "sweep_tmp": lambda: fresh._store.sweep_tmp(older_than=0),
            "doctor": lambda: durably._doctor.Doctor(str(root)).check(),
        }
        for name, action in actions.items():
            with contextlib.suppress(durably.DurablyError):
                action()
            assert _tree(outside) == before, f"{name} wrote outside the root"
        doctor = durably._doctor.Doctor(str(root))
        doctor.check()
        doctor.fix()  # quarantines the link itself, never what it points to
        assert _tree(outside) == before
        assert (outside / "target").read_text() == "precious"
        assert _open_fds() == fds  # the refusals closed every directory they opened


# -- unstorable step values ------------------------------------------------------------


class Opaque:
    pass


UNSTORABLE: dict[str, tuple[Callable[[], Any], str]] = {
    "nan": (lambda: float("nan"), "float"),
    "inf-in-list": (lambda: [1.0, float("inf")], "list"),
    "big-int": (lambda: 2**70, "int"),
    "set": (lambda: {1, 2}, "set"),
    "object": (Opaque, "Opaque"),
    "tuple-without-returns": (lambda: (1, "a"), "tuple"),
    "bytes": (lambda: b"raw", "bytes"),
    "int-keys": (lambda: {1: "a"}, "dict"),
    "70-MiB": (lambda: "x" * (70 * 1024 * 1024), "str"),
}


class TestUnstorableValues:
    @pytest.mark.parametrize("case", list(UNSTORABLE), ids=list(UNSTORABLE))
    def test_unstorable_value_fails_the_step_and_the_run_once(
        self, durably_factory: Factory, case: str
    ) -> None:
        """A step value that cannot be stored faithfully fails that step with an error
        naming the step and the type; the run fails, and no worker retries it."""
        fn, type_name = UNSTORABLE[case]
        calls = []

        def run(step: Step, payload: In) -> None:
            step.run("first", lambda: "ok")
            step.run(f"bad {case}", lambda: (calls.append(1), fn())[1])

        d = durably_factory()
        handle = d.register(define_job(name="unstorable", input=In, run=run))
        run_id = handle.trigger(In()).id
        assert d.process_until_idle() == 1
        assert d.process_until_idle() == 0
        failed = d.get_run(run_id)
        assert failed is not None
        assert failed.status == "failed"
        assert f"bad {case}" in (failed.error or ""), failed.error
        assert type_name in (failed.error or ""), failed.error
        assert len(failed.error or "") < 2000
        assert calls == [1]
        steps = d.get_steps(run_id)
        assert [(s.name, s.status) for s in steps] == [("first", "completed"),
                                                         (f"bad {case}", "failed")]


    @pytest.mark.parametrize("case", ["nan", "big-int", "set", "tuple-without-returns"])
    def test_unstorable_job_output_fails_the_run_once(
        self, durably_factory: Factory, case: str
    ) -> None:
        """A job (without an output model) returning a value that cannot be stored fails
        the run with an error naming the output and the type; no worker retries it."""
        fn, type_name = UNSTORABLE[case]

        def run(step: Step, payload: In) -> Any:
            step.run("first", lambda: "ok")
            return fn()

        d = durably_factory()
        handle = d.register(define_job(name="bad-output", input=In, run=run))
        run_id = handle.trigger(In()).id
        assert d.process_until_idle() == 1
        assert d.process_until_idle() == 0
        failed = d.get_run(run_id)
        assert failed is not None
        assert failed.status == "failed"
        assert "output" in (failed.error or ""), failed.error
        assert type_name in (failed.error or ""), failed.error


# -- permissions -----------------------------------------------------------------------


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    z = Zygote(tmp_path / "zygote.log")
    yield z
    z.close()


@pytest.mark.slow
class TestPermissions:
    @pytest.mark.parametrize("umask", [0o000, 0o077, 0o022])
    def test_directories_are_0700_and_files_0600_whatever_the_umask(
        self, tmp_path: Path, zygote: Zygote, umask: int
    ) -> None:
        """Under umask 000, 077 or 022, every directory durably creates is 0700 and every
        file 0600: the root, runs, states, journals, keys, queue, locks, feed."""
        root = tmp_path / "root"
        zygote.check("crashapps.jobs:exercise_root", root=str(root), umask=umask)
        seen = {"dirs": 0, "files": 0}
        bad = []
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
                seen["dirs"] += 1
                if mode != 0o700:
                    bad.append((os.path.join(dirpath, name), oct(mode)))
            for name in filenames:
                mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
                seen["files"] += 1
                if mode != 0o600:
                    bad.append((os.path.join(dirpath, name), oct(mode)))
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert bad == []
        assert seen["dirs"] >= 8, seen
        assert seen["files"] >= 8, seen
