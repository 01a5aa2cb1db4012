"""The monitor's figures over a big root: first screen, change-to-row delay, memory, idle CPU.

``bench_monitor(root)`` runs the real app headless (``App.run_test``, 120x40) in a fresh
interpreter, reading the root only through durably's public API, as ``durably monitor`` does.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.registry import Context, Result, benchmark, result_from

SECTION = "monitor"


def _wait(condition: Any, timeout: float) -> Any:
    async def waiter(pilot: Any) -> float:
        start = time.perf_counter()
        while not condition():
            if time.perf_counter() - start > timeout:
                raise TimeoutError("condition not met")
            await pilot.pause(0.05)
        return time.perf_counter() - start

    return waiter


def bench_monitor(root_100k: str, changes: int = 5, idle_seconds: float = 5.0) -> dict[str, float]:
    """Measure the monitor over ``root_100k`` (any root; a big one is the point).

    Returns:
        ``first_screen_s``: start to the newest page on screen. ``full_load_s``: start to
        every run indexed. ``change_to_row_s``: median delay from a trigger by another
        ``Durably`` instance to its row in the list (poll interval 0.3 s). ``peak_rss_mb``:
        peak resident memory of the process. ``idle_cpu_pct``: CPU used while idle, in
        percent of one core. ``runs``: how many runs were indexed.
    """
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    from pydantic import BaseModel  # noqa: PLC0415

    from durably import Durably, Step, define_job  # noqa: PLC0415
    from durably_monitor import MonitorApp, Source  # noqa: PLC0415

    class Ping(BaseModel):
        n: int

    @define_job(name="bench-monitor-ping", input=Ping)
    def ping(step: Step, payload: Ping) -> None:
        return None

    out: dict[str, float] = {}

    async def main() -> None:
        app = MonitorApp(Source(Durably(root_100k), root_100k))  # timings start here
        async with app.run_test(size=(120, 40)) as pilot:
            await _wait(lambda: not app.loading and app.cursor is not None, 1800)(pilot)
            # the app stamps both moments itself (a tight wait loop here would slow it down)
            out["first_screen_s"] = app.timings["first_page"]
            out["full_load_s"] = app.timings["loaded"]
            out["runs"] = float(len(app.index.rows))

            writer = Durably(root_100k, jobs=[ping], fsync=False)
            handle = writer.jobs["bench-monitor-ping"]
            delays, made = [], []
            for i in range(changes):
                run = await asyncio.to_thread(handle.trigger, {"n": i})
                made.append(run.id)
                t0 = time.perf_counter()
                await _wait(lambda rid=run.id: app.index.position_of(rid) is not None, 30)(pilot)
                delays.append(time.perf_counter() - t0)
            out["change_to_row_s"] = statistics.median(delays)
            for run_id in made:  # leave the shared root as it was
                await asyncio.to_thread(writer.cancel, run_id)
                await asyncio.to_thread(writer.delete_run, run_id)

            await pilot.pause(1.0)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await pilot.pause(idle_seconds)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            out["idle_cpu_pct"] = 100.0 * cpu / wall

    asyncio.run(main())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


@benchmark("monitor")
def monitor_figures(ctx: Context) -> list[Result]:
    from benchmarks.bench_durably import _cached_root  # noqa: PLC0415

    count = max(ctx.sizes.get_runs)
    root, how = _cached_root(ctx, count)
    if root is None:
        return [Result(SECTION, f"first screen, {count:,} runs", "durably", None, error=how)]
    ctx.log(f"monitor: headless over {count:,} runs")
    r = ctx.child("benchmarks.bench_monitor", "bench_monitor", root_100k=str(Path(root) / "root"))
    note = f"headless 120x40; root {how}"
    if "peak_rss_mb" in r:  # report.fmt_value prints seconds and rates only: these go in notes
        note += f"; peak RSS {r['peak_rss_mb']:.0f} MB; idle CPU {r['idle_cpu_pct']:.1f}% of a core"
    return [
        result_from(r, "first_screen_s", SECTION, f"first screen, {count:,} runs", "durably", note=note),
        result_from(r, "full_load_s", SECTION, f"every run indexed, {count:,} runs", "durably"),
        result_from(
            r,
            "change_to_row_s",
            SECTION,
            "trigger elsewhere to row on screen (median)",
            "durably",
            note="poll interval 0.3 s",
        ),
    ]
