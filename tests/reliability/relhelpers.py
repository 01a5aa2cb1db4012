"""Helpers of the reliability suite: tools, root-only mounts, the fault server's client.

Every test here is marked ``reliability`` and ``slow``. A test that needs a tool (libfiu,
strace, bindfs, faketime, rsync) or root skips with the reason when it is missing, except
under CI (``CI=true``), where ``.ci/run`` installs them: there a missing tool fails the
test, so the suite is never green because it was skipped. Child processes and their
environment: ``apps.children``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.children import REPO_ROOT, call_argv, child_env

HERE = Path(__file__).resolve().parent
FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
)


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs it: see .ci/run)")
    pytest.skip(reason)


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(f"needs `{name}` (Debian package {package})")
    return str(path)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        _missing(f"needs root for {what}")


def need_libfiu() -> None:
    need_tool("fiu-run", "fiu-utils")
    if not any(
        Path(p).exists()
        for p in (
            "/usr/lib/libfiu.so.0",
            "/usr/lib/x86_64-linux-gnu/libfiu.so.0",
            "/usr/local/lib/libfiu.so.0",
        )
    ):
        _missing("needs libfiu.so.0 (Debian package libfiu0)")


def need_faketime() -> str:
    for lib in FAKETIME_LIBS:
        if Path(lib).exists():
            return lib
    _missing("needs libfaketime (Debian packages faketime libfaketime)")
    return ""


def run_cmd(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def traced(
    calls: str, inject: str, fn: str, *, path: str | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """``fn(**kwargs)`` (``module:function``) in a fresh process under ``strace -f -e
    inject=...`` (no root needed: strace starts the child itself); ``path``: inject only
    into calls on that file (``-P``). ``--seccomp-bpf`` (stop only at the traced calls)
    is left out for ``signal=`` injection, which strace 6.1 then never performs."""
    strace = need_tool("strace", "strace")
    fast = [] if "signal=" in inject else ["--seccomp-bpf"]
    return subprocess.Popen(
        [
            strace,
            "-f",
            "-qq",
            *fast,
            "-o",
            "/dev/null",
            *(["-P", path] if path else []),
            "-e",
            f"trace={calls}",
            "-e",
            f"inject={inject}",
            *call_argv(fn, **kwargs),
        ],
        env=child_env(),
        cwd=str(REPO_ROOT),
        stderr=subprocess.PIPE,
    )


def finish_traced(proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """Wait for a child of ``traced`` (killed after ``timeout``); return its stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (root only), always unmounted."""
    need_root("tmpfs mounts")
    path.mkdir(parents=True, exist_ok=True)
    try:
        run_cmd("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))
    except subprocess.CalledProcessError as exc:
        _missing(f"cannot mount tmpfs here: {exc.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=60)


@contextlib.contextmanager
def bindfs_view(source: Path, target: Path, options: str = "") -> Iterator[Path]:
    """A bindfs (FUSE) view of ``source`` at ``target``: a second "host" of one directory.

    ``options`` are FUSE mount options, e.g. ``negative_timeout=2`` to cache "no such
    file" answers like an NFS client's lookup cache.
    """
    need_root("FUSE mounts")
    bindfs = need_tool("bindfs", "bindfs")
    if not Path("/dev/fuse").exists():
        _missing("needs /dev/fuse")
    target.mkdir(parents=True, exist_ok=True)
    try:
        run_cmd(bindfs, "--no-allow-other", *(["-o", options] if options else []), str(source), str(target))
    except subprocess.CalledProcessError as exc:
        _missing(f"bindfs failed here: {exc.stderr.decode(errors='replace').strip()}")
    try:
        yield target
    finally:
        for tool in ("fusermount3", "fusermount"):
            if (
                shutil.which(tool)
                and subprocess.run([tool, "-u", str(target)], check=False, capture_output=True).returncode
                == 0
            ):
                break
        else:
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


class FaultServer:
    """``apps.fault_server serve`` under ``fiu-run -x``: one command in, one JSON answer out."""

    def __init__(self, root: Path, log: Path, *, worker: bool = True) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                "fiu-run",
                "-x",
                sys.executable,
                "-m",
                "apps.fault_server",
                "serve",
                str(root),
                *([] if worker else ["--inline"]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=child_env(),
            cwd=str(REPO_ROOT),
        )
        self.log = log

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"fault server died on {cmd}; stderr:\n{self.log.read_text()[-3000:]}")
        return dict(json.loads(line))

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.call_quit()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._log.close()

    def call_quit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"op": "quit"}\n')
        self.proc.stdin.flush()
