"""Roots copied by sync tools: files arrive out of order, half-written, or under temp
names, while a reader watches (plan cases W4, W5, W6 of
docs/reliability.md).

A reader (``get_runs``, ``get_run``, ``get_steps``, ``get_logs``) over the copy must never
raise, never show a run's status or its completed steps going backwards, and must
converge to the source.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from apps import fault_server

import durably
from durably._driver import claim_next
from durably._durably import runtime_of

from .relhelpers import need_tool

RANK = {"pending": 0, "leased": 1, "completed": 2, "failed": 2, "cancelled": 2}
SEED = 20261128
ORDERS_PER_RUN = int(os.environ.get("REL_SYNC_ORDERS", "30"))
STATS = {"orders": 0, "states_checked": 0, "rsync_passes": 0, "reader_polls": 0}


def _view(d: durably.Durably, run_id: str) -> tuple[int, int] | None:
    """(status rank, completed steps) of a run as a reader sees it; None if invisible."""
    run = d.get_run(run_id)
    d.get_runs()
    if run is None:
        return None
    steps = d.get_steps(run_id)
    d.get_logs(run_id)
    return RANK[run.status], len({s.name for s in steps if s.status == "completed"})


def _source_runs(root: Path) -> dict[str, str]:
    """Runs in every state a copy can catch: pending, leased with steps, completed
    (compacted journal), cancelled mid-run (a cut), failed. Returns id -> state."""
    d = fault_server.make(str(root), fsync=False)
    handle = d.get_job("rel-work")
    assert handle is not None
    out = {}
    done = handle.trigger(fault_server.Work(tag="done", steps=3)).id
    d.process_one()
    out[done] = "completed"
    leased = handle.trigger(fault_server.Work(tag="leased", steps=3)).id
    claim = claim_next(runtime_of(d))
    assert claim is not None
    assert claim.run_id == leased
    for k in range(2):
        claim.append(
            {
                "k": "done",
                "s": f"step-{k}",
                "i": k,
                "t": "2026-11-28T00:00:00.000Z",
                "o": fault_server.value_of(k, 0),
            },
            sync=False,
        )
    claim.release()
    out[leased] = "leased"
    cancelled = handle.trigger(fault_server.Work(tag="cancelled", steps=3)).id
    claim = claim_next(runtime_of(d))
    assert claim is not None
    claim.append(
        {
            "k": "done",
            "s": "step-0",
            "i": 0,
            "t": "2026-11-28T00:00:00.000Z",
            "o": fault_server.value_of(0, 0),
        },
        sync=False,
    )
    claim.release()
    d.cancel(cancelled)
    out[cancelled] = "cancelled"
    out[handle.trigger(fault_server.Work(tag="pending")).id] = "pending"
    return out


def _run_dir(root: Path, run_id: str) -> Path:
    return root / "runs" / run_id[:6] / run_id[6:8] / run_id


def test_files_arriving_in_any_order_read_as_incomplete(tmp_path: Path) -> None:
    """W4: every order in which a run's files can arrive, each file first half-written
    (``rsync --inplace``) then whole: never an error, never backwards, and the end state
    equals the source."""
    src = tmp_path / "src"
    runs = _source_runs(src)
    reader_src = fault_server.make(str(src), fsync=False)
    for run_id in runs:
        want = _view(reader_src, run_id)
        want_run = reader_src.get_run(run_id)
        names = sorted(os.listdir(_run_dir(src, run_id)))
        orders = list(itertools.permutations(names))
        if len(orders) > ORDERS_PER_RUN:  # 5 files: 120 orders; a seeded sample keeps it fast
            orders = [
                tuple(names),
                tuple(reversed(names)),
                *random.Random(SEED).sample(orders, ORDERS_PER_RUN - 2),
            ]
        for order in orders:
            STATS["orders"] += 1
            dst = tmp_path / "dst"
            shutil.rmtree(dst, ignore_errors=True)
            skip = _run_dir(src, run_id)
            shutil.copytree(src, dst, ignore=lambda d, n, skip=skip: n if Path(d) == skip else [])
            target = _run_dir(dst, run_id)
            reader = fault_server.make(str(dst), fsync=False)
            last = (-1, -1)
            for name in order:
                data = (_run_dir(src, run_id) / name).read_bytes()
                for part in (data[: len(data) // 2], data):
                    (target / name).write_bytes(part)
                    seen = _view(reader, run_id)
                    STATS["states_checked"] += 1
                    if (
                        "run.json" not in os.listdir(target)
                        or (target / "run.json").read_bytes()
                        != (_run_dir(src, run_id) / "run.json").read_bytes()
                    ):
                        assert seen is None, (order, name, seen)
                        continue
                    assert seen is not None, (order, name)
                    assert seen[0] >= last[0], (order, name, seen, last)
                    assert seen[0] > last[0] or seen[1] >= last[1], (order, name, seen, last)
                    last = seen
            assert last == want, (order, last, want)
            got = reader.get_run(run_id)
            assert got is not None
            assert want_run is not None
            assert (got.status, got.output) == (want_run.status, want_run.output), order


class Reader(threading.Thread):
    """Polls a root's runs until stopped; records errors and any step backwards."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.d = fault_server.make(str(root), fsync=False)
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.backwards: list[Any] = []
        self.last: dict[str, tuple[int, int]] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()

    def poll(self) -> None:
        STATS["reader_polls"] += 1
        try:
            ids = [r.id for r in self.d.get_runs()]
            for run_id in ids:
                seen = _view(self.d, run_id)
                if seen is None:
                    continue
                before = self.last.get(run_id, (-1, -1))
                if seen[0] < before[0] or (seen[0] == before[0] and seen[1] < before[1]):
                    self.backwards.append((run_id, before, seen))
                self.last[run_id] = max(before, seen)
        except Exception as exc:  # noqa: BLE001 - the test reports every one
            self.errors.append(f"{type(exc).__name__}: {exc}")


MODES = {
    "default": [],
    "inplace": ["--inplace", "--bwlimit=4000"],
    "delay-updates": ["--delay-updates"],
}
STATS["sync_scenarios"] = len(MODES)


@pytest.mark.parametrize("mode", list(MODES))
def test_rsync_of_a_live_root_is_never_shown_wrong(tmp_path: Path, mode: str) -> None:
    """W5/W6: a worker executes runs in the source while ``rsync -a`` (default, --inplace,
    --delay-updates) copies the root again and again into a root a reader polls. The
    reader never raises, never sees a status or a step count go backwards, ignores temp
    names, and ends equal to the source."""
    rsync = need_tool("rsync", "rsync")
    src, dst = tmp_path / "src", tmp_path / "dst"
    d = fault_server.make(str(src), fsync=False, polling_interval=0.01)
    handle = d.get_job("rel-work")
    assert handle is not None
    ids = [handle.trigger(fault_server.Work(tag=f"live{i}", steps=20, size=16 * 1024)).id for i in range(3)]
    dst.mkdir()
    reader = Reader(dst)
    reader.start()
    fault_server.STEP_DELAY = 0.01
    d.start()
    try:

        def sync() -> None:
            STATS["rsync_passes"] += 1
            done = subprocess.run(
                [rsync, "-a", *MODES[mode], f"{src}/", f"{dst}/"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            # 24: "some files vanished before they could be transferred" (temp files).
            assert done.returncode in (0, 24), done.stderr

        while not all((r := d.get_run(i)) is not None and r.status == "completed" for i in ids):
            sync()
        d.stop(timeout=30)
        sync()
        sync()  # once more: a pass may have started before the last files were written
    finally:
        fault_server.STEP_DELAY = 0.0
        d.stop(timeout=30)
        reader.stop.set()
        reader.join(timeout=30)
    reader.poll()
    assert reader.errors == []
    assert reader.backwards == []
    final = fault_server.make(str(dst), fsync=False)
    for i in ids:
        got, want = final.get_run(i), d.get_run(i)
        assert got is not None
        assert want is not None
        assert (got.status, got.output) == ("completed", want.output)
        assert [s.name for s in final.get_steps(i) if s.status == "completed"] == [
            f"step-{k}" for k in range(20)
        ]


def test_half_copied_compacted_journal_never_hides_steps(tmp_path: Path) -> None:
    """W5, deterministic: a copy taken while the run was leased holds ``j.1``; then the
    run's end arrives, and its compacted ``journal.jsonl`` arrives half-written (as
    ``rsync --inplace`` writes it, the source having removed ``j.1``). The completed
    steps the reader showed must not disappear meanwhile."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    d = fault_server.make(str(src), fsync=False)
    handle = d.get_job("rel-work")
    assert handle is not None
    run_id = handle.trigger(fault_server.Work(tag="compact", steps=6, size=2000)).id
    claim = claim_next(runtime_of(d))
    assert claim is not None
    leased_copy = tmp_path / "leased"
    for k in range(6):
        claim.append(
            {
                "k": "done",
                "s": f"step-{k}",
                "i": k,
                "t": "2026-11-28T00:00:00.000Z",
                "o": fault_server.value_of(k, 2000),
            },
            sync=False,
        )
    shutil.copytree(src, leased_copy)  # the first sync: leased, all steps in j.1
    claim.release()
    assert d.process_one()  # replays the six steps, completes, compacts, removes j.1
    assert fault_server.expected(6, "compact") == d.get_run(run_id).output  # type: ignore[union-attr]
    shutil.copytree(leased_copy, dst)
    reader = fault_server.make(str(dst), fsync=False)
    assert _view(reader, run_id) == (RANK["leased"], 6)
    run_dir = _run_dir(src, run_id)
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("s."):
            shutil.copy2(run_dir / name, _run_dir(dst, run_id) / name)
    assert _view(reader, run_id) == (RANK["completed"], 6)
    data = (run_dir / "journal.jsonl").read_bytes()
    for cut in (1, len(data) // 3, data.index(b"\n") + 1, len(data) // 2, len(data) - 1, len(data)):
        (_run_dir(dst, run_id) / "journal.jsonl").write_bytes(data[:cut])
        assert _view(reader, run_id) == (RANK["completed"], 6), cut
