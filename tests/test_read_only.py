"""A root on a read-only file system: `is_read_only()` says so, whatever made it read-only
(a mount, a remount, an ext4 that remounted itself read-only after an error), and
`durably worker` refuses to serve it instead of idling forever.

Real mounts: these tests need root (CI runs as root) and are skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.cli_app import ADD
from cli_harness import APP, TESTS, durably_cli, one_line

from durably import Durably, RunStatus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting file systems needs root"
    ),
]


def _sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


class Mount:
    """A small file system mounted at `path`, writable until `make_read_only()`."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "mnt"
        self.path.mkdir()
        if kind == "tmpfs":
            done = _sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(self.path))
        else:
            image = tmp_path / "ext4.img"
            if shutil.which("mkfs.ext4") is None:
                pytest.skip("no mkfs.ext4")
            with open(image, "wb") as f:
                f.truncate(8 << 20)
            made = _sh("mkfs.ext4", "-q", "-F", str(image))
            if made.returncode:
                pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
            done = _sh("mount", "-o", "loop,errors=remount-ro", str(image), str(self.path))
        if done.returncode:
            pytest.skip(f"cannot mount a {kind} here: {done.stderr.strip()}")

    def make_read_only(self) -> None:
        """tmpfs: `mount -o remount,ro`. ext4: an error (as on a failing disk), after which
        it remounts itself read-only (`emergency_ro` on recent kernels)."""
        if self.kind == "tmpfs":
            assert _sh("mount", "-o", "remount,ro", str(self.path)).returncode == 0
            return
        device = _sh("findmnt", "-no", "SOURCE", str(self.path)).stdout.strip()
        trigger = Path("/sys/fs/ext4") / os.path.basename(device) / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip("this kernel cannot inject an ext4 error")
        trigger.write_text("test: remount read-only\n")

    def unmount(self) -> None:
        _sh("umount", "-l", str(self.path))


@pytest.fixture(params=["tmpfs", "ext4-error"])
def mount(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mount]:
    """A read-only-to-be mount: a tmpfs remounted read-only, or an ext4 (loop device,
    `errors=remount-ro`) that meets an error."""
    made = Mount(request.param, tmp_path)
    yield made
    made.unmount()


def _root_with_a_pending_run(root: Path) -> str:
    return (
        Durably(root, jobs=[ADD], fsync=False)
        .get_job("add")
        .trigger(  # type: ignore[union-attr]
            {"a": 1, "b": 2}
        )
        .id
    )


def test_is_read_only_on_a_read_only_file_system(mount: Mount) -> None:
    """Writable before, read-only after, even as root (where `access(2)` may say writable)."""
    root = mount.path / "root"
    _root_with_a_pending_run(root)
    durably = Durably(root)
    before = sorted(root.rglob("*"))
    assert not durably.is_read_only()
    assert sorted(root.rglob("*")) == before  # the check leaves nothing behind

    mount.make_read_only()

    assert durably.is_read_only()
    assert Durably(mount.path / "not-created-yet").is_read_only()


def test_a_worker_refuses_a_read_only_root(mount: Mount) -> None:
    """`durably worker --root` on a read-only root: one line on stderr, exit 2, at once
    (no process is started), and the pending run stays pending."""
    root = mount.path / "root"
    run_id = _root_with_a_pending_run(root)
    mount.make_read_only()

    result = durably_cli("worker", APP, "--processes", "2", "--root", root, timeout=30)

    assert result.returncode == 2
    assert "read-only" in one_line(result.stderr)
    assert Durably(root).get_run(run_id).status is RunStatus.PENDING  # type: ignore[union-attr]


def test_a_worker_refuses_a_read_only_root_named_by_its_app(mount: Mount) -> None:
    """Without `--root` (the APP's own default root `.durably`): the first process to
    import APP refuses it, and the worker stops with one line and exit 2."""
    root = mount.path / ".durably"
    run_id = _root_with_a_pending_run(root)
    mount.make_read_only()
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])

    result = durably_cli(
        "worker", APP, "--processes", "2", cwd=mount.path, timeout=30, extra_env={"PYTHONPATH": path}
    )

    assert result.returncode == 2
    assert "read-only" in one_line(result.stderr)
    assert Durably(root).get_run(run_id).status is RunStatus.PENDING  # type: ignore[union-attr]
