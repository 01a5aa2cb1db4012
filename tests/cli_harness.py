"""Running `durably` as a real subprocess from the tests (cwd `tests/`, so `apps.*` imports)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

TESTS = Path(__file__).resolve().parent
APP = "apps.cli_app:durably"
T = TypeVar("T")


def env() -> dict[str, str]:
    """The environment of a `durably` subprocess: no inherited root, no colours."""
    out = {k: v for k, v in os.environ.items() if k != "DURABLY_ROOT"}
    out["NO_COLOR"] = "1"
    out["PYTHONUNBUFFERED"] = "1"
    return out


def durably_cli(
    *args: str | Path,
    timeout: float = 60.0,
    cwd: Path = TESTS,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m durably ARGS` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "durably", *map(str, args)],
        cwd=cwd,
        env={**env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until(
    predicate: Callable[[], T | Literal[False] | None], timeout: float = 60.0, interval: float = 0.01
) -> T:
    """Poll `predicate` until it is truthy and return its value; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate!r}")
        time.sleep(interval)


class Worker:
    """`durably worker` in its own process group; its stderr is collected line by line."""

    def __init__(
        self,
        root: Path,
        *args: str,
        processes: int = 1,
        app: str = APP,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        cmd = [
            sys.executable,
            "-m",
            "durably",
            "worker",
            app,
            "--root",
            str(root),
            "--processes",
            str(processes),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=TESTS,
            env={**env(), **(extra_env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, needle: str, timeout: float = 60.0) -> str:
        """Wait until a line containing `needle` was printed; return it."""

        def find() -> str | None:
            return next((line for line in list(self.lines) if needle in line), None)

        try:
            return wait_until(find, timeout)
        except AssertionError:
            raise AssertionError(f"no line with {needle!r} in:\n{self.output()}") from None

    def ready(self, processes: int = 1) -> list[int]:
        """Wait for every process's start-up line; return their pids."""
        wait_until(lambda: sum("ready (root" in line for line in self.lines) >= processes)
        return [int(line.split("process ")[1].split()[0]) for line in self.lines if "ready (root" in line]

    def signal(self, signum: int, *, group: bool = False) -> None:
        if group:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        """SIGKILL the supervisor and its children (the whole process group)."""
        if self.proc.poll() is None or _group_alive(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def worker_processes(root: Path) -> list[int]:
    """The live worker processes (children of `durably worker`) serving `root`, whoever
    their parent is now (the process table, not the supervisor's word)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any("child_main" in arg for arg in argv) and str(root) in argv and pid_alive(int(entry)):
            pids.append(int(entry))
    return pids


def files_under(path: Path) -> list[str]:
    """Every path under `path` (empty if it does not exist): to prove nothing was written."""
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def one_line(text: str) -> str:
    """The single line of `text`, asserting there is exactly one."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


def popen_cli(*args: str | Path) -> subprocess.Popen[str]:
    """Start `python -m durably ARGS` without waiting."""
    return subprocess.Popen(
        [sys.executable, "-m", "durably", *map(str, args)],
        cwd=TESTS,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


__all__: Sequence[str] = [
    "APP",
    "TESTS",
    "Worker",
    "durably_cli",
    "env",
    "files_under",
    "one_line",
    "pid_alive",
    "popen_cli",
    "wait_until",
    "worker_processes",
]
