"""Hostile input the rest of the suite did not reach (plan S1-S3, S5-S9, S11, S12, C8).

- names and keys: NUL, empty, Windows device names, 10,000 characters (S1);
- a hash collision between two keys is refused, never merged (S3, DESIGN.md inv. 9);
- run ids from outside (API, CLI, a key record on disk) never reach the file system (S2);
- FIFOs and directories planted where durably keeps a file: refused without hanging,
  and reported by ``durably doctor`` (S5);
- modes under any umask (S6); values that do not round-trip, refused before anything
  is written (S7); huge and sparse files refused without reading them (S8);
- empty and NUL-filled files reported clearly by readers and doctor (C8, S9);
- conflict copies of sync tools reported and left untouched (S11);
- a secret in a step's value never appears in an error, a log line or doctor output (S12).

Probes of damaged roots run in forked children (``gapapp.exercise``) that are killed
when they hang, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import gapapp
import pytest
from crashapps.proc import Zygote
from helpers import tree
from pydantic import BaseModel

import durably
from durably import Durably, Step, define_job
from durably import _files as files
from durably._cli import main as cli_main
from durably._doctor import Doctor
from durably._doctor import run as doctor_run
from durably._store import HOST

Factory = Callable[..., Durably]
STATS: dict[str, int] = {"hostile_names": 0, "planted_cases": 0, "unstorable_values": 0,
                         "secret_probes": 0, "damaged_files": 0, "conflict_copies": 0}




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


class In(BaseModel):
    value: str = ""


# -- S1: more hostile names --------------------------------------------------------------

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


@pytest.mark.parametrize("name", list(MORE_HOSTILE.values()), ids=list(MORE_HOSTILE))
def test_more_hostile_names_are_data_and_stay_inside_the_root(
        tmp_path: Path, durably_factory: Factory, name: str) -> None:
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
    result = handle.trigger(In(value="v"), idempotency_key=name, concurrency_key=name,
                            labels={"k": name})
    assert d.process_until_idle() == 1
    got = handle.get_run(result.id)
    assert got is not None
    assert (got.status, got.output) == ("completed", "v" + name)
    assert (got.job_name, got.idempotency_key, got.concurrency_key, got.labels) == \
        (name, name, name, {"k": name})
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
        tmp_path: Path, durably_factory: Factory, name: str) -> None:
    """An empty name or key, or one that is not valid unicode, is a ValidationError, and
    the root is unchanged afterwards."""
    STATS["hostile_names"] += 1
    d = durably_factory()
    handle = d.register(define_job(name="ok", input=In, run=lambda step, p: None))
    d._store.ensure_ready()
    before = tree(Path(d.root))
    with pytest.raises(durably.ValidationError):
        define_job(name=name, input=In, run=lambda step, p: None)
    for option in ("idempotency_key", "concurrency_key"):
        with pytest.raises(durably.ValidationError):
            handle.trigger(In(), **{option: name})
    if name:
        with pytest.raises(durably.ValidationError):
            handle.trigger(In(), labels={"k": name})
    assert tree(Path(d.root)) == before


# -- S3: hash collisions between keys ----------------------------------------------------


@pytest.mark.parametrize("kind", ["idempotency", "concurrency"])
def test_key_hash_collision_is_refused_not_merged(
        durably_factory: Factory, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Key files are named by a hash of (job, key) and keep the key inside (DESIGN.md
    invariant 9: "keep the original inside the file to detect collisions"). Two keys
    whose hashes collide must not share a run: the second trigger is refused with an
    error naming the key file; it never returns the first key's run as its own."""
    d = durably_factory()
    handle = d.register(define_job(name="collide", input=In, run=lambda step, p: p.value))
    real = files.name_hash
    monkeypatch.setattr(files, "name_hash", lambda *parts: real("one hash for every key"))
    option = "idempotency_key" if kind == "idempotency" else "concurrency_key"
    extra: dict[str, Any] = {} if kind == "idempotency" else {"coalesce": "skip"}
    first = handle.trigger(In(value="alpha"), **{option: "alpha"}, **extra)
    with pytest.raises(durably.ConflictError, match="keys"):
        handle.trigger(In(value="beta"), **{option: "beta"}, **extra)
    assert [r.id for r in d.get_runs()] == [first.id]
    run = d.get_run(first.id)
    assert run is not None
    assert getattr(run, option) == "alpha"


# -- S2: run ids from outside ------------------------------------------------------------

BAD_IDS = ["../../x", "/etc/passwd", "", ".", "..", "0" * 10_000, "01ABC\x00", "01HZZZZZZZZZZZZZZZZZZZZZZ/",
           "01hzzzzzzzzzzzzzzzzzzzzzzz", "01HZZZZZZZZZZZZZZZZZZZZZZI"]


def test_bad_run_ids_never_reach_the_file_system(tmp_path: Path, durably_factory: Factory,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
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
        for call in (d.get_steps, d.get_logs, d.cancel, d.delete_run, d.retrigger,
                     lambda r: d.wait_for_run(r, timeout=0)):
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


# -- S5: FIFOs and directories where a file belongs --------------------------------------

PLANT_WHERE = ["run.json", "next-state", "head-state", "next-journal", "journal", "key",
               "format.json", "feed", "lock", "marker"]


def _plant_target(root: Path, d: Durably, ids: dict[str, str], where: str) -> Path:
    pending = d._store.run_dir(ids["pending"])
    done = d._store.run_dir(ids["done"])
    leased = d._store.run_dir(ids["leased"])
    if where == "feed":
        names = sorted(os.listdir(root / "feed"))
        return root / "feed" / names[-1]
    if where == "marker":
        return root / "queue" / next(n for n in os.listdir(root / "queue") if n.startswith(ids["pending"]))
    return {
        "run.json": Path(done) / "run.json", "next-state": Path(pending) / "s.1",
        "head-state": Path(done) / "s.2", "next-journal": Path(pending) / "j.1",
        "journal": Path(leased) / "j.1", "lock": Path(pending) / "lock",
        "key": root / "keys" / "i" / (files.name_hash("gap-steps", "k2") + ".json"),
        "format.json": root / "format.json",
    }[where]


def _damaged_root(root: Path) -> tuple[Durably, dict[str, str]]:
    d = gapapp.make(str(root), fsync=False)
    handle = d.get_job("gap-steps")
    assert handle is not None
    ids = {"done": handle.trigger(gapapp.GapIn(steps=2), idempotency_key="k1").id}
    d.process_until_idle()
    ids["leased"] = handle.trigger(gapapp.GapIn(steps=3)).id
    claim = d._claim_next()
    assert claim is not None
    claim.append({"k": "done", "s": "s0", "i": 0, "t": "2026-01-01T00:00:00.000Z",
                  "o": gapapp.value_of(0, "")}, sync=False)
    claim.release()
    ids["pending"] = handle.trigger(gapapp.GapIn(steps=2), idempotency_key="k2",
                                    concurrency_key="c2").id
    ids["healthy"] = handle.trigger(gapapp.GapIn(steps=2)).id
    return d, ids


def _probe(zygote: Zygote, tmp_path: Path, root: Path, ids: list[str], **kwargs: Any) -> dict[str, Any]:
    out = tmp_path / "probe.json"
    pid = zygote.spawn("gapapp:exercise", root=str(root), out=str(out), ids=ids, **kwargs)
    code = zygote.wait(pid, timeout=30)  # a hung child is killed and fails the test here
    assert code == 0, f"probe exited {code}:\n{zygote.stderr()}"
    return dict(json.loads(out.read_text()))


def _by_action(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["action"]: o for o in result["outcomes"]}


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("where", PLANT_WHERE)
def test_fifo_or_directory_where_a_file_belongs_is_refused_without_hanging(
        tmp_path: Path, zygote: Zygote, where: str, kind: str) -> None:
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


# -- S6: modes under any umask -------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o277, 0o777, 0o027, 0o137], ids=oct)
def test_modes_are_0700_and_0600_under_any_umask(tmp_path: Path, zygote: Zygote, umask: int) -> None:
    """Under umasks that take away the owner's own bits (0277, 0777) or that leave group
    bits (0027, 0137): every directory durably creates is 0700 and every file 0600 (a
    umask of 0277 would otherwise leave 0500 directories that the owner cannot write,
    unless root)."""
    root = tmp_path / "root"
    zygote.check("crashapps.jobs:exercise_root", root=str(root), umask=umask)
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
            if mode != 0o700:
                bad.append((os.path.relpath(os.path.join(dirpath, name), root), oct(mode)))
        for name in filenames:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
            if mode != 0o600:
                bad.append((os.path.relpath(os.path.join(dirpath, name), root), oct(mode)))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert bad == []


def test_a_group_or_world_writable_root_is_reported(tmp_path: Path, durably_factory: Factory) -> None:
    """A root that others may write into is reported by doctor, naming its mode."""
    d = durably_factory(root_dir=tmp_path / "root")
    d._store.ensure_ready()
    os.chmod(d.root, 0o777)
    out = io.StringIO()
    assert doctor_run(d.root, fix=False, as_json=True, out=out) == 1
    report = json.loads(out.getvalue())
    assert [(p["kind"], p["path"]) for p in report["problems"]] == [("permissions", ".")]
    assert "0777" in report["problems"][0]["message"]


# -- S7/S8: values that do not round-trip, refused before anything is written -----------


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


UNSTORABLE: dict[str, Callable[[], Any]] = {
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


@pytest.mark.parametrize("case", list(UNSTORABLE), ids=list(UNSTORABLE))
def test_values_that_do_not_round_trip_are_refused_before_anything_is_written(
        durably_factory: Factory, case: str) -> None:
    """NaN, infinities, ints beyond 64 bits, 300- and 2000-deep nesting, 70 MiB (over
    the 64 MiB cap) and lone surrogates: as a trigger's input they raise ValidationError
    and the root is unchanged; as a step's value or a job's output they fail the step or
    run once with an error naming the cause (and not the value), and nothing of the value
    reaches a file."""
    STATS["unstorable_values"] += 1
    make = UNSTORABLE[case]
    d = durably_factory(preserve_steps=True)
    root = Path(d.root)

    def job(step: Step, payload: AnyIn) -> Any:
        step.run("ok", lambda: "fine")
        if payload.value == "step":
            step.run("bad", make)
        return make()

    handle = d.register(define_job(name="unstorable", input=AnyIn, run=job))
    d._store.ensure_ready()
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
        assert steps == ([("ok", "completed"), ("bad", "failed")] if where == "step"
                         else [("ok", "completed")]), steps
    stored = _bytes_under(root)
    assert b"y" * 1024 not in stored
    assert b"leaf" not in stored


def test_a_20_mib_value_is_stored_and_read_back_whole(durably_factory: Factory) -> None:
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


SPARSE = 4 << 30


@pytest.mark.parametrize("where", ["run.json", "head-state", "next-state", "key", "journal"])
def test_huge_sparse_files_are_refused_without_reading_them(
        tmp_path: Path, zygote: Zygote, where: str) -> None:
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
        durably_factory: Factory, caplog: pytest.LogCaptureFixture) -> None:
    """A state file nested 1,100 deep (past orjson's 1,024) is damaged data, reported on
    the durably logger and by doctor, never a crash."""
    d = durably_factory()
    handle = d.register(define_job(name="deep", input=In, run=lambda step, p: None))
    run_id = handle.trigger(In()).id
    d.process_until_idle()
    s2 = Path(d._store.run_dir(run_id)) / "s.2"
    s2.write_bytes(b'{"v": 1, "x": ' + b"[" * 1100 + b"]" * 1100 + b"}")
    caplog.set_level(logging.WARNING, logger="durably")
    d.get_runs()
    with contextlib.suppress(durably.DurablyError):
        d.get_run(run_id)
    assert any(str(s2) in r.getMessage() for r in caplog.records), caplog.text
    assert ("corrupt", os.path.relpath(s2, d.root)) in {(p.kind, p.path) for p in Doctor(d.root).check()}


# -- C8/S9: empty and NUL-filled files, reported clearly --------------------------------

DAMAGED_WHERE = ["run.json", "head-state", "key", "format.json", "journal-with-cut"]


@pytest.mark.parametrize("how", ["empty", "nul"])
@pytest.mark.parametrize("where", DAMAGED_WHERE)
def test_empty_and_nul_filled_files_are_reported_clearly(
        tmp_path: Path, durably_factory: Factory, caplog: pytest.LogCaptureFixture,
        where: str, how: str) -> None:
    """An empty or NUL-filled file (what a power loss leaves where a name reached the
    disk before its bytes): a reader meeting it raises a DurablyError or logs a warning
    that names the file; ``durably doctor`` reports it with its path, saying "empty" or
    "NUL-filled"; nothing else changes it."""
    STATS["damaged_files"] += 1
    d = durably_factory(preserve_steps=True)
    handle = d.register(define_job(name="dmg", input=In, run=lambda step, p: [
        step.run(f"s{k}", lambda k=k: k) for k in range(3)]))
    done = handle.trigger(In(), idempotency_key="k").id
    d.process_until_idle()
    root = Path(d.root)
    run_dir = Path(d._store.run_dir(done))
    if where == "journal-with-cut":
        leased = handle.trigger(In()).id
        claim = d._claim_next()
        assert claim is not None
        for k in range(3):
            claim.append({"k": "done", "s": f"s{k}", "i": k, "t": "2026-01-01T00:00:00.000Z",
                          "o": k}, sync=False)
        claim.release()
        d.cancel(leased)  # s.2 fixes j.1's committed length
        done, run_dir = leased, Path(d._store.run_dir(leased))
    target = {"run.json": run_dir / "run.json", "head-state": run_dir / "s.2",
              "key": next((root / "keys" / "i").iterdir()), "format.json": root / "format.json",
              "journal-with-cut": run_dir / "j.1"}[where]
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


# -- S11: conflict copies and sync-tool debris -----------------------------------------


def test_conflict_copies_are_reported_and_left_untouched(tmp_path: Path, durably_factory: Factory) -> None:
    """Copies that sync tools make when two writers meet (Dropbox ``(conflicted copy)``,
    Syncthing ``.sync-conflict-…``) next to run records, states, journals, key records,
    queue markers and run directories: readers and workers ignore them (the runs read
    as before and complete), nothing rewrites or removes them, and doctor reports each
    one with its path; ``--fix`` moves them into the quarantine with their bytes."""
    d = durably_factory(preserve_steps=True)
    handle = d.register(define_job(name="cc", input=In, run=lambda step, p: [
        step.run(f"s{k}", lambda k=k: k) for k in range(2)]))
    done = handle.trigger(In(value="d"), idempotency_key="k").id
    d.process_until_idle()
    pending = handle.trigger(In(value="p"), concurrency_key="c").id
    root = Path(d.root)
    done_dir, pending_dir = Path(d._store.run_dir(done)), Path(d._store.run_dir(pending))
    key = next((root / "keys" / "i").iterdir())
    marker = next((root / "queue").iterdir())
    copies = {
        done_dir / "run (conflicted copy).json": (done_dir / "run.json").read_bytes(),
        done_dir / "s.2.sync-conflict-20261128-101010-ABCDEFG": (done_dir / "s.2").read_bytes(),
        done_dir / "journal.sync-conflict-20261128-101010-ABCDEFG.jsonl":
            (done_dir / "journal.jsonl").read_bytes(),
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


# -- S12: step values never appear in error messages ------------------------------------


class Typed(BaseModel):
    count: int


def test_secrets_in_step_values_never_appear_in_errors_logs_or_doctor(
        tmp_path: Path, durably_factory: Factory, caplog: pytest.LogCaptureFixture) -> None:
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
        texts += [run.error or "", str(d._store.load(run_id).head)]  # type: ignore[union-attr]
        for s in d.get_steps(run_id):
            texts += [s.error or "", s.traceback or ""]
        with pytest.raises(durably.RunFailedError) as info:
            d.wait_for_run(run_id, timeout=0)
        texts.append("".join(__import__("traceback").format_exception(info.value)))
    for bad_input in ({"count": secret}, {"value": 2**80, "note": secret}):
        STATS["secret_probes"] += 1
        typed = d.register(define_job(name=f"typed-{len(texts)}", input=Typed, run=lambda s, p: None))
        with pytest.raises(durably.ValidationError) as info:
            typed.trigger(bad_input)
        texts.append("".join(__import__("traceback").format_exception(info.value)))
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


# -- doctor on a root with batches ---------------------------------------------------------


def test_doctor_keeps_batch_triggered_runs(durably_factory: Factory) -> None:
    """``batch_trigger`` publishes ``batches/<id>``, without which its runs stay
    invisible: doctor must count it as part of the root (not "unexpected"), and
    ``--fix`` must never move it away and so hide every run of the batch."""
    d = durably_factory()
    handle = d.register(define_job(name="batched", input=In, run=lambda step, p: None))
    ids = sorted(r.id for r in handle.batch_trigger([In(value="a"), In(value="b")]))
    out = io.StringIO()
    assert doctor_run(d.root, fix=False, as_json=True, out=out) == 0, out.getvalue()
    assert doctor_run(d.root, fix=True, as_json=True, out=io.StringIO()) == 0
    fresh = durably_factory()
    assert sorted(r.id for r in fresh.get_runs()) == ids
