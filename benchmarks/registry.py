"""The benchmark registry: what a benchmark is, what it reports, and how it runs work.

A benchmark is a function ``fn(ctx: Context) -> list[Result]`` registered with
``@benchmark("name")`` in any module ``benchmarks/bench_*.py`` (run.py imports them
all, in name order). Each ``Result`` is one cell of the table: a row in a section,
for one system (``durably``, a peer, or ``floor``).

Adding figures later (the multiprocess executor, the monitor) is a new file::

    # benchmarks/bench_executor.py
    from benchmarks.registry import Context, Result, benchmark

    @benchmark("executor", needs=("floors",))
    def executor(ctx: Context) -> list[Result]:
        out = ctx.child("benchmarks.bench_executor", "e2e_processes", processes=2)
        return [Result("multiprocess executor", "500 runs x 10 CPU steps, 2 processes",
                       "durably", out.get("e2e_s"), "s", error=out.get("error"))]

Work that should run in a fresh interpreter (as the peers do) goes through
``ctx.child(module, function, **params)``: it runs ``module.function(**params)`` in a
new ``python`` process with a timeout and returns its dict (or ``{"error": ...}``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Sections in table order; a section not listed here is printed after these.
SECTIONS = [
    "floors",
    "power-loss safe",
    "process-crash safe",
    "reads",
    "multiprocess executor",
    "monitor",
]

# Systems in column order. "floor" values are printed in the floors section only.
SYSTEMS = ["durably", "coji", "dbos"]
SYSTEM_TITLES = {"durably": "durably", "coji": "@coji/durably", "dbos": "DBOS", "floor": "floor"}


@dataclass
class Result:
    """One figure: the cell (section, row, system) of the table.

    ``value`` is seconds when ``unit`` is ``"s"`` and a rate when ``unit`` is ``"/s"``;
    ``None`` with ``error`` set prints as ``n/a (error)``. ``floor`` names a row of
    the "floors" section to print this figure's ratio to; ``floor_value``, when set, is
    that floor measured again right beside the figure (in the same process), and is
    used instead of the floors section's value.
    """

    section: str
    row: str
    system: str
    value: float | None
    unit: str = "s"
    floor: str | None = None
    floor_value: float | None = None  # the floor measured beside this figure, if any
    note: str = ""
    error: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "/s"


@dataclass(frozen=True)
class Sizes:
    """Problem sizes; ``--quick`` uses the small set."""

    floor_iterations: int = 2000
    steps: int = 2000
    triggers: int = 2000
    e2e_runs: int = 500
    e2e_steps: int = 10
    replay_steps: int = 10_000
    get_runs: tuple[int, ...] = (10_000, 100_000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            floor_iterations=200,
            steps=200,
            triggers=100,
            e2e_runs=20,
            e2e_steps=10,
            replay_steps=1000,
            get_runs=(500, 2000),
        )


@dataclass
class Context:
    """What a benchmark gets: sizes, a scratch directory, a cache, and helpers."""

    quick: bool
    sizes: Sizes
    workdir: Path  # scratch for this run, removed at the end
    cache: Path  # kept between runs (generated roots), outside git
    peers_dir: Path  # installed peers, outside git
    verbose: bool = True
    started: float = field(default_factory=time.monotonic)
    # Run after every benchmark is measured (slow housekeeping that must not disturb them).
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def log(self, msg: str) -> None:
        if self.verbose:
            elapsed = time.monotonic() - self.started
            print(f"[{elapsed:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def scratch(self, name: str) -> Path:
        """A fresh, empty directory under the run's scratch dir."""
        path = self.workdir / name
        n = 1
        while path.exists():
            n += 1
            path = self.workdir / f"{name}-{n}"
        path.mkdir(parents=True)
        return path

    def child(
        self,
        module: str,
        function: str,
        *,
        timeout: float = 900,
        env: dict | None = None,
        **params: object,
    ) -> dict:
        """Run ``module.function(**params)`` in a fresh interpreter; return its dict."""
        argv = [sys.executable, "-m", "benchmarks._child", module, function, json.dumps(params)]
        return run_json(argv, cwd=REPO, timeout=timeout, env=env)


def run_json(
    argv: list[str],
    *,
    cwd: Path | None = None,
    timeout: float = 900,
    env: dict | None = None,
    expect_kill: bool = False,
) -> dict:
    """Run a command whose last stdout line is a JSON object; never raises.

    With ``expect_kill`` the command must die by SIGKILL (it kills itself on purpose)
    and ``{}`` is returned.
    """
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    except OSError as exc:
        return {"error": f"cannot run {argv[0]}: {exc}"}
    if expect_kill:
        if proc.returncode == -9:
            return {}
        return {"error": f"expected SIGKILL, got exit {proc.returncode}: {_tail(proc)}"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        return {"error": f"exit {proc.returncode}, no JSON: {_tail(proc)}"}
    try:
        out = json.loads(lines[-1])
    except ValueError:
        return {"error": f"bad JSON: {lines[-1][:200]}"}
    return out if isinstance(out, dict) else {"error": f"not an object: {lines[-1][:200]}"}


def _tail(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or proc.stdout or "").strip().splitlines()
    return text[-1][:300] if text else "(no output)"


@dataclass
class Benchmark:
    name: str
    fn: Callable[[Context], list[Result]]
    needs: tuple[str, ...] = ()


BENCHMARKS: list[Benchmark] = []


def benchmark(
    name: str, *, needs: tuple[str, ...] = ()
) -> Callable[[Callable[[Context], list[Result]]], Callable[[Context], list[Result]]]:
    """Register ``fn`` as benchmark ``name``; ``needs`` are run first when selected."""

    def deco(fn: Callable[[Context], list[Result]]) -> Callable[[Context], list[Result]]:
        BENCHMARKS.append(Benchmark(name, fn, needs))
        return fn

    return deco


def result_from(
    out: dict,
    key: str,
    section: str,
    row: str,
    system: str,
    *,
    unit: str = "s",
    floor: str | None = None,
    note: str = "",
) -> Result:
    """A Result from a child's dict: ``out[key]``, or n/a with the child's error."""
    value = out.get(key)
    error = out.get("error")
    if value is None and error is None:
        error = f"no {key!r} in output"
    return Result(section, row, system, value, unit, floor=floor, note=note, error=error)
