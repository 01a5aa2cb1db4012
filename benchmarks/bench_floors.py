"""Floors: what the file system itself costs here, measured in the same run.

- append + fdatasync of an already-open file: the least a durable commit can cost;
- the same append without any sync: the least a process-crash-safe commit can cost;
- write + fsync + rename + fsync(dir): a durable publish of a new file;
- create + write + close of a new file, no sync: a plain publish of a new file.

Each is the median of a few batches, so one stall of the shared disk does not make it.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from benchmarks.registry import Context, Result, benchmark

RECORD = b'{"v":1,"run":"01JD0000000000000000000000","step":"s123","gen":1,"out":123}\n' * 2

APPEND_FSYNC = "append + fdatasync (open file)"
APPEND = "append, no sync (open file)"
PUBLISH_FSYNC = "write+fsync+rename+fsync(dir)"
PUBLISH = "new file write+close, no sync"


BATCHES = 5  # each floor is the median of this many batches: the machine is noisy


def append_floor(path: Path, iterations: int, sync: bool) -> float:
    """Seconds per append (+ fdatasync) of RECORD to an already-open file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(min(20, iterations)):  # warm up: allocate the first blocks
            os.write(fd, RECORD)
            if sync:
                os.fdatasync(fd)
        per_batch = max(iterations // BATCHES, 1)
        times = []
        for _ in range(BATCHES):
            t0 = time.perf_counter()
            for _ in range(per_batch):
                os.write(fd, RECORD)
                if sync:
                    os.fdatasync(fd)
            times.append((time.perf_counter() - t0) / per_batch)
        return statistics.median(times)
    finally:
        os.close(fd)
        path.unlink()


def _append(directory: str, iterations: int, sync: bool) -> float:
    return append_floor(Path(directory) / f"append-{sync}.log", iterations, sync)


def _publish(directory: str, iterations: int, sync: bool) -> float:
    root = Path(directory) / ("publish-sync" if sync else "publish")
    root.mkdir()
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    per_batch = max(iterations // BATCHES, 1)
    times = []
    try:
        for b in range(BATCHES):
            t0 = time.perf_counter()
            for i in range(b * per_batch, (b + 1) * per_batch):
                final = root / f"step-{i:06d}.json"
                tmp = root / f".step-{i:06d}.json.tmp" if sync else final
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, RECORD)
                if sync:
                    os.fsync(fd)
                os.close(fd)
                if sync:
                    os.rename(tmp, final)
                    os.fsync(dfd)
            times.append((time.perf_counter() - t0) / per_batch)
        return statistics.median(times)
    finally:
        os.close(dfd)


def measure(directory: str, iterations: int) -> dict:
    """Child entry point: all four floors, seconds per operation."""
    return {
        "append_fsync": _append(directory, iterations, sync=True),
        "append": _append(directory, iterations * 5, sync=False),
        "publish_fsync": _publish(directory, max(iterations // 2, 50), sync=True),
        "publish": _publish(directory, iterations, sync=False),
    }


@benchmark("floors")
def floors(ctx: Context) -> list[Result]:
    ctx.log("floors: fsync and write costs of this file system")
    out = ctx.child(
        "benchmarks.bench_floors",
        "measure",
        directory=str(ctx.scratch("floors")),
        iterations=ctx.sizes.floor_iterations,
    )
    err = out.get("error")
    rows = [
        ("append_fsync", APPEND_FSYNC, "the durable floor"),
        ("append", APPEND, "the plain floor"),
        ("publish_fsync", PUBLISH_FSYNC, "two fsyncs and a rename"),
        ("publish", PUBLISH, ""),
    ]
    return [
        Result("floors", row, "floor", out.get(key), "s", note=note, error=err) for key, row, note in rows
    ]
