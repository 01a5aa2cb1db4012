"""The test side of child processes: their environment, the fork server's client
(``Zygote``; the server is ``zygote``), ``python`` children, and polling.

Every child finds durably and this package the same way: ``PYTHONPATH`` holds the
repository, then ``tests/``, then whatever the test process had (so a checkout put
first on ``PYTHONPATH`` stays first in its children too).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python that imports durably and ``apps``.

    ``PYTHONDONTWRITEBYTECODE``: CPython writes ``.pyc`` files by temp file and rename,
    which fault injection and system-call traces would otherwise count as durably's.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def poll(
    predicate: Callable[[], T | Literal[False] | None], timeout: float = 30.0, what: str = "condition"
) -> T:
    """Return the first truthy value of ``predicate()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.005)


def start_python(args: Sequence[str], **extra_env: str) -> subprocess.Popen[str]:
    """Start ``apps.second_process.main(ARGS)`` (its command line) in a child Python.

    The module is imported by its name, never run as ``__main__``: values the child
    pickles name the same classes in the test process."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from apps.second_process import main; main(sys.argv[1:])", *args],
        env=child_env(**extra_env),
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str, str]:
    """Wait for a child started by ``start_python``; return (returncode, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"child did not finish in {timeout} s; stderr:\n{err}") from None
    return proc.returncode, out, err


def call_argv(fn: str, **kwargs: Any) -> list[str]:
    """The command line that runs ``fn(**kwargs)`` (``module:function``) in a fresh
    process, as the fork server would in a forked one (see ``apps.call``)."""
    return [sys.executable, "-m", "apps.call", fn, json.dumps(kwargs)]


class Zygote:
    """A running fork server; every child it forks is a fresh process with durably loaded."""

    def __init__(self, log_path: Path, prefix: list[str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "apps.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=child_env(),
            cwd=str(REPO_ROOT),
        )
        self.live: set[int] = set()

    def _call(self, msg: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            pid = msg.get("pid")
            if pid is not None:  # a hung child: kill it by pid, then read its status
                os.kill(pid, signal.SIGKILL)
                ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            if not ready:
                raise AssertionError(
                    f"fork server did not answer {msg} in {timeout} s; stderr:\n{self.stderr()}"
                )
            line = self.proc.stdout.readline()
            raise AssertionError(
                f"child {pid} hung for {timeout} s and was killed: {line!r}; stderr:\n{self.stderr()}"
            )
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"fork server died; stderr:\n{self.stderr()}")
        return dict(json.loads(line))

    def spawn(self, fn: str, group: str | None = None, **kwargs: Any) -> int:
        """Fork a child running ``fn(**kwargs)`` (``module:function``); return its pid."""
        pid = int(self._call({"op": "spawn", "fn": fn, "kwargs": kwargs, "group": group})["pid"])
        self.live.add(pid)
        return pid

    def release(self, group: str) -> None:
        """Let every child of ``group`` start at once."""
        self._call({"op": "release", "group": group})

    def wait(self, pid: int, timeout: float = 60.0) -> int:
        """Exit code of a child (``-9`` when SIGKILLed); kills it after ``timeout``."""
        code = int(self._call({"op": "wait", "pid": pid}, timeout)["code"])
        self.live.discard(pid)
        return code

    def run(self, fn: str, timeout: float = 60.0, **kwargs: Any) -> int:
        """Spawn a child and wait for it; return its exit code."""
        return self.wait(self.spawn(fn, **kwargs), timeout)

    def check(self, fn: str, timeout: float = 60.0, **kwargs: Any) -> None:
        """Run a child that must exit 0."""
        code = self.run(fn, timeout, **kwargs)
        assert code == 0, f"{fn}({kwargs}) exited {code}; stderr:\n{self.stderr()}"

    def stderr(self) -> str:
        """What the server and its children wrote to stderr (the last 8 KB)."""
        self._log.flush()
        return self.log_path.read_bytes()[-8192:].decode(errors="replace")

    def close(self) -> None:
        """Kill children still alive (by pid), then stop the server."""
        for pid in list(self.live):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            with contextlib.suppress(AssertionError):
                self.wait(pid, 10)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
