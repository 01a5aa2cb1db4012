"""Errors of the store are not failures of the job (issue 14.9).

An error of the store while a worker appends a checkpoint (ENOSPC on a full disk, EIO)
says nothing about the job: the run must stay resumable (never ``failed``), the worker
reports the error (``worker:error``) and backs off, and the run completes once the store
works again. A job's own exceptions still fail the run (the rest of the suite covers it).

The worker is a process (``apps.stalls.worker``); its step events and worker errors are
logged in a work directory outside the root, so they never need the full disk.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps import stalls as stallapp
from apps.children import Zygote, poll

from .relhelpers import need_libfiu, tmpfs

STEP_BYTES = 256 * 1024
FREE_PAGES = 8  # left free on the full disk: room for small records, not for a checkpoint


def _errors(work: Path) -> list[str]:
    path = work / "errors-W.log"
    return path.read_text().splitlines() if path.exists() else []


def _fill(mnt: Path) -> Path:
    """Fill the file system at ``mnt`` but for ``FREE_PAGES`` pages; return the ballast."""
    ballast = mnt / "ballast"
    st = os.statvfs(mnt)
    ballast.write_bytes(b"\0" * max(0, (st.f_bavail - FREE_PAGES) * st.f_frsize))
    return ballast


def _check_resumable_then_completes(d: object, run_id: str, work: Path, cause: str, recover: object) -> None:
    get_run = d.get_run  # type: ignore[attr-defined]
    poll(
        lambda: (
            any(cause in e for e in _errors(work))
            or ((r := get_run(run_id)) is not None and r.status == "failed")
        ),
        timeout=60,
        what=f"the worker reports {cause!r} (or the run fails)",
    )
    run = get_run(run_id)
    assert run.status != "failed", f"a store error failed the run: {run.error}"
    assert any(cause in e for e in _errors(work)), _errors(work)
    recover()  # type: ignore[operator]
    poll(
        lambda: (r := get_run(run_id)) is not None and r.is_terminal,
        timeout=60,
        what="the run ends once the store works again",
    )
    run = get_run(run_id)
    assert run.status == "completed", run.error
    starts = Counter(k for _, rid, k, what in stallapp.events(work) if what == "start")
    assert starts[0] == starts[1] == 1, starts  # acknowledged steps never run again


def test_a_full_disk_while_appending_a_checkpoint_never_fails_the_run(tmp_path: Path, zygote: Zygote) -> None:
    """A 2 MiB tmpfs holds the root; after the trigger, while step 2 (of 256 KiB values)
    waits at a gate, the disk is filled but for a few pages. Step 2's checkpoint meets
    ENOSPC: the run is not failed, the worker reports ENOSPC as ``worker:error``, and the
    run completes once the ballast is removed."""
    work = tmp_path / "work"
    work.mkdir()
    with tmpfs(tmp_path / "mnt", "size=2m,mode=0700") as mnt:
        root = mnt / "root"
        d = stallapp.make(str(root))
        run_id = (
            d.get_job("stall")
            .trigger(  # type: ignore[union-attr]
                stallapp.StallIn(steps=4, gate_at=2, size=STEP_BYTES)
            )
            .id
        )
        w = zygote.spawn(
            "apps.stalls:worker", root=str(root), workdir=str(work), who="W", lease=30.0, renew=1.0
        )
        try:
            poll(
                lambda: ("W", run_id, 2, "blocked") in stallapp.events(work),
                timeout=60,
                what="the worker waits inside step 2",
            )
            ballast = _fill(mnt)
            (work / "gate").touch()
            _check_resumable_then_completes(d, run_id, work, os.strerror(errno.ENOSPC), ballast.unlink)
            (work / "stop").touch()
            assert zygote.wait(w, 60) == 0, zygote.stderr()
        finally:
            (work / "gate").touch()
            (work / "stop").touch()


@pytest.fixture
def fiu_zygote(tmp_path: Path) -> Iterator[Zygote]:
    """A fork server under ``fiu-run -x``: its children may make a call fail with libfiu."""
    need_libfiu()
    z = Zygote(tmp_path / "zygote.log", prefix=["fiu-run", "-x"])
    yield z
    z.close()


def test_an_io_error_while_appending_a_checkpoint_never_fails_the_run(
    tmp_path: Path, fiu_zygote: Zygote
) -> None:
    """The worker runs under libfiu; the write of step 2's checkpoint fails once with EIO.
    The run is not failed, the worker reports EIO as ``worker:error``, and the run
    completes (the next attempt at the store succeeds)."""
    root, work = tmp_path / "root", tmp_path / "work"
    work.mkdir()
    d = stallapp.make(str(root))
    run_id = (
        d.get_job("stall")
        .trigger(  # type: ignore[union-attr]
            stallapp.StallIn(steps=4, eio_at=2)
        )
        .id
    )
    w = fiu_zygote.spawn(
        "apps.stalls:worker", root=str(root), workdir=str(work), who="W", lease=30.0, renew=1.0
    )
    try:
        _check_resumable_then_completes(d, run_id, work, os.strerror(errno.EIO), lambda: None)
        (work / "stop").touch()
        assert fiu_zygote.wait(w, 60) == 0, fiu_zygote.stderr()
    finally:
        (work / "stop").touch()
