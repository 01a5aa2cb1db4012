"""`durably doctor`: each check finds its problem with the path, and `--fix` repairs only
what is safe (quarantine keeps the bytes; nothing of a newer format is touched)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from helpers import status_of
from pydantic import BaseModel

import durably
from durably import Step, define_job
from durably._cli import main as cli_main
from durably._doctor import Doctor
from durably._driver import claim_next
from durably._durably import runtime_of
from durably._repair import run


class In(BaseModel):
    n: int = 2


def _value(i: int) -> dict[str, int]:
    return {"i": i}


def _body(step: Step, payload: In) -> dict[str, Any]:
    for i in range(payload.n):
        step.run(f"s{i}", partial(_value, i))
    return {"ok": True}


JOB = define_job(name="doc-job", input=In, run=_body)
HOUR = 3600.0


def _make(root: Path, **options: Any) -> durably.Durably:
    options.setdefault("fsync", False)
    return durably.Durably(root, jobs=[JOB], **options)


def _report(root: Path, *, fix: bool = False) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = run(str(root), fix=fix, as_json=True, out=out)
    return code, json.loads(out.getvalue())


def _kinds(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p["kind"], p["path"]) for p in report["problems"]}


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def _run_dir(root: Path, run_id: str) -> Path:
    return root / "runs" / run_id[:6] / run_id[6:8] / run_id


def _rel(root: Path, path: Path) -> str:
    return os.path.relpath(path, root)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def d(root: Path) -> durably.Durably:
    return _make(root)


def test_healthy_root_exits_zero(root: Path, d: durably.Durably) -> None:
    h = d.get_job("doc-job")
    assert h is not None
    h.trigger(In(), idempotency_key="a", concurrency_key="k")
    d.process_one()
    h.trigger(In(), idempotency_key="b")
    code, report = _report(root)
    assert (code, report["problems"], report["healthy"]) == (0, [], True)
    assert report["checked"]["runs"] == 2


def test_cli_wiring_text_and_exit_codes(
    root: Path, d: durably.Durably, capsys: pytest.CaptureFixture[str]
) -> None:
    d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    assert cli_main(["doctor", str(root)]) == 0
    assert "healthy" in capsys.readouterr().out
    (root / "tmp" / "1-dead.tmp").write_bytes(b"x")
    os.chmod(root / "tmp" / "1-dead.tmp", 0o600)
    _age(root / "tmp" / "1-dead.tmp", 2 * HOUR)
    assert cli_main(["doctor", "--root", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert _kinds(report) == {("orphan-temp", "tmp/1-dead.tmp")}
    assert cli_main(["doctor", str(root), "--fix"]) == 0
    assert "fixed    orphan-temp" in capsys.readouterr().out
    assert cli_main(["doctor", str(root / "missing")]) == 2


def test_orphan_temp_files(root: Path, d: durably.Durably) -> None:
    d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    tmp = root / "tmp"
    for name, age in (("1-old.tmp", 2 * HOUR), ("2-mid.tmp", 600), ("3-new.tmp", 0)):
        (tmp / name).write_bytes(b"data")
        os.chmod(tmp / name, 0o600)
        _age(tmp / name, age)
    trash = tmp / "del-01ABC-0000"
    trash.mkdir(mode=0o700)
    _age(trash, 2 * HOUR)
    code, report = _report(root)
    assert code == 1
    assert _kinds(report) == {
        ("orphan-temp", "tmp/1-old.tmp"),
        ("orphan-temp", "tmp/2-mid.tmp"),
        ("orphan-temp", "tmp/del-01ABC-0000"),
    }
    code, report = _report(root, fix=True)
    assert code == 0, report
    assert sorted(os.listdir(tmp)) == ["3-new.tmp"]  # an in-flight temp file is left alone
    moved = list((root / "quarantine").glob("*/tmp/2-mid.tmp"))
    assert len(moved) == 1
    assert moved[0].read_bytes() == b"data"


def test_markers_stale_missing_and_malformed(root: Path, d: durably.Durably) -> None:
    h = d.get_job("doc-job")
    assert h is not None
    done = h.trigger(In())
    d.process_one()
    pending = h.trigger(In())
    queue = root / "queue"
    marker = next(n for n in os.listdir(queue) if n.startswith(pending.id))
    ended_marker = queue / marker.replace(pending.id, done.id)  # same job, no key
    ended_marker.touch(0o600)
    ghost = queue / f"01ZZZZZZZZZZZZZZZZZZZZZZZZ.{marker.split('.')[1]}.-"
    ghost.touch(0o600)
    _age(ghost, 700)
    young_ghost = queue / f"01ZZZZZZZZZZZZZZZZZZZZZZZY.{marker.split('.')[1]}.-"
    young_ghost.touch(0o600)  # a trigger in flight: its run.json is not written yet
    bad = queue / "not-a-marker"
    bad.touch(0o600)
    code, report = _report(root)
    assert code == 1
    assert _kinds(report) == {
        ("stale-marker", _rel(root, ended_marker)),
        ("stale-marker", _rel(root, ghost)),
        ("bad-marker", "queue/not-a-marker"),
    }
    code, report = _report(root, fix=True)
    assert code == 0, report
    assert sorted(os.listdir(queue)) == sorted([marker, young_ghost.name])
    assert d.process_one()
    assert status_of(d, pending.id) == "completed"


def test_unqueued_run_is_requeued(root: Path, d: durably.Durably) -> None:
    pending = d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    for name in os.listdir(root / "queue"):
        os.unlink(root / "queue" / name)
    assert not d.process_one()  # stranded: no worker sees it
    code, report = _report(root)
    assert (code, _kinds(report)) == (1, {("unqueued-run", _rel(root, _run_dir(root, pending.id)))})
    assert _report(root, fix=True)[0] == 0
    assert d.process_one()
    assert status_of(d, pending.id) == "completed"


def test_corrupt_run_json_quarantines_the_run_then_its_key(root: Path, d: durably.Durably) -> None:
    res = d.get_job("doc-job").trigger(In(), idempotency_key="k1")  # type: ignore[union-attr]
    run_dir = _run_dir(root, res.id)
    record = run_dir / "run.json"
    original = record.read_bytes()
    record.write_bytes(original[: len(original) // 2])
    for p in (run_dir, *(root / "keys" / "i").iterdir(), *(root / "queue").iterdir()):
        _age(p, 700)
    code, report = _report(root)
    assert code == 1
    kinds = _kinds(report)
    assert ("corrupt", _rel(root, record)) in kinds
    assert any(k == "dangling-key" for k, _ in kinds)
    assert any(k == "stale-marker" for k, _ in kinds)
    assert "truncated" in next(p["message"] for p in report["problems"] if p["kind"] == "corrupt")
    code, report = _report(root, fix=True)
    assert code == 0, report
    moved = list((root / "quarantine").glob(f"*/{_rel(root, record)}"))
    assert len(moved) == 1
    assert moved[0].read_bytes() == original[: len(original) // 2]
    again = d.get_job("doc-job").trigger(In(), idempotency_key="k1")  # type: ignore[union-attr]
    assert again.disposition == "created"


def test_corrupt_head_state_is_quarantined_and_restored(root: Path, d: durably.Durably) -> None:
    """A damaged end state is quarantined, and published again from the copy the run's
    compacted journal keeps: the run reads completed as before."""
    res = d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    d.process_one()
    s2 = _run_dir(root, res.id) / "s.2"
    s2.write_bytes(b"\0" * 40)
    _code, report = _report(root)
    assert ("corrupt", _rel(root, s2)) in _kinds(report)
    assert "NUL-filled" in report["problems"][0]["message"]
    code, _ = _report(root, fix=True)
    assert code == 0
    assert list((root / "quarantine").glob(f"*/{_rel(root, s2)}"))
    assert json.loads(s2.read_bytes())["kind"] == "completed"
    assert d.get_run(res.id).status == "completed"  # type: ignore[union-attr]


def test_future_format_is_reported_and_never_touched(root: Path, d: durably.Durably) -> None:
    res = d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    d.process_one()
    s2 = _run_dir(root, res.id) / "s.2"
    s2.write_bytes(b'{"v": 99, "kind": "hologram"}')
    _age(s2, 5000)
    before = (s2.read_bytes(), os.stat(s2).st_mtime_ns)
    code, report = _report(root, fix=True)
    assert code == 1
    assert _kinds(report) == {("future-format", _rel(root, s2))}
    assert "upgrade durably" in report["problems"][0]["message"]
    assert (s2.read_bytes(), os.stat(s2).st_mtime_ns) == before
    assert not (root / "quarantine").exists()


def _leased_run(d: durably.Durably, root: Path, steps: int = 3) -> tuple[str, Path]:
    """A run leased by this process, with ``steps`` committed steps, then released (lock free)."""
    d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    claim = claim_next(runtime_of(d))
    assert claim is not None
    for i in range(steps):
        claim.append({"k": "done", "s": f"s{i}", "i": i, "t": "2026-01-01T00:00:00.000Z", "o": i}, sync=False)
    claim.release()
    return claim.run_id, _run_dir(root, claim.run_id) / "j.1"


def test_torn_journal_tail_is_normal(root: Path, d: durably.Durably) -> None:
    _, journal = _leased_run(d, root)
    with journal.open("ab") as f:
        f.write(b'{"k":"done","s":"s3","o":')  # a crash mid-append
    assert _report(root)[0] == 0


def test_journal_damage_before_valid_records(root: Path, d: durably.Durably) -> None:
    _, journal = _leased_run(d, root)
    data = bytearray(journal.read_bytes())
    data[5] ^= 0x20  # flip a bit inside the first record
    journal.write_bytes(bytes(data))
    code, report = _report(root)
    assert code == 1
    problem = report["problems"][0]
    assert (problem["kind"], problem["path"]) == ("corrupt", _rel(root, journal))
    assert "2 valid record(s) follow" in problem["message"]
    assert _report(root, fix=True)[0] == 1  # reported, not repairable: the data is kept


def test_journal_shorter_than_its_cut(root: Path, d: durably.Durably) -> None:
    run_id, journal = _leased_run(d, root)
    d.cancel(run_id)  # s.2 fixes the valid length of j.1
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) // 2])
    code, report = _report(root)
    assert code == 1
    assert "committed records are lost" in report["problems"][0]["message"]


def test_stuck_lease_past_expiry_without_owner(root: Path, tmp_path: Path) -> None:
    d = _make(root, lease_duration=5, lease_renew_interval=1)
    run_id, _ = _leased_run(d, root)
    assert Doctor(str(root)).check() == []  # within its lease: not stuck yet
    later = Doctor(str(root), now=time.time() + 60).check()
    assert [(p.kind, p.path) for p in later] == [("stuck-lease", _rel(root, _run_dir(root, run_id)))]
    assert "holds no lock" in later[0].message
    # A live owner (another process holding the run's lock) is never reported.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR);"
            " fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
            str(_run_dir(root, run_id) / "lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        assert Doctor(str(root), now=time.time() + 60).check() == []
    finally:
        holder.communicate("")


def test_stuck_lease_of_another_host(root: Path) -> None:
    d = _make(root, lease_duration=5, lease_renew_interval=1)
    run_id, _ = _leased_run(d, root)
    s1 = _run_dir(root, run_id) / "s.1"
    rec = json.loads(s1.read_bytes())
    rec["host"] = "elsewhere"
    s1.write_bytes(json.dumps(rec).encode())
    problems = Doctor(str(root), now=time.time() + 60).check()
    assert [p.kind for p in problems] == ["stuck-lease"]
    assert "'elsewhere'" in problems[0].message


def test_dangling_keys(root: Path, d: durably.Durably) -> None:
    """An idempotency key naming a missing run, and any key record or concurrency-key slot
    naming a run without that key, are dangling; a concurrency-key slot naming a missing
    run is not (the key is simply free) and is left alone."""
    h = d.get_job("doc-job")
    assert h is not None
    gone = h.trigger(In(), idempotency_key="gone", concurrency_key="gone")
    kept = h.trigger(In(), idempotency_key="kept", concurrency_key="kept")
    shutil.rmtree(_run_dir(root, gone.id))  # e.g. removed by hand
    for name in os.listdir(root / "queue"):
        if name.startswith(gone.id):
            os.unlink(root / "queue" / name)
    idem = list((root / "keys" / "i").iterdir())
    slots = list((root / "keys" / "p").glob("*/*"))
    assert len(idem) == len(slots) == 2
    kept_key = next(p for p in idem if json.loads(p.read_bytes())["run"] == kept.id)
    kept_slot = next(p for p in slots if json.loads(p.read_bytes())["run"] == kept.id)
    gone_slot = next(p for p in slots if p != kept_slot)
    wrong = root / "keys" / "i" / ("0" * 32 + ".json")  # names a run that lacks this key
    wrong.write_bytes(kept_key.read_bytes())
    wrong_slot = root / "keys" / "p" / ("0" * 32) / "0"  # the same, in a slot chain
    wrong_slot.parent.mkdir(mode=0o700)
    wrong_slot.write_bytes(kept_slot.read_bytes())
    for p in (wrong, wrong_slot):
        os.chmod(p, 0o600)
    for p in (*idem, *slots, wrong, wrong_slot):
        _age(p, 120)
    code, report = _report(root)
    assert code == 1
    dangling = {path for kind, path in _kinds(report) if kind == "dangling-key"}
    assert dangling == {_rel(root, p) for p in idem if p != kept_key} | {
        _rel(root, wrong),
        _rel(root, wrong_slot),
    }
    assert _report(root, fix=True)[0] == 0
    assert gone_slot.exists()
    assert kept_slot.exists()
    assert h.trigger(In(), idempotency_key="gone", concurrency_key="gone").disposition == "created"
    with pytest.raises(durably.ConflictError):
        h.trigger(In(), concurrency_key="kept")


def test_permissions(root: Path, d: durably.Durably) -> None:
    res = d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    record = _run_dir(root, res.id) / "run.json"
    os.chmod(record, 0o644)
    os.chmod(root / "keys", 0o755)
    _code, report = _report(root)
    assert _kinds(report) == {("permissions", _rel(root, record)), ("permissions", "keys")}
    assert "0644" in next(p["message"] for p in report["problems"] if p["path"].endswith("run.json"))
    assert _report(root, fix=True)[0] == 0
    assert (os.stat(record).st_mode & 0o777, os.stat(root / "keys").st_mode & 0o777) == (0o600, 0o700)


def test_symlinks_and_fifos_are_quarantined(root: Path, d: durably.Durably, tmp_path: Path) -> None:
    res = d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    precious = tmp_path / "precious"
    precious.write_text("secret")
    link = _run_dir(root, res.id) / "s.1"
    os.symlink(precious, link)
    fifo = _run_dir(root, res.id) / "j.1"
    os.mkfifo(fifo, 0o600)
    dir_link = root / "runs" / "01ZZZZ"
    os.symlink(tmp_path, dir_link)
    code, report = _report(root)  # must not block on the FIFO
    assert code == 1
    assert {("special-file", _rel(root, p)) for p in (link, fifo, dir_link)} <= _kinds(report)
    assert _report(root, fix=True)[0] == 0
    assert precious.read_text() == "secret"
    assert not os.path.lexists(link)
    assert os.path.islink(next((root / "quarantine").glob(f"*/{_rel(root, link)}")))
    assert d.process_one()
    assert status_of(d, res.id) == "completed"


def test_batch_commit_records_are_expected(root: Path, d: durably.Durably) -> None:
    """``batches/`` makes a batch's runs visible: quarantining it would hide them all."""
    results = d.get_job("doc-job").batch_trigger([In(), In()])  # type: ignore[union-attr]
    assert _report(root) == (0, _report(root)[1])
    assert _report(root, fix=True)[1]["fixed"] == []
    assert [r.id for r in reversed(d.get_runs())] == [r.id for r in results]


def test_doctor_keeps_batch_triggered_runs(durably_factory: Callable[..., durably.Durably]) -> None:
    """``batch_trigger`` publishes ``batches/<id>``, without which its runs stay
    invisible: doctor must count it as part of the root (not "unexpected"), and
    ``--fix`` must never move it away and so hide every run of the batch."""
    d = durably_factory()
    handle = d.register(define_job(name="batched", input=In, run=lambda step, p: None))
    ids = sorted(r.id for r in handle.batch_trigger([In(n=1), In(n=2)]))
    out = io.StringIO()
    assert run(d.root, fix=False, as_json=True, out=out) == 0, out.getvalue()
    assert run(d.root, fix=True, as_json=True, out=io.StringIO()) == 0
    fresh = durably_factory()
    assert sorted(r.id for r in fresh.get_runs()) == ids


def test_runs_of_a_batch_that_never_committed(root: Path, tmp_path: Path) -> None:
    """A batch_trigger that died before its commit leaves invisible runs: reported as
    incomplete (after the trigger grace, not while the batch may still be in flight) and
    quarantined with their keys; nothing of another batch is touched."""
    d = _make(root)
    kept = d.get_job("doc-job").batch_trigger([In()])  # type: ignore[union-attr]
    dead = d.get_job("doc-job").batch_trigger(  # type: ignore[union-attr]
        [durably.BatchItem(In(), idempotency_key=f"b{i}") for i in range(2)]
    )
    batch = json.loads((_run_dir(root, dead[0].id) / "run.json").read_bytes())["batch"]
    os.unlink(root / "batches" / batch)  # as if its process died before committing
    fresh = _make(root)
    assert [r.id for r in fresh.get_runs()] == [kept[0].id]
    assert _report(root)[0] == 0  # young: the batch may still be committing
    for r in dead:
        _age(_run_dir(root, r.id) / "run.json", 3600)
    code, report = _report(root)
    assert code == 1
    assert _kinds(report) == {("incomplete-run", _rel(root, _run_dir(root, r.id))) for r in dead}
    assert _report(root, fix=True)[0] == 0
    assert not any(_run_dir(root, r.id).exists() for r in dead)
    assert _run_dir(root, kept[0].id).exists()
    again = fresh.get_job("doc-job").trigger(In(), idempotency_key="b0")  # type: ignore[union-attr]
    assert again.disposition == "created"


def test_unexpected_names(root: Path, d: durably.Durably) -> None:
    res = d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    d.process_one()
    rsync_tmp = _run_dir(root, res.id) / ".s.2.Xy12Ab"
    rsync_tmp.write_bytes(b'{"v":1,')
    conflict = _run_dir(root, res.id) / "s.sync-conflict-20261128-101010-ABC"
    conflict.write_bytes(b"{}")
    stray = root / "notes.txt"
    stray.write_text("hi")
    for p in (rsync_tmp, conflict, stray):
        os.chmod(p, 0o600)
    _code, report = _report(root)
    assert _kinds(report) == {("unexpected", _rel(root, p)) for p in (rsync_tmp, conflict, stray)}
    assert _report(root, fix=True)[0] == 0
    assert status_of(d, res.id) == "completed"


def test_stray_files_in_runs_do_not_belong(root: Path, d: durably.Durably) -> None:
    """A file or a non-shard directory in `runs/` or in a shard is reported as not
    belonging there (not only for its mode), and `--fix` quarantines it."""
    res = d.get_job("doc-job").trigger(In())  # type: ignore[union-attr]
    d.process_one()
    shard = _run_dir(root, res.id).parent
    strays = [root / "runs" / "stray.txt", root / "runs" / "notes", shard / "stray.txt"]
    strays[0].write_text("hi")
    strays[1].mkdir(mode=0o700)
    strays[2].write_text("hi")
    for p in strays:
        os.chmod(p, 0o700 if p.is_dir() else 0o600)
    code, report = _report(root)
    assert code == 1
    assert _kinds(report) == {("unexpected", _rel(root, p)) for p in strays}
    assert all("does not belong" in p["message"] for p in report["problems"])
    assert _report(root, fix=True)[0] == 0
    assert not any(p.exists() for p in strays)
    assert status_of(d, res.id) == "completed"


def test_summary_counts_each_run_and_file_once(root: Path, d: durably.Durably) -> None:
    """The summary counts every run and file once, with and without `--fix` (which checks again)."""
    h = d.get_job("doc-job")
    assert h is not None
    for _ in range(4):
        h.trigger(In())
    d.process_until_idle()
    (root / "runs" / "stray.txt").write_text("hi")
    files_on_disk = sum(
        len([n for n in names if not os.path.islink(os.path.join(top, n))])
        for top, dirs, names in os.walk(root)
        if ".quarantine" not in top and "quarantine" not in os.path.relpath(top, root).split(os.sep)[0]
    )
    for fix in (False, True):
        out = io.StringIO()
        run(str(root), fix=fix, as_json=False, out=out)
        summary = out.getvalue().splitlines()[-1]
        assert summary.startswith("checked 4 run(s), "), summary
    out = io.StringIO()
    run(str(root), fix=False, as_json=False, out=out)
    assert f"{files_on_disk - 1} file(s)" in out.getvalue().splitlines()[-1]


def _waiting_root(root: Path) -> tuple[durably.Durably, Any, dict[str, str]]:
    """Runs that wait: for a time, for a signal (its marker in ``wait/``), and one that
    was sent its signal before it waits (the signal file is there, the run pending)."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from durably.testing import ManualClock  # noqa: PLC0415

    @define_job(name="doc-waits", input=In)
    def waits(step: Step, p: In) -> None:
        if p.n == 0:
            step.sleep("nap", 3600)
        step.wait_for_signal("go")

    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    d = durably.Durably(root, jobs=[JOB, waits], fsync=False, clock=clock)
    h = d.register(waits)
    ids = {"sleeps": h.trigger(In(n=0)).id, "signal": h.trigger(In(n=1)).id, "early": h.trigger(In(n=1)).id}
    d.signal(ids["early"], "go", {"by": "ana"})
    d.process_one()
    d.process_one()
    assert [status_of(d, ids[k]) for k in ("sleeps", "signal")] == ["waiting", "waiting"]
    return d, clock, ids


def test_waiting_runs_and_their_signals_are_healthy(root: Path) -> None:
    """A waiting run's marker lives in ``wait/`` and a delivered signal is a ``g.<hash>``
    file of its run: neither is a problem (they were reported as an unqueued run and
    as an unexpected file, and ``--fix`` requeued the run and quarantined the signal)."""
    d, clock, ids = _waiting_root(root)
    code, report = _report(root)
    assert (code, report["problems"]) == (0, [])
    assert report["checked"]["markers"] == 3
    assert _report(root, fix=True)[1]["fixed"] == []
    d.signal(ids["signal"], "go", None)
    clock.advance(3600)
    d.process_until_idle()
    d.process_until_idle()
    assert {k: status_of(d, i) for k, i in ids.items()} == {
        "sleeps": "waiting",
        "signal": "completed",
        "early": "completed",
    }
    d.signal(ids["sleeps"], "go", None)
    d.process_until_idle()
    assert status_of(d, ids["sleeps"]) == "completed"
    assert _report(root) == (0, _report(root)[1])


def test_wait_markers_stale_missing_and_malformed(root: Path) -> None:
    """A wait marker of an ended run is stale (removed), a name that is not a wait marker
    is bad (quarantined), a waiting run without any marker is unqueued (requeued: the
    next claimer parks it again), and a damaged signal file is corrupt (quarantined, so
    the signal can be sent again)."""
    d, clock, ids = _waiting_root(root)
    wait = root / "wait"
    sleeps = next(n for n in os.listdir(wait) if ids["sleeps"] in n)
    other = next(n for n in os.listdir(wait) if ids["signal"] in n)
    d.cancel(ids["early"])
    stale = wait / f"~.{ids['early']}.{other.split('.')[2]}.-"
    stale.touch(0o600)
    bad = wait / "1767229200000.not-a-marker"
    bad.touch(0o600)
    os.unlink(wait / sleeps)
    d.signal(ids["signal"], "go", {"by": "ana"})
    signal_file = next(p for p in _run_dir(root, ids["signal"]).iterdir() if p.name.startswith("g."))
    signal_file.write_bytes(b'{"v":1,"na')
    code, report = _report(root)
    assert code == 1
    assert _kinds(report) == {
        ("stale-marker", _rel(root, stale)),
        ("bad-marker", _rel(root, bad)),
        ("unqueued-run", _rel(root, _run_dir(root, ids["sleeps"]))),
        ("corrupt", _rel(root, signal_file)),
    }
    code, report = _report(root, fix=True)
    assert code == 0, report
    assert not stale.exists()
    assert not bad.exists()
    assert not signal_file.exists()
    markers = [*os.listdir(root / "queue"), *os.listdir(wait)]
    assert [ids["sleeps"] in n for n in markers].count(True) == 1, markers
    d.signal(ids["signal"], "go", {"by": "bob"})
    clock.advance(3600)
    d.process_until_idle()
    d.signal(ids["sleeps"], "go", None)
    d.process_until_idle()
    assert status_of(d, ids["sleeps"]) == "completed"
    assert status_of(d, ids["signal"]) == "completed"
    assert _report(root)[0] == 0
