"""Damaged or deleted files of a root (issue 14.6, 14.7, 14.8).

A file of the root lost or damaged (a disk error, a sync tool, a careless ``rm``) must
never produce a second run for an idempotency key nor re-run a completed step, and
``durably doctor`` must report every such loss instead of saying "healthy". Files are
found, damaged and deleted through the on-disk layout of docs/architecture.md
(``runs/<id[:6]>/<id[6:8]>/<id>/``, ``s.<n>``, ``j.<g>``, ``journal.jsonl``,
``keys/i/<hash>.json``); runs are executed by worker processes (``apps.stalls.worker``) and
``doctor`` and ``show`` are the command line, run as processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from apps import stalls as stallapp
from apps.children import REPO_ROOT, Zygote, child_env, poll

import durably


def _run_dir(root: Path, run_id: str) -> Path:
    return root / "runs" / run_id[:6] / run_id[6:8] / run_id


def _end_state(root: Path, run_id: str) -> Path:
    """The highest ``s.<n>`` of a run: for an ended run, its end state."""
    states = [p for p in _run_dir(root, run_id).iterdir() if re.fullmatch(r"s\.\d+", p.name)]
    return max(states, key=lambda p: int(p.name[2:]))


def _key_record(root: Path) -> Path:
    records = list((root / "keys" / "i").glob("*.json"))
    assert len(records) == 1, records
    return records[0]


def _damage(path: Path) -> None:
    """Overwrite the file with random bytes of its own length (at least 64)."""
    path.write_bytes(os.urandom(max(64, path.stat().st_size)))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durably", *args],
        env=child_env(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _doctor(root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = _cli("doctor", str(root), "--json", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _execute(zygote: Zygote, root: Path, work: Path, who: str, **options: Any) -> None:
    """Run a worker process until nothing is claimable."""
    (work / "stop").touch()
    zygote.check(
        "apps.stalls:worker",
        timeout=120,
        root=str(root),
        workdir=str(work),
        who=who,
        lease=30.0,
        renew=1.0,
        **options,
    )


def _starts(work: Path) -> list[tuple[str, str, int, str]]:
    return [e for e in stallapp.events(work) if e[3] == "start"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def _keyed_completed_run(zygote: Zygote, root: Path, work: Path) -> tuple[durably.Durably, str]:
    d = stallapp.make(str(root))
    run_id = d.jobs["stall"].trigger(stallapp.StallIn(steps=2), idempotency_key="idem").id
    _execute(zygote, root, work, "W")
    assert d.get_run(run_id).status == "completed"  # type: ignore[union-attr]
    return d, run_id


def _trigger_again(d: durably.Durably) -> tuple[Any, durably.DurablyError | None]:
    try:
        return d.jobs["stall"].trigger(stallapp.StallIn(steps=2), idempotency_key="idem"), None
    except durably.DurablyError as exc:
        return None, exc


def _keyed_runs(d: durably.Durably) -> list[str]:
    return [r.id for r in d.get_runs() if r.idempotency_key == "idem"]


# -- 14.6: idempotency key records ---------------------------------------------------------


def test_a_deleted_idempotency_key_record_never_gives_a_second_run(
    zygote: Zygote, root: Path, work: Path
) -> None:
    """The key record of a completed keyed run is deleted; the binding is still in the
    run's ``run.json``. A trigger with the same key returns that run (``idempotent``)."""
    d, run_id = _keyed_completed_run(zygote, root, work)
    _key_record(root).unlink()
    res, error = _trigger_again(d)
    assert _keyed_runs(d) == [run_id], "a second run was created for the key"
    assert error is None, error
    assert (res.id, res.disposition) == (run_id, "idempotent")


@pytest.mark.parametrize("age", ["older-than-60s", "young"])
def test_a_damaged_idempotency_key_record_never_gives_a_second_run(
    zygote: Zygote, root: Path, work: Path, age: str
) -> None:
    """The key record of a completed keyed run is overwritten with random bytes (and, in
    one case, made two minutes old, past the grace of a torn record). A trigger with the
    same key creates no second run: it finds the run through the runs themselves
    (``idempotent``), or raises an error naming the damaged file, never a misleading
    "keys keep changing under concurrent triggers"."""
    d, run_id = _keyed_completed_run(zygote, root, work)
    record = _key_record(root)
    _damage(record)
    if age != "young":
        old = time.time() - 120
        os.utime(record, (old, old))
    res, error = _trigger_again(d)
    assert _keyed_runs(d) == [run_id], "a second run was created for the key"
    if error is not None:
        assert record.name in str(error), f"the error does not name the damaged file: {error!r}"
    else:
        assert (res.id, res.disposition) == (run_id, "idempotent")


def test_doctor_fix_rebuilds_a_damaged_key_record_from_its_run(
    zygote: Zygote, root: Path, work: Path
) -> None:
    """A damaged key record, then ``durably doctor --fix`` (which must rebuild key
    records from the runs, whose ``run.json`` holds the key), then a trigger with the
    same key: still one run, returned as ``idempotent``."""
    d, run_id = _keyed_completed_run(zygote, root, work)
    _damage(_key_record(root))
    _doctor(root, "--fix")
    res, error = _trigger_again(d)
    assert _keyed_runs(d) == [run_id], "a second run was created for the key"
    assert error is None, error
    assert (res.id, res.disposition) == (run_id, "idempotent")


# -- 14.7: a lost end state ---------------------------------------------------------------


@pytest.mark.parametrize("preserve_steps", [True, False], ids=["preserve", "drop"])
@pytest.mark.parametrize("loss", ["deleted", "damaged"])
def test_doctor_fix_after_a_lost_end_state_reruns_no_completed_step(
    zygote: Zygote, root: Path, work: Path, loss: str, preserve_steps: bool
) -> None:
    """A 20-step run completes; its end state file (the highest ``s.<n>``) is deleted or
    overwritten with random bytes. After ``durably doctor --fix`` and a worker, no step
    body ran again, and the run reads as completed with its 20 steps."""
    d = stallapp.make(str(root), preserve_steps=preserve_steps)
    run_id = d.get_job("stall").trigger(stallapp.StallIn(steps=20)).id  # type: ignore[union-attr]
    _execute(zygote, root, work, "W", preserve_steps=preserve_steps)
    assert d.get_run(run_id).status == "completed"  # type: ignore[union-attr]
    assert len(_starts(work)) == 20
    end = _end_state(root, run_id)
    if loss == "deleted":
        end.unlink()
    else:
        _damage(end)
    _doctor(root, "--fix")
    _execute(zygote, root, work, "W2", preserve_steps=preserve_steps)
    again = [(who, k) for who, _, k, _ in _starts(work)[20:]]
    assert again == [], f"completed steps ran again: {again}"
    run = d.get_run(run_id)
    assert run is not None
    assert run.status == "completed"
    assert [s.name for s in d.get_steps(run_id) if s.status == "completed"] == stallapp.expected_steps(20)


# -- 14.8: what doctor must report --------------------------------------------------------


def _assert_reported(root: Path, what: str, *names: str) -> None:
    code, report = _doctor(root)
    assert (code, report["healthy"]) == (1, False), f"doctor says healthy after {what}: {report}"
    paths = " ".join(p["path"] + " " + p["message"] for p in report["problems"])
    assert any(n in paths for n in names), f"no problem names {names}: {report['problems']}"


def test_doctor_reports_a_deleted_journal_of_a_completed_run(zygote: Zygote, root: Path, work: Path) -> None:
    """A completed run's ``journal.jsonl`` (its steps) is deleted: doctor reports it."""
    d = stallapp.make(str(root))
    run_id = d.get_job("stall").trigger(stallapp.StallIn(steps=5)).id  # type: ignore[union-attr]
    _execute(zygote, root, work, "W")
    (_run_dir(root, run_id) / "journal.jsonl").unlink()
    _assert_reported(root, "deleting journal.jsonl", run_id)


@pytest.mark.parametrize(
    "damage",
    [
        "random-bytes",  # held already: records after the damage show it is not a torn tail
        "truncated",
        "deleted",
    ],
)
def test_doctor_reports_a_damaged_journal_of_a_running_run(
    zygote: Zygote, root: Path, work: Path, damage: str
) -> None:
    """A run is leased by a live owner (stopped with SIGSTOP inside step 20 of 30, its
    lease 30 s: not stuck); its journal ``j.1`` gets random bytes in the middle, is cut
    to half, or is deleted. Doctor reports the run's journal as damaged."""
    d = stallapp.make(str(root))
    run_id = (
        d.get_job("stall")
        .trigger(  # type: ignore[union-attr]
            stallapp.StallIn(steps=30, stop_at=20, stop="in")
        )
        .id
    )
    a = zygote.spawn(
        "apps.stalls:worker", root=str(root), workdir=str(work), who="A", lease=30.0, renew=1.0, once=True
    )
    try:
        poll((work / "stopped").exists, timeout=60, what="A stops inside step 20")
        assert d.get_run(run_id).completed_step_count == 20  # type: ignore[union-attr]
        journal = _run_dir(root, run_id) / "j.1"
        size = journal.stat().st_size
        if damage == "random-bytes":
            with journal.open("r+b") as f:
                f.seek(size // 2)
                f.write(os.urandom(64))
        elif damage == "truncated":
            os.truncate(journal, size // 2)
        else:
            journal.unlink()
        _assert_reported(root, f"{damage} on j.1 of a running run", run_id)
    finally:
        os.kill(a, signal.SIGKILL)
        zygote.wait(a)


def test_doctor_reports_a_deleted_run_record_at_once(zygote: Zygote, root: Path, work: Path) -> None:
    """A completed run's ``run.json`` is deleted: doctor reports it at once (the run has
    state files and a journal: no trigger is in flight), not after ten minutes."""
    d = stallapp.make(str(root))
    run_id = d.get_job("stall").trigger(stallapp.StallIn(steps=2)).id  # type: ignore[union-attr]
    _execute(zygote, root, work, "W")
    (_run_dir(root, run_id) / "run.json").unlink()
    _assert_reported(root, "deleting run.json", run_id)


def test_doctor_reports_a_deleted_key_record(zygote: Zygote, root: Path, work: Path) -> None:
    """The idempotency key record of a keyed run is deleted: doctor reports the run whose
    key has no record."""
    _, run_id = _keyed_completed_run(zygote, root, work)
    record = _key_record(root)
    record.unlink()
    _assert_reported(root, "deleting a key record", run_id, record.name)


def test_a_completed_run_whose_end_state_is_lost_does_not_read_as_running(
    zygote: Zygote, root: Path, work: Path
) -> None:
    """A completed run's end state file is deleted (its compacted ``journal.jsonl``
    remains, which only an ended run has): ``durably show --json`` does not show it as
    leased (running), and doctor reports it."""
    d = stallapp.make(str(root))
    run_id = d.get_job("stall").trigger(stallapp.StallIn(steps=3)).id  # type: ignore[union-attr]
    _execute(zygote, root, work, "W")
    _end_state(root, run_id).unlink()
    proc = _cli("show", "--json", "--root", str(root), run_id)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] != "leased", "the run reads as running"
    _assert_reported(root, "deleting the end state", run_id)
