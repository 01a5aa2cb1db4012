"""durably's figures: step cost, trigger rate, 500 x 10 end to end, replay, get_runs.

Each figure runs in a fresh interpreter (``benchmarks._durably_jobs``), like the peers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import sys
import uuid
from pathlib import Path

from benchmarks.bench_floors import APPEND, APPEND_FSYNC
from benchmarks.registry import REPO, Context, Result, benchmark, result_from, run_json

JOBS = "benchmarks._durably_jobs"
# Bump when the generated roots of the get_runs figure must be rebuilt for a reason
# the core's sources do not show.
CACHE_FORMAT = 1

MODES = [(True, "power-loss safe"), (False, "process-crash safe")]


def step_row(ctx: Context) -> str:
    return f"step checkpoint ({ctx.sizes.steps} steps, per step)"


def e2e_row(ctx: Context) -> str:
    return f"{ctx.sizes.e2e_runs} runs x {ctx.sizes.e2e_steps} steps, end to end"


def replay_row(ctx: Context) -> str:
    return f"replay {ctx.sizes.replay_steps:,} steps to the next one"


TRIGGER_ROW = "trigger, no worker"


@benchmark("durably", needs=("floors",))
def durably_figures(ctx: Context) -> list[Result]:
    s = ctx.sizes
    out: list[Result] = []
    for fsync, section in MODES:
        tag = f"fsync={fsync}"
        ctx.log(f"durably {tag}: step checkpoint")
        r = ctx.child(JOBS, "step", root=str(ctx.scratch("d-step") / "root"), fsync=fsync, steps=s.steps)
        res = result_from(
            r, "step_s", section, step_row(ctx), "durably", floor=APPEND_FSYNC if fsync else APPEND
        )
        res.floor_value = r.get("floor_s")
        out.append(res)

        ctx.log(f"durably {tag}: trigger rate")
        r = ctx.child(
            JOBS, "trigger", root=str(ctx.scratch("d-trig") / "root"), fsync=fsync, count=s.triggers
        )
        out.append(result_from(r, "trigger_per_s", section, TRIGGER_ROW, "durably", unit="/s"))

        ctx.log(f"durably {tag}: {s.e2e_runs} x {s.e2e_steps} end to end")
        r = ctx.child(
            JOBS,
            "e2e",
            root=str(ctx.scratch("d-e2e") / "root"),
            fsync=fsync,
            runs=s.e2e_runs,
            steps=s.e2e_steps,
        )
        out.append(result_from(r, "e2e_s", section, e2e_row(ctx), "durably"))

        ctx.log(f"durably {tag}: replay of {s.replay_steps} steps")
        out.append(_replay(ctx, fsync, section))
    out.extend(_get_runs(ctx))
    return out


REPLAY_REPEATS = 3


def _replay(ctx: Context, fsync: bool, section: str) -> Result:
    """Kill a run at step N+1 once, then resume copies of its root in fresh processes."""
    base = ctx.scratch("d-replay")
    root = base / "root"
    steps = ctx.sizes.replay_steps
    params = json.dumps({"root": str(root), "steps": steps})
    argv = [sys.executable, "-m", "benchmarks._child", JOBS, "replay_setup", params]
    setup = run_json(argv, cwd=REPO, env={"DURABLY_BENCH_KILL": "1"}, expect_kill=True)
    if setup.get("error"):
        return Result(section, replay_row(ctx), "durably", None, error=setup["error"])
    copies = [base / f"copy-{k}" for k in range(REPLAY_REPEATS)]
    for copy in copies:  # all copies before any resume: each is the killed run, untouched
        shutil.copytree(root, copy, symlinks=True)
    times = []
    for copy in copies:
        r = ctx.child(JOBS, "replay", root=str(copy), fsync=fsync, steps=steps)
        if r.get("error") or r.get("replay_s") is None:
            return result_from(r, "replay_s", section, replay_row(ctx), "durably")
        times.append(r["replay_s"])
    ms = ", ".join(f"{t * 1e3:.0f}" for t in times)
    note = f"median of {len(times)} resumes (ms: {ms}), each timed from process_one() in a fresh process"
    return Result(section, replay_row(ctx), "durably", statistics.median(times), note=note)


def _cache_key() -> str:
    """durably's version and format version, and a hash of its sources: a generated root
    is reused only by the same core (a changed store may lay runs out differently)."""
    h = hashlib.sha256(str(CACHE_FORMAT).encode())
    for path in sorted((REPO / "durably").rglob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    from durably import __version__  # noqa: PLC0415 -- not in the orchestrator's imports
    from durably._records import FORMAT_VERSION  # noqa: PLC0415

    return f"{__version__}-f{FORMAT_VERSION}-{h.hexdigest()[:12]}"


def _cached_root(ctx: Context, count: int) -> tuple[Path | None, str]:
    """A root with ``count`` pending runs (``<dir>/root``), built once per core version
    under the cache. Roots of other versions are moved aside at once and deleted after
    the last benchmark (deleting 100,000 runs takes minutes on a busy disk)."""
    try:
        key = _cache_key()
    except Exception as exc:  # noqa: BLE001 -- a broken core: report, do not crash the run
        return None, f"cannot import durably: {type(exc).__name__}: {exc}"
    base = ctx.cache / "get_runs"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        if not old.name.startswith((key, ".stale-")):
            old.rename(base / f".stale-{uuid.uuid4().hex[:8]}")
    if not any(c is _purge_stale for c in ctx.cleanups):
        ctx.cleanups.append(_purge_stale)
        _STALE.append((ctx, base))
    root = base / f"{key}-{count}"
    if (root / ".complete").exists():
        return root, "cached"
    shutil.rmtree(root, ignore_errors=True)
    ctx.log(f"durably: building a root of {count:,} runs under {base} (cached for reruns)")
    r = ctx.child(JOBS, "build_runs", root=str(root / "root"), count=count, timeout=1800)
    if r.get("error"):
        return None, r["error"]
    (root / ".complete").write_text(str(count))
    return root, f"built in {r['build_s']:.0f} s"


_STALE: list[tuple[Context, Path]] = []


def _purge_stale() -> None:
    for ctx, base in _STALE:
        stale = list(base.glob(".stale-*"))
        if stale:
            ctx.log(f"durably: deleting {len(stale)} cached root(s) of older cores")
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
    _STALE.clear()


def _get_runs(ctx: Context) -> list[Result]:
    out = []
    for count in ctx.sizes.get_runs:
        root, how = _cached_root(ctx, count)
        first_row = f"get_runs(limit=50), {count:,} runs, first call"
        warm_row = f"get_runs(limit=50), {count:,} runs, repeated"
        if root is None:
            out.append(Result("reads", first_row, "durably", None, error=how))
            continue
        ctx.log(f"durably: get_runs over {count:,} runs")
        r = ctx.child(JOBS, "get_runs", root=str(root / "root"))
        out.append(
            result_from(r, "first_s", "reads", first_row, "durably", note=f"fresh process; root {how}")
        )
        out.append(result_from(r, "median_s", "reads", warm_row, "durably", note="median"))
    return out
