"""Bad input: what comes in through the API and what is found in the root.

Hostile names and keys (plan cases S1, S3), crafted run ids (S2), damaged, empty,
NUL-filled, huge, sparse and newer-format files (C8, S8, S9, S10), planted symlinks,
FIFOs and directories (S4, S5), conflict copies of sync tools (S11), values that cannot
be stored (S7, S8), secrets that must never reach an error (S12), and modes under any
umask (S6): the plan table of docs/reliability.md, and invariants 8-10 of
docs/architecture.md (versioned format, names are data, private by default). Errors are
those of docs/errors.md.

Probes of damaged roots run in forked children (``apps.probe:exercise``) that are
killed when they hang, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import stat
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from apps import logged_steps
from apps.children import Zygote
from helpers import run_dir_of, tree
from pydantic import BaseModel

import durably
import durably._doctor
import durably._repair
from durably import Durably, Step, define_job
from durably import _layout as layout
from durably._cli import main as cli_main
from durably._doctor import Doctor
from durably._driver import claim_next
from durably._durably import runtime_of
from durably._locks import HOST
from durably._repair import run as doctor_run

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


STATS: dict[str, int] = {
    "hostile_names": 0,
    "planted_cases": 0,
    "unstorable_values": 0,
    "secret_probes": 0,
    "damaged_files": 0,
    "conflict_copies": 0,
}
_KINDS = {
    "test_names_keys": "hostile_names",
    "test_damaged": "damaged_files",
    "test_newer_format": "future_format_files",
    "test_a_symlink": "planted_symlinks",
    "test_unstorable": "unstorable_values",
    "test_directories_are": "umasks",
}


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


def _bytes_under(path: Path) -> bytes:
    """Every regular file's bytes under ``path``, concatenated."""
    chunks = []
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(p).st_mode):
                with open(p, "rb") as f:
                    chunks.append(f.read())
    return b"\n".join(chunks)


MORE_HOSTILE = {
    "nul-char": "a\x00b",
    "only-nul": "\x00",
    "win-NUL": "NUL",
    "win-COM1": "COM1",
    "win-LPT9": "LPT9",
    "win-aux-ext": "aux.txt",
    "win-trailing-dot": "con.",
    "win-trailing-space": "prn ",
    "10000-ascii": "x" * 10_000,
    "10000-non-ascii": "é" * 10_000,
    "10000-emoji": "🚀" * 10_000,
    "dot-slash-10000": "./" * 5_000,
}
REFUSED_NAMES = {"empty": "", "lone-surrogate": "a\ud800b"}


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
        result = handle.trigger(In(value="v"), idempotency_key=name, concurrency_key=name, labels={"k": name})
        assert d.process_until_idle() == 1
        run_ = handle.get_run(result.id)
        assert run_ is not None, result.id
        assert run_.status == "completed", run_
        assert run_.output == "v" + name
        assert (run_.job_name, run_.idempotency_key, run_.concurrency_key, run_.labels) == (
            name,
            name,
            name,
            {"k": name},
        )
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

    @pytest.mark.parametrize("name", list(MORE_HOSTILE.values()), ids=list(MORE_HOSTILE))
    def test_more_hostile_names_are_data_and_stay_inside_the_root(
        self, tmp_path: Path, durably_factory: Factory, name: str
    ) -> None:
        """NUL characters, Windows device names (which a Windows sync peer cannot create)
        and 10,000-character names as job name, step name, both keys and a label value:
        they work, read back exactly, and every file name in the root stays short ASCII."""
        STATS["hostile_names"] += 1
        outside = tmp_path / "outside"
        outside.mkdir()
        root = outside / "root"
        before = tree(tmp_path)

        def run(step: Step, payload: In) -> str:
            return step.run(name, lambda: payload.value + name)

        d = durably_factory(root_dir=root)
        handle = d.register(define_job(name=name, input=In, output=str, run=run))
        result = handle.trigger(In(value="v"), idempotency_key=name, concurrency_key=name, labels={"k": name})
        assert d.process_until_idle() == 1
        got = handle.get_run(result.id)
        assert got is not None
        assert (got.status, got.output) == ("completed", "v" + name)
        assert (got.job_name, got.idempotency_key, got.concurrency_key, got.labels) == (
            name,
            name,
            name,
            {"k": name},
        )
        assert [s.name for s in d.get_steps(result.id)] == [name]
        assert handle.trigger(In(value="w"), idempotency_key=name).id == result.id
        assert [r.id for r in d.get_runs(job_name=name, labels={"k": name})] == [result.id]
        new = {p for p in tree(tmp_path) if p not in before}
        assert {p for p in new if not p.startswith(os.path.join("outside", "root"))} == set()
        for _, dirnames, filenames in os.walk(root):
            for entry in dirnames + filenames:
                assert entry.isascii(), entry
                assert entry.isprintable(), entry
                assert len(entry) <= 100, entry
                assert entry.upper().split(".")[0] not in ("CON", "NUL", "COM1", "LPT9", "AUX", "PRN")

    @pytest.mark.parametrize("name", list(REFUSED_NAMES.values()), ids=list(REFUSED_NAMES))
    def test_names_the_api_forbids_are_refused_before_anything_is_written(
        self, tmp_path: Path, durably_factory: Factory, name: str
    ) -> None:
        """An empty name or key, or one that is not valid unicode, is a ValidationError, and
        the root is unchanged afterwards."""
        STATS["hostile_names"] += 1
        d = durably_factory()
        handle = d.register(define_job(name="ok", input=In, run=lambda step, p: None))
        runtime_of(d).store.ensure_ready()
        before = tree(Path(d.root))
        with pytest.raises(durably.ValidationError):
            define_job(name=name, input=In, run=lambda step, p: None)
        for option in ("idempotency_key", "concurrency_key"):
            key: dict[str, Any] = {option: name}
            with pytest.raises(durably.ValidationError):
                handle.trigger(In(), **key)
        if name:
            with pytest.raises(durably.ValidationError):
                handle.trigger(In(), labels={"k": name})
        assert tree(Path(d.root)) == before


class TestKeyHashCollisions:
    @pytest.mark.parametrize("kind", ["idempotency", "concurrency"])
    def test_key_hash_collision_is_refused_not_merged(
        self, durably_factory: Factory, monkeypatch: pytest.MonkeyPatch, kind: str
    ) -> None:
        """Key files are named by a hash of (job, key) and keep the key inside (invariant 9
        of docs/architecture.md: names are hashed, the original kept inside the file, so a
        collision can be detected). Two keys whose hashes collide must not share a run: the
        second trigger is refused with an error naming the key file; it never returns the
        first key's run as its own."""
        d = durably_factory()
        handle = d.register(define_job(name="collide", input=In, run=lambda step, p: p.value))
        real = layout.name_hash
        monkeypatch.setattr(layout, "name_hash", lambda *parts: real("one hash for every key"))
        option = "idempotency_key" if kind == "idempotency" else "concurrency_key"
        extra: dict[str, Any] = {} if kind == "idempotency" else {"coalesce": "skip"}
        alpha: dict[str, Any] = {option: "alpha", **extra}
        beta: dict[str, Any] = {option: "beta", **extra}
        first = handle.trigger(In(value="alpha"), **alpha)
        with pytest.raises(durably.ConflictError, match="keys"):
            handle.trigger(In(value="beta"), **beta)
        assert [r.id for r in d.get_runs()] == [first.id]
        run = d.get_run(first.id)
        assert run is not None
        assert getattr(run, option) == "alpha"


BAD_IDS = [
    "../../x",
    "/etc/passwd",
    "",
    ".",
    "..",
    "0" * 10_000,
    "01ABC\x00",
    "01HZZZZZZZZZZZZZZZZZZZZZZ/",
    "01hzzzzzzzzzzzzzzzzzzzzzzz",
    "01HZZZZZZZZZZZZZZZZZZZZZZI",
]


class TestRunIds:
    def test_bad_run_ids_never_reach_the_file_system(
        self, tmp_path: Path, durably_factory: Factory, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Crafted run ids given to every API and CLI entry point, and a key record on disk
        naming ``../../x``: NotFoundError (or None), a CLI error exit, no file created or
        changed anywhere, and a trigger of that key simply creates a fresh run."""
        outside = tmp_path / "outside"
        (outside / "x").mkdir(parents=True)
        root = outside / "a" / "root"
        d = durably_factory(root_dir=root)
        handle = d.register(define_job(name="ids", input=In, run=lambda step, p: p.value))
        done = handle.trigger(In(value="done"), idempotency_key="k").id
        d.process_until_idle()
        before = tree(tmp_path)
        for bad in BAD_IDS:
            assert d.get_run(bad) is None, bad
            for call in (
                d.get_steps,
                d.get_logs,
                d.cancel,
                d.delete_run,
                d.retrigger,
                d.resume,
                lambda r: d.resume(r, from_step="s"),
                lambda r: d.wait_for_run(r, timeout=0),
            ):
                with pytest.raises(durably.NotFoundError):
                    call(bad)
            if "\x00" in bad or not bad:
                continue  # argv cannot carry these
            for command in ("show", "logs", "cancel", "delete"):
                assert cli_main([command, "--root", str(root), bad]) == 1, (command, bad)
                assert "not found" in capsys.readouterr().err.lower(), (command, bad)
        assert tree(tmp_path) == before
        # A key record on disk naming a crafted run id is stale, never followed.
        key = next((root / "keys" / "i").iterdir())
        key.write_bytes(b'{"v": 1, "run": "../../x", "job": "ids", "host": "%s"}' % HOST.encode())
        res = handle.trigger(In(value="again"), idempotency_key="k")
        assert res.disposition == "created"
        assert res.id != done
        assert sorted(os.listdir(outside / "x")) == []
        problems = Doctor(str(root)).check()
        assert problems == [], problems


# -- damaged and newer-format files --------------------------------------------------


def _identity(k: int) -> int:
    return k


def _steps3(step: Step, payload: In) -> str:
    for k in range(3):
        step.run(f"s{k}", partial(_identity, k))
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


PLANT_WHERE = [
    "run.json",
    "next-state",
    "head-state",
    "next-journal",
    "journal",
    "key",
    "format.json",
    "feed",
    "lock",
    "marker",
]


def _plant_target(root: Path, d: Durably, ids: dict[str, str], where: str) -> Path:
    pending = run_dir_of(d, ids["pending"])
    done = run_dir_of(d, ids["done"])
    leased = run_dir_of(d, ids["leased"])
    if where == "feed":
        names = sorted(os.listdir(root / "feed"))
        return root / "feed" / names[-1]
    if where == "marker":
        return root / "queue" / next(n for n in os.listdir(root / "queue") if n.startswith(ids["pending"]))
    return {
        "run.json": Path(done) / "run.json",
        "next-state": Path(pending) / "s.1",
        "head-state": Path(done) / "s.2",
        "next-journal": Path(pending) / "j.1",
        "journal": Path(leased) / "j.1",
        "lock": Path(pending) / "lock",
        "key": root / "keys" / "i" / (layout.name_hash("logged-steps", "k2") + ".json"),
        "format.json": root / "format.json",
    }[where]


def _damaged_root(root: Path) -> tuple[Durably, dict[str, str]]:
    d = logged_steps.make(str(root), fsync=False)
    handle = d.get_job("logged-steps")
    assert handle is not None
    ids = {"done": handle.trigger(logged_steps.StepsIn(steps=2), idempotency_key="k1").id}
    d.process_until_idle()
    ids["leased"] = handle.trigger(logged_steps.StepsIn(steps=3)).id
    claim = claim_next(runtime_of(d))
    assert claim is not None
    claim.append(
        {"k": "done", "s": "s0", "i": 0, "t": "2026-01-01T00:00:00.000Z", "o": logged_steps.value_of(0, "")},
        sync=False,
    )
    claim.release()
    ids["pending"] = handle.trigger(
        logged_steps.StepsIn(steps=2), idempotency_key="k2", concurrency_key="c2"
    ).id
    ids["healthy"] = handle.trigger(logged_steps.StepsIn(steps=2)).id
    return d, ids


def _probe(zygote: Zygote, tmp_path: Path, root: Path, ids: list[str], **kwargs: Any) -> dict[str, Any]:
    out = tmp_path / "probe.json"
    pid = zygote.spawn("apps.probe:exercise", root=str(root), out=str(out), ids=ids, **kwargs)
    code = zygote.wait(pid, timeout=30)  # a hung child is killed and fails the test here
    assert code == 0, f"probe exited {code}:\n{zygote.stderr()}"
    return dict(json.loads(out.read_text()))


def _by_action(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["action"]: o for o in result["outcomes"]}


SPARSE = 4 << 30


DAMAGED_WHERE = ["run.json", "head-state", "key", "format.json", "journal-with-cut"]


class TestDamagedFiles:
    @pytest.mark.parametrize("how", ["truncated", "empty", "nul", "garbage"])
    @pytest.mark.parametrize("which", ["run.json", "state", "journal"])
    def test_damaged_run_file_never_crashes_readers_or_workers(
        self,
        damaged: tuple[Durably, dict[str, str]],
        durably_factory: Factory,
        caplog: pytest.LogCaptureFixture,
        which: str,
        how: str,
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
        assert (
            run is None
            or run.status != "leased"
            or any(ids["completed"] in r.getMessage() for r in caplog.records)
        ), run

    @pytest.mark.parametrize("which", ["run.json", "state", "key", "format.json"])
    def test_newer_format_file_is_refused_clearly_and_left_untouched(
        self,
        damaged: tuple[Durably, dict[str, str]],
        durably_factory: Factory,
        caplog: pytest.LogCaptureFixture,
        which: str,
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

    @pytest.mark.slow
    @pytest.mark.parametrize("where", ["run.json", "head-state", "next-state", "key", "journal"])
    def test_huge_sparse_files_are_refused_without_reading_them(
        self, tmp_path: Path, zygote: Zygote, where: str
    ) -> None:
        """A 4 GiB sparse file planted as a record, a state, a key record or a journal (a
        truncate, or what a broken sync leaves): readers, triggers and workers refuse or skip
        it at once, under an address-space limit of 1 GiB (reading it whole would need 4),
        and the healthy runs complete."""
        STATS["damaged_files"] += 1
        root = tmp_path / "root"
        d, ids = _damaged_root(root)
        target = _plant_target(root, d, ids, where)
        with open(target, "ab") as f:
            f.truncate(SPARSE)
        result = _probe(zygote, tmp_path, root, list(ids.values()), rlimit_mb=1024)
        outcomes = _by_action(result)
        unclear = [o for o in result["outcomes"] if "error" in o and not o["clear"]]
        assert unclear == [], unclear
        after = dict(outcomes["get_runs after"].get("value") or [])
        assert after.get(ids["healthy"]) == "completed", outcomes
        assert result["maxrss_kb"] < 512 * 1024, result["maxrss_kb"]

    def test_a_record_nested_beyond_the_parser_limit_reads_as_damaged(
        self, durably_factory: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A state file nested 1,100 deep (past orjson's 1,024) is damaged data, reported on
        the durably logger and by doctor, never a crash."""
        d = durably_factory()
        handle = d.register(define_job(name="deep", input=In, run=lambda step, p: None))
        run_id = handle.trigger(In()).id
        d.process_until_idle()
        s2 = Path(run_dir_of(d, run_id)) / "s.2"
        s2.write_bytes(b'{"v": 1, "x": ' + b"[" * 1100 + b"]" * 1100 + b"}")
        caplog.set_level(logging.WARNING, logger="durably")
        d.get_runs()
        with contextlib.suppress(durably.DurablyError):
            d.get_run(run_id)
        assert any(str(s2) in r.getMessage() for r in caplog.records), caplog.text
        assert ("corrupt", os.path.relpath(s2, d.root)) in {(p.kind, p.path) for p in Doctor(d.root).check()}

    @pytest.mark.parametrize("how", ["empty", "nul"])
    @pytest.mark.parametrize("where", DAMAGED_WHERE)
    def test_empty_and_nul_filled_files_are_reported_clearly(
        self, tmp_path: Path, durably_factory: Factory, caplog: pytest.LogCaptureFixture, where: str, how: str
    ) -> None:
        """An empty or NUL-filled file (what a power loss leaves where a name reached the
        disk before its bytes): a reader meeting it raises a DurablyError or logs a warning
        that names the file; ``durably doctor`` reports it with its path, saying "empty" or
        "NUL-filled"; nothing else changes it."""
        STATS["damaged_files"] += 1
        d = durably_factory(preserve_steps=True)
        handle = d.register(
            define_job(
                name="dmg",
                input=In,
                run=lambda step, p: [step.run(f"s{k}", partial(_identity, k)) for k in range(3)],
            )
        )
        done = handle.trigger(In(), idempotency_key="k").id
        d.process_until_idle()
        root = Path(d.root)
        run_dir = Path(run_dir_of(d, done))
        if where == "journal-with-cut":
            leased = handle.trigger(In()).id
            claim = claim_next(runtime_of(d))
            assert claim is not None
            for k in range(3):
                claim.append(
                    {"k": "done", "s": f"s{k}", "i": k, "t": "2026-01-01T00:00:00.000Z", "o": k}, sync=False
                )
            claim.release()
            d.cancel(leased)  # s.2 fixes j.1's committed length
            done, run_dir = leased, Path(run_dir_of(d, leased))
        target = {
            "run.json": run_dir / "run.json",
            "head-state": run_dir / "s.2",
            "key": next((root / "keys" / "i").iterdir()),
            "format.json": root / "format.json",
            "journal-with-cut": run_dir / "j.1",
        }[where]
        size = target.stat().st_size
        target.write_bytes(b"" if how == "empty" else b"\0" * size)
        body = target.read_bytes()
        caplog.set_level(logging.WARNING, logger="durably")
        errors = []
        reader = durably_factory(preserve_steps=True)  # a process started after the damage
        for read in (reader.get_runs, lambda: reader.get_run(done), lambda: reader.get_steps(done)):
            try:
                read()
            except durably.DurablyError as exc:
                errors.append(str(exc))
        said = errors + [r.getMessage() for r in caplog.records]
        if where in ("run.json", "head-state", "journal-with-cut"):
            assert any(str(target) in m for m in said), said
        problems = {(p.kind, p.path): p.message for p in Doctor(d.root).check()}
        rel = os.path.relpath(target, root)
        assert ("corrupt", rel) in problems, problems
        if where != "journal-with-cut":
            assert ("empty" if how == "empty" else "NUL-filled") in problems[("corrupt", rel)]
        fresh = durably_factory(preserve_steps=True)
        fresh.register(define_job(name="dmg", input=In, run=lambda step, p: None))
        with contextlib.suppress(durably.DurablyError):
            fresh.process_until_idle()
            fresh.purge_runs(older_than=timedelta(days=1))
        assert target.read_bytes() == body


# -- planted symlinks ------------------------------------------------------------------


def _planted(root: Path, run_id: str, where: str) -> Path:
    run_dir = next(root.glob(f"runs/*/*/{run_id}"))
    return {
        "key": root / "keys" / "i" / (layout.name_hash("steps3", "k2") + ".json"),
        "run.json": run_dir / "run.json",
        "lock": run_dir / "lock",
        "next-journal": run_dir / "j.1",
        "next-state": run_dir / "s.1",
        "format.json": root / "format.json",
        "tmp": root / "tmp",
        "locks": root / "locks",
        "queue": root / "queue",
        "keys": root / "keys",
        "keys-i": root / "keys" / "i",
        "keys-p": root / "keys" / "p",
        "keys-x": root / "keys" / "x",
        "feed": root / "feed",
        "batches": root / "batches",
        "runs": root / "runs",
        "shard-top": run_dir.parent.parent,
        "shard": run_dir.parent,
        "run-dir": run_dir,
    }[where]


def _open_fds() -> set[str]:
    """This process's open descriptors and what they point to (Linux; elsewhere: none)."""
    if not os.path.isdir("/proc/self/fd"):
        return set()
    return {
        f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}"
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    }


PLANTED_FILES = ("key", "run.json", "lock", "next-journal", "next-state", "format.json")
PLANTED_DIRS = (
    "tmp",
    "locks",
    "queue",
    "keys",
    "keys-i",
    "keys-p",
    "keys-x",
    "feed",
    "batches",
    "runs",
    "shard-top",
    "shard",
    "run-dir",
)


class TestPlantedSymlinks:
    @pytest.mark.parametrize(
        ("started_after", "where", "moved"),
        [
            pytest.param(
                after,
                where,
                moved,
                id=f"{'new-process' if after else 'running'}-{where}{'-moved' if moved else ''}",
            )
            for after in (True, False)
            for where in PLANTED_FILES + PLANTED_DIRS
            for moved in ((False, True) if where in PLANTED_DIRS else (False,))
        ],
    )
    def test_a_symlink_planted_in_the_root_is_refused_and_never_written_through(
        self,
        tmp_path: Path,
        durably_factory: Factory,
        where: str,
        started_after: bool,
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
            "get_runs": fresh.get_runs,
            "get_run": lambda: fresh.get_run(pending),
            "trigger same key": lambda: handle.trigger(In(value="again"), idempotency_key="k2"),
            "trigger new keys": lambda: handle.trigger(
                In(value="new"), idempotency_key="new", concurrency_key="new"
            ),
            "trigger coalesce": lambda: handle.trigger(In(value="c2"), concurrency_key="c2", coalesce="skip"),
            "batch_trigger": lambda: handle.batch_trigger([In(value="b2"), In(value="b3")]),
            "cancel": lambda: fresh.cancel(pending),
            "process": fresh.process_until_idle,
            "delete_run": lambda: fresh.delete_run(done),
            "purge_runs": lambda: fresh.purge_runs(older_than=timedelta(0)),
            "sweep_tmp": lambda: runtime_of(fresh).store.sweep_tmp(older_than=0),
            "doctor": lambda: durably._doctor.Doctor(str(root)).check(),
        }
        for name, action in actions.items():
            with contextlib.suppress(durably.DurablyError):
                action()
            assert _tree(outside) == before, f"{name} wrote outside the root"
        doctor = durably._doctor.Doctor(str(root))
        doctor.check()
        durably._repair.repair(doctor)  # quarantines the link itself, never what it points to
        assert _tree(outside) == before
        assert (outside / "target").read_text() == "precious"
        assert _open_fds() == fds  # the refusals closed every directory they opened


@pytest.mark.slow
class TestPlantedFifosAndDirectories:
    @pytest.mark.parametrize("kind", ["fifo", "directory"])
    @pytest.mark.parametrize("where", PLANT_WHERE)
    def test_fifo_or_directory_where_a_file_belongs_is_refused_without_hanging(
        self, tmp_path: Path, zygote: Zygote, where: str, kind: str
    ) -> None:
        """A FIFO or a directory planted where durably keeps a file (a run's record, state,
        journal or lock, a key record, format.json, the change feed, a queue marker): no
        reader, trigger, worker, ``changes()`` or doctor hangs on it (a FIFO blocks an open
        for reading or writing until a peer appears); every error is a DurablyError; the
        healthy runs still complete; and ``durably doctor`` reports the planted path."""
        STATS["planted_cases"] += 1
        root = tmp_path / "root"
        d, ids = _damaged_root(root)
        target = _plant_target(root, d, ids, where)
        if target.exists():
            target.unlink()
        if kind == "fifo":
            os.mkfifo(target, 0o600)
        else:
            target.mkdir(mode=0o700)
        result = _probe(zygote, tmp_path, root, list(ids.values()))
        outcomes = _by_action(result)
        unclear = [o for o in result["outcomes"] if "error" in o and not o["clear"]]
        assert unclear == [], unclear
        if where != "format.json":  # a root whose format.json is not a file refuses writes
            after = dict(outcomes["get_runs after"].get("value") or [])
            assert after.get(ids["healthy"]) == "completed", outcomes
        doctor = outcomes["doctor"]
        assert "value" in doctor, doctor
        rel = os.path.relpath(target, root)
        assert rel in {path for _, path in doctor["value"]}, (rel, doctor["value"])


class TestConflictCopies:
    def test_conflict_copies_are_reported_and_left_untouched(
        self, tmp_path: Path, durably_factory: Factory
    ) -> None:
        """Copies that sync tools make when two writers meet (Dropbox ``(conflicted copy)``,
        Syncthing ``.sync-conflict-…``) next to run records, states, journals, key records,
        queue markers and run directories: readers and workers ignore them (the runs read
        as before and complete), nothing rewrites or removes them, and doctor reports each
        one with its path; ``--fix`` moves them into the quarantine with their bytes."""
        d = durably_factory(preserve_steps=True)
        handle = d.register(
            define_job(
                name="cc",
                input=In,
                run=lambda step, p: [step.run(f"s{k}", partial(_identity, k)) for k in range(2)],
            )
        )
        done = handle.trigger(In(value="d"), idempotency_key="k").id
        d.process_until_idle()
        pending = handle.trigger(In(value="p"), concurrency_key="c").id
        root = Path(d.root)
        done_dir, pending_dir = Path(run_dir_of(d, done)), Path(run_dir_of(d, pending))
        key = next((root / "keys" / "i").iterdir())
        marker = next((root / "queue").iterdir())
        copies = {
            done_dir / "run (conflicted copy).json": (done_dir / "run.json").read_bytes(),
            done_dir / "s.2.sync-conflict-20261128-101010-ABCDEFG": (done_dir / "s.2").read_bytes(),
            done_dir / "journal.sync-conflict-20261128-101010-ABCDEFG.jsonl": (
                done_dir / "journal.jsonl"
            ).read_bytes(),
            pending_dir / "s.1 (conflicted copy 2026-11-28)": b'{"v":1,"kind":"cancelled","gen":0}',
            pending_dir / "j.1.sync-conflict-20261128-101010-ABCDEFG": b"",
            key.with_name(key.stem + " (conflicted copy).json"): key.read_bytes(),
            marker.with_name(marker.name + ".sync-conflict-20261128-101010-ABCDEFG"): b"",
            root / "format (conflicted copy).json": (root / "format.json").read_bytes(),
            done_dir.with_name(done + " (1)") / "run.json": (done_dir / "run.json").read_bytes(),
        }
        for path, data in copies.items():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, 0o600)
        STATS["conflict_copies"] += len(copies)
        snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in copies}
        runs = {r.id: r.status for r in d.get_runs()}
        assert runs == {done: "completed", pending: "pending"}
        assert [s.name for s in d.get_steps(done)] == ["s0", "s1"]
        assert handle.trigger(In(), idempotency_key="k").id == done
        assert d.process_until_idle() == 1
        d.purge_runs(older_than=timedelta(days=1))
        assert d.get_run(pending).status == "completed"  # type: ignore[union-attr]
        assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in copies} == snapshot
        problems = {(p.kind, p.path) for p in Doctor(d.root).check()}
        expected = {os.path.relpath(p, root) for p in copies}
        expected.discard(os.path.relpath(done_dir.with_name(done + " (1)") / "run.json", root))
        expected.add(os.path.relpath(done_dir.with_name(done + " (1)"), root))
        reported = {path for kind, path in problems if kind in ("unexpected", "bad-marker")}
        assert expected <= reported, sorted(expected - reported)
        assert doctor_run(d.root, fix=True, as_json=True, out=io.StringIO()) == 0
        for path, (data, _) in snapshot.items():
            moved = list((root / "quarantine").glob("*/" + os.path.relpath(path, root)))
            assert [m.read_bytes() for m in moved] == [data], path


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


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


NOT_ROUND_TRIPPING: dict[str, Callable[[], Any]] = {
    "nan": lambda: {"x": float("nan")},
    "inf": lambda: [float("inf")],
    "minus-inf": lambda: -float("inf"),
    "2**64": lambda: 2**64,
    "-2**63-1": lambda: -(2**63) - 1,
    "deep-300": lambda: _deep(300),
    "deep-2000": lambda: _deep(2000),
    "70-MiB": lambda: "y" * (70 << 20),
    "surrogate": lambda: "a\udcffb",
}


class AnyIn(BaseModel):
    value: Any = None


class TestUnstorableValues:
    @pytest.mark.parametrize("case", list(UNSTORABLE), ids=list(UNSTORABLE))
    def test_unstorable_value_fails_the_step_and_the_run_once(
        self, durably_factory: Factory, case: str
    ) -> None:
        """A step value that cannot be stored faithfully fails that step with an error
        naming the step and the type; the run fails, and no worker retries it."""
        fn, type_name = UNSTORABLE[case]
        calls = []

        def bad() -> Any:
            calls.append(1)
            return fn()

        def run(step: Step, payload: In) -> None:
            step.run("first", lambda: "ok")
            step.run(f"bad {case}", bad)

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
        assert [(s.name, s.status) for s in steps] == [("first", "completed"), (f"bad {case}", "failed")]

    @pytest.mark.parametrize("case", ["nan", "big-int", "set", "tuple-without-returns"])
    def test_unstorable_job_output_fails_the_run_once(self, durably_factory: Factory, case: str) -> None:
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

    @pytest.mark.parametrize("case", list(NOT_ROUND_TRIPPING), ids=list(NOT_ROUND_TRIPPING))
    def test_values_that_do_not_round_trip_are_refused_before_anything_is_written(
        self, durably_factory: Factory, case: str
    ) -> None:
        """NaN, infinities, ints beyond 64 bits, 300- and 2000-deep nesting, 70 MiB (over
        the 64 MiB cap) and lone surrogates: as a trigger's input they raise ValidationError
        and the root is unchanged; as a step's value or a job's output they fail the step or
        run once with an error naming the cause (and not the value), and nothing of the value
        reaches a file."""
        STATS["unstorable_values"] += 1
        make = NOT_ROUND_TRIPPING[case]
        d = durably_factory(preserve_steps=True)
        root = Path(d.root)

        def job(step: Step, payload: AnyIn) -> Any:
            step.run("ok", lambda: "fine")
            if payload.value == "step":
                step.run("bad", make)
            return make()

        handle = d.register(define_job(name="unstorable", input=AnyIn, run=job))
        runtime_of(d).store.ensure_ready()
        before = tree(root)
        with pytest.raises(durably.ValidationError):
            handle.trigger(AnyIn(value=make()))
        assert tree(root) == before
        for where in ("step", "output"):
            run_id = handle.trigger(AnyIn(value=where)).id
            assert d.process_until_idle() == 1
            assert d.process_until_idle() == 0  # failed once, never retried
            run = d.get_run(run_id)
            assert run is not None
            assert run.status == "failed", (where, run)
            assert run.output is None
            assert len(run.error or "") < 2000, run.error
            steps = [(s.name, s.status) for s in d.get_steps(run_id)]
            assert steps == (
                [("ok", "completed"), ("bad", "failed")] if where == "step" else [("ok", "completed")]
            ), steps
        stored = _bytes_under(root)
        assert b"y" * 1024 not in stored
        assert b"leaf" not in stored

    def test_a_20_mib_value_is_stored_and_read_back_whole(self, durably_factory: Factory) -> None:
        """20 MiB is under the documented 64 MiB cap (``durably._codec.MAX_VALUE_BYTES``): it
        is stored, replayed and read back exactly; the cap itself is covered above."""
        big = secrets.token_hex(8) * ((20 << 20) // 16)

        def job(step: Step, payload: In) -> int:
            return len(step.run("big", lambda: big))

        d = durably_factory(preserve_steps=True)
        handle = d.register(define_job(name="big", input=In, output=int, run=job))
        run_id = handle.trigger(In()).id
        d.process_until_idle()
        run = d.get_run(run_id)
        assert run is not None
        assert (run.status, run.output) == ("completed", len(big))
        assert d.get_steps(run_id)[0].output == big


class Typed(BaseModel):
    count: int


class TestSecrets:
    def test_secrets_in_step_values_never_appear_in_errors_logs_or_doctor(
        self, tmp_path: Path, durably_factory: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A secret inside step values, job outputs and inputs that fail to validate or to
        store (wrong type for ``returns=``, wrong output schema, NaN or a big int next to the
        secret, a stored value that no longer matches on replay, invalid input): it never
        appears in an exception's text or traceback, a run's or step's error or traceback, a
        worker error, the durably log, or ``durably doctor`` output."""
        secret = "S3CR3T-" + secrets.token_hex(12)  # never a literal: tracebacks show source
        caplog.set_level(logging.DEBUG, logger="durably")
        d = durably_factory(preserve_steps=True)
        errors: list[str] = []
        d.on("worker:error", lambda ev: errors.append(ev.error))
        d.on("step:fail", lambda ev: errors.append(ev.error))
        d.on("run:fail", lambda ev: errors.append(ev.error))
        mode = {"replay": False}

        def job(step: Step, payload: In) -> Any:
            case = payload.value
            step.run("plain", lambda: {"secret": secret})
            if case == "returns":
                step.run("typed", lambda: secret, returns=int)
            elif case == "nan":
                step.run("nan", lambda: {"secret": secret, "bad": float("nan")})
            elif case == "bigint":
                step.run("big", lambda: [secret, 2**80])
            elif case == "set":
                step.run("set", lambda: {secret})
            elif case == "replay":
                step.run("changes", lambda: secret, returns=int if mode["replay"] else str)
                if not mode["replay"]:
                    raise KeyboardInterrupt  # the worker dies; the run stays leased
            return {"count": secret}

        handle = d.register(define_job(name="leaky", input=In, output=Typed, run=job))
        texts: list[str] = []
        for case in ("returns", "nan", "bigint", "set", "output", "replay"):
            STATS["secret_probes"] += 1
            run_id = handle.trigger(In(value=case)).id
            with contextlib.suppress(KeyboardInterrupt):
                d.process_until_idle()
            if case == "replay":
                mode["replay"] = True
                d.process_until_idle()
            run = d.get_run(run_id)
            assert run is not None
            assert run.status == "failed", (case, run)
            texts += [run.error or "", str(runtime_of(d).store.load(run_id).head)]  # type: ignore[union-attr]
            for s in d.get_steps(run_id):
                texts += [s.error or "", s.traceback or ""]
            with pytest.raises(durably.RunFailedError) as info:
                d.wait_for_run(run_id, timeout=0)
            texts.append("".join(traceback.format_exception(info.value)))
        for bad_input in ({"count": secret}, {"value": 2**80, "note": secret}):
            STATS["secret_probes"] += 1
            typed = d.register(define_job(name=f"typed-{len(texts)}", input=Typed, run=lambda s, p: None))
            with pytest.raises(durably.ValidationError) as invalid:
                typed.trigger(bad_input)
            texts.append("".join(traceback.format_exception(invalid.value)))
        # doctor over damaged files that hold the secret
        damaged = [p for p in Path(d.root).rglob("j.*") if secret.encode() in p.read_bytes()]
        assert damaged
        for p in damaged:
            data = p.read_bytes()
            p.write_bytes(data[: data.index(secret.encode()) + 4] + b"\n" + data)
        out = io.StringIO()
        doctor_run(d.root, fix=False, as_json=False, out=out)
        texts.append(out.getvalue())
        texts += errors + [r.getMessage() for r in caplog.records]
        leaks = [t for t in texts if secret in t]
        assert leaks == [], leaks[0][:3000]
        assert any("count" in t for t in texts)  # the messages still name the field


# -- permissions -----------------------------------------------------------------------


@pytest.mark.slow
class TestPermissions:
    @pytest.mark.parametrize("umask", [0o000, 0o077, 0o022, 0o277, 0o777, 0o027, 0o137], ids=oct)
    def test_directories_are_0700_and_files_0600_whatever_the_umask(
        self, tmp_path: Path, zygote: Zygote, umask: int
    ) -> None:
        """Under the usual umasks (000, 077, 022), umasks that take away the owner's own
        bits (0277, 0777) and umasks that leave group bits (0027, 0137), every directory
        durably creates is 0700 and every file 0600: the root, runs, states, journals,
        keys, queue, locks, feed (a umask of 0277 would otherwise leave 0500 directories
        that the owner cannot write, unless root)."""
        root = tmp_path / "root"
        zygote.check("apps.crash_jobs:exercise_root", root=str(root), umask=umask)
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

    def test_a_group_or_world_writable_root_is_reported(
        self, tmp_path: Path, durably_factory: Factory
    ) -> None:
        """A root that others may write into is reported by doctor, naming its mode."""
        d = durably_factory(root_dir=tmp_path / "root")
        runtime_of(d).store.ensure_ready()
        os.chmod(d.root, 0o777)
        out = io.StringIO()
        assert doctor_run(d.root, fix=False, as_json=True, out=out) == 1
        report = json.loads(out.getvalue())
        assert [(p["kind"], p["path"]) for p in report["problems"]] == [("permissions", ".")]
        assert "0777" in report["problems"][0]["message"]
