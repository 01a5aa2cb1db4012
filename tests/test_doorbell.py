"""Doorbells: a signal or a child's end sent from another process wakes an idle worker at
once instead of at its next poll. The workers here poll every ten minutes, so a run that
completes within the tests' minute was woken by its bell."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from apps.children import poll
from apps.waiting_jobs import approve, kid, waiter
from cli_harness import Worker, durably_cli

import durably
from durably import _doorbell as doorbell


def _waiting_for_go(d: durably.Durably, run_id: str) -> bool:
    run = d.get_run(run_id)
    return run is not None and run.waiting_for == "signal go"


def _ended(d: durably.Durably, run_id: str) -> durably.Run[object] | None:
    run = d.get_run(run_id)
    return run if run is not None and run.is_terminal else None


def _waiting(d: durably.Durably, run_id: str) -> str | None:
    run = d.get_run(run_id)
    return None if run is None else run.waiting_for


def _bells(root: Path) -> list[str]:
    folder = root / "workers"
    return sorted(n for n in os.listdir(folder) if n.endswith(".bell")) if folder.exists() else []


@pytest.mark.slow
def test_a_signal_from_the_cli_wakes_a_worker_process_at_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = {"WAIT_EVENTS": str(tmp_path / "events")}
    d = durably.Durably(root, jobs=[approve])
    run = d.register(approve).trigger({})
    w = Worker(root, app="apps.waiting_jobs:sleepy", extra_env=env)
    try:
        w.ready()
        poll(lambda: _waiting_for_go(d, run.id), what="the run waiting for its signal")
        # Parked, and its worker idle: without a bell it would look again in ten minutes.
        poll(lambda: _bells(root), what="the worker's doorbell")
        result = durably_cli("signal", run.id, "go", "--data", '{"by": "cli"}', "--root", root)
        assert result.returncode == 0, result.stderr
        done = poll(lambda: _ended(d, run.id), timeout=60, what="the run's end")
    finally:
        w.kill()
    assert done.status is durably.RunStatus.COMPLETED, done.error
    assert done.output == {"data": {"by": "cli"}}


def test_a_signal_from_another_instance_wakes_an_in_process_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    monkeypatch.setenv("WAIT_EVENTS", str(tmp_path / "events"))
    worker = durably.Durably(root, jobs=[approve], polling_interval=600)
    run = worker.register(approve).trigger({})
    worker.start()
    try:
        poll(lambda: _waiting_for_go(worker, run.id) and _bells(root), what="waiting, and the bell")
        other = durably.Durably(root, jobs=[approve])  # its own wake event: only the bell reaches the worker
        other.signal(run.id, "go", 7)
        done = poll(lambda: _ended(worker, run.id), timeout=60, what="the run's end")
    finally:
        worker.stop(timeout=30)
    assert done.status is durably.RunStatus.COMPLETED, done.error
    assert _bells(root) == []  # a stopped worker removes its bell


def test_a_child_ending_rings_the_bells_of_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    gate = tmp_path / "gate"
    gate.touch()
    monkeypatch.setenv("WAIT_EVENTS", str(tmp_path / "events"))
    monkeypatch.setenv("WAIT_GATE", str(gate))
    d = durably.Durably(root, jobs=[waiter, kid], polling_interval=600)
    run = d.register(waiter).trigger({})
    d.signal(run.id, "go", 1)  # kept until the run waits for it
    while not (_waiting(d, run.id) or "").startswith("child "):
        assert d.process_one(), "the parent stopped before invoking its child"
    bell = doorbell.Doorbell(str(d.root))
    assert bell.open()
    try:
        assert not bell.wait(0)
        assert d.process_one()  # the child runs and ends: its parent is claimable again
        assert bell.wait(0)
        assert not bell.wait(0)  # rings are drained
    finally:
        bell.close()
    assert d.process_one()
    done = d.get_run(run.id)
    assert done is not None
    assert done.status is durably.RunStatus.COMPLETED


def test_ring_skips_what_is_not_a_live_bell(tmp_path: Path) -> None:
    """A bell nobody reads any more (its process is gone) is removed; a regular file
    planted under a bell's name is never written; bells of other hosts are not touched."""
    d = durably.Durably(tmp_path / "root", jobs=[approve])
    d.register(approve).trigger({})
    folder = Path(d.root) / "workers"
    folder.mkdir(mode=0o700, exist_ok=True)
    prefix = doorbell._prefix()
    dead = folder / f"{prefix}999999999.dead{doorbell.SUFFIX}"
    os.mkfifo(dead, 0o600)
    planted = folder / f"{prefix}{os.getpid()}.file{doorbell.SUFFIX}"
    planted.write_bytes(b"")
    planted.chmod(0o600)
    other_host = folder / f"0000000000000000.1.x{doorbell.SUFFIX}"
    os.mkfifo(other_host, 0o600)
    live = doorbell.Doorbell(str(d.root))
    assert live.open()
    try:
        assert doorbell.ring(str(d.root)) == 1
        assert live.wait(0)
    finally:
        live.close()
    assert not dead.exists()
    assert planted.read_bytes() == b""
    assert stat.S_ISFIFO(other_host.lstat().st_mode)


def test_doctor_accepts_a_bell_but_not_another_fifo(tmp_path: Path) -> None:
    d = durably.Durably(tmp_path / "root", jobs=[approve])
    d.register(approve).trigger({})
    bell = doorbell.Doorbell(str(d.root))
    assert bell.open()
    try:
        assert durably_cli("doctor", "--root", d.root).returncode == 0
        os.mkfifo(Path(d.root) / "workers" / "stray", 0o600)
        result = durably_cli("doctor", "--root", d.root)
        assert result.returncode != 0
        assert "workers/stray: FIFO inside the root" in result.stdout
    finally:
        bell.close()
