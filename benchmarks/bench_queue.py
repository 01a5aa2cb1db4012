"""Queueing on a concurrency key (issue 13, SPEC §14): what ``coalesce="queue"`` costs.

    python benchmarks/bench_queue.py [WORKDIR]      # or: python benchmarks/run.py --only queue

- **500 queued runs end to end**: 50 keys x 10 runs queued on each (``coalesce="queue"``)
  against 500 runs with no key, one-step runs drained by ``process_until_idle()`` in
  one process (best of three, the roots alternating). Target: the queued rate is at
  least 0.8x the unkeyed one. Beside them, 500 runs with a key each and no queue: what
  the key itself costs a claim (its execution slot, ``keys/x``), queue or not.
- **A claim behind a long queue**: 10,000 runs queued on one key whose first run is
  being executed by another process (so the key is busy), then unkeyed one-step runs
  triggered after them; the figure is the mean time of ``process_one()`` claiming and
  executing one of those, against the same root with the busy key and no queue behind
  it (issue 15 asks for <= 1.5x). Every claim pass lists the queue directory, which holds
  one marker per queued run; the queued runs themselves are never read (only the first
  of the key, whose predecessor is executing).

Prints the figures and their ratios from this one run (fsync off: the figures are the
claimers' CPU, which is what a queue adds). Each figure runs in a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydantic

from benchmarks.registry import REPO, Context, Result, benchmark
from durably import BatchItem, Durably, Step, define_job

SECTION = "queueing on a concurrency key"


class In(pydantic.BaseModel):
    n: int = 0
    gate: str = ""  # the holder's run blocks in its step until this file exists


@define_job(name="one", input=In)
def one(step: Step, p: In) -> None:
    def body() -> int:
        while p.gate and not os.path.exists(p.gate):
            time.sleep(0.005)
        return p.n

    step.run("s", body)


def _fresh(path: Path) -> Durably:
    shutil.rmtree(path, ignore_errors=True)
    return Durably(path, jobs=[one], fsync=False)


def _trigger_queued(d: Durably, keys: int, per_key: int) -> None:
    """``per_key`` runs queued on each of ``keys`` keys, in rounds (key 0..n, key 0..n…),
    as a fan-out per key would trigger them."""
    h = d.register(one)
    for i in range(per_key):
        h.batch_trigger([BatchItem(In(n=i), concurrency_key=f"k{k}", coalesce="queue") for k in range(keys)])


def queued_e2e(workdir: str, keys: int = 50, per_key: int = 10) -> dict[str, Any]:
    """Claim + execute ``keys * per_key`` queued runs against as many unkeyed runs."""
    work = Path(workdir)
    runs = keys * per_key
    best: dict[str, float] = {}
    for kind in ("unkeyed", "queued", "keyed") * 3:
        d = _fresh(work / kind)
        if kind == "queued":
            _trigger_queued(d, keys, per_key)
        elif kind == "keyed":  # what a key costs without a queue: one run per key
            d.register(one).batch_trigger([BatchItem(In(n=i), concurrency_key=f"k{i}") for i in range(runs)])
        else:
            d.register(one).batch_trigger([In(n=i) for i in range(runs)])
        t = time.perf_counter()
        done = d.process_until_idle()
        elapsed = time.perf_counter() - t
        if done != runs:
            return {"error": f"{kind}: processed {done} of {runs} runs"}
        best[kind] = min(best.get(kind, float("inf")), elapsed)
    return {
        "runs": runs,
        "unkeyed_per_s": runs / best["unkeyed"],
        "queued_per_s": runs / best["queued"],
        "keyed_per_s": runs / best["keyed"],
        "ratio": best["unkeyed"] / best["queued"],
        "keyed_ratio": best["unkeyed"] / best["keyed"],
    }


def _holder(root: Path, gate: Path) -> subprocess.Popen[bytes]:
    """Another process that claims the busy key's first run and executes it until ``gate``."""
    code = "from benchmarks.bench_queue import hold; import sys; hold(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=REPO, env=env)


def hold(root: str) -> None:
    """The holder's side: execute the one run there is (it blocks until its gate)."""
    Durably(root, jobs=[one], fsync=False).process_one()


def claim_behind_queue(workdir: str, queued: int = 10_000, claims: int = 200) -> dict[str, Any]:
    """Mean ``process_one()`` of an unkeyed run behind ``queued`` runs queued on a busy
    key, and behind the busy key alone."""
    work = Path(workdir)
    per_claim: dict[int, float] = {}
    for size in (0, queued, 0, queued):
        root = work / f"q{size}"
        d = _fresh(root)
        h = d.register(one)
        gate = work / f"gate-{size}"
        gate.unlink(missing_ok=True)
        head = h.trigger(In(gate=str(gate)), concurrency_key="busy")
        holder = _holder(root, gate)
        try:
            deadline = time.monotonic() + 60
            while (run := d.get_run(head.id)) is None or run.status != "leased":
                if time.monotonic() > deadline or holder.poll() is not None:
                    return {"error": "the holder process did not claim the busy key's run"}
                time.sleep(0.01)
            for start in range(0, size, 1000):
                n = min(1000, size - start)
                h.batch_trigger(
                    [BatchItem(In(n=i), concurrency_key="busy", coalesce="queue") for i in range(n)]
                )
            h.batch_trigger([In(n=i) for i in range(claims)])
            d.process_one()  # warm: the first pass reads what later ones have cached
            t = time.perf_counter()
            for _ in range(claims - 1):
                if not d.process_one():
                    return {"error": "an unkeyed run was not claimed"}
            elapsed = (time.perf_counter() - t) / (claims - 1)
        finally:
            gate.touch()
            with contextlib.suppress(subprocess.TimeoutExpired):
                holder.wait(60)
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        per_claim[size] = min(per_claim.get(size, float("inf")), elapsed)
    return {
        "queued": queued,
        "claim_s": per_claim[queued],
        "claim_no_queue_s": per_claim[0],
        "ratio": per_claim[queued] / per_claim[0],
    }


@benchmark("queue")
def queue_figures(ctx: Context) -> list[Result]:
    keys, per_key = (10, 5) if ctx.quick else (50, 10)
    queued = 1000 if ctx.quick else 10_000
    out: list[Result] = []
    ctx.log(f"queue: {keys} keys x {per_key} queued runs against {keys * per_key} unkeyed")
    r = ctx.child(
        "benchmarks.bench_queue", "queued_e2e", workdir=str(ctx.scratch("q-e2e")), keys=keys, per_key=per_key
    )
    row = f"claim + execute {keys * per_key} runs, {keys} keys x {per_key} queued"
    note = (
        "" if r.get("error") else f"{r['ratio']:.2f}x the rate of unkeyed runs (target >= 0.8x); fsync=False"
    )
    out.append(Result(SECTION, row, "durably", r.get("queued_per_s"), "/s", note=note, error=r.get("error")))
    out.append(
        Result(
            SECTION, f"claim + execute {keys * per_key} unkeyed runs", "durably", r.get("unkeyed_per_s"), "/s"
        )
    )
    note = "" if r.get("error") else f"{r['keyed_ratio']:.2f}x the rate of unkeyed runs: what a key costs"
    out.append(
        Result(
            SECTION,
            f"claim + execute {keys * per_key} runs, one key each (no queue)",
            "durably",
            r.get("keyed_per_s"),
            "/s",
            note=note,
        )
    )
    ctx.log(f"queue: a claim behind {queued:,} runs queued on a busy key")
    r = ctx.child(
        "benchmarks.bench_queue", "claim_behind_queue", workdir=str(ctx.scratch("q-claim")), queued=queued
    )
    note = (
        "" if r.get("error") else f"{r['ratio']:.2f}x a claim with no queue (issue 15: <= 1.5x); fsync=False"
    )
    out.append(
        Result(
            SECTION,
            f"claim + execute an unkeyed run behind {queued:,} runs queued on a busy key",
            "durably",
            r.get("claim_s"),
            note=note,
            error=r.get("error"),
        )
    )
    out.append(
        Result(
            SECTION,
            "claim + execute an unkeyed run, busy key, no queue",
            "durably",
            r.get("claim_no_queue_s"),
        )
    )
    return out


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="durably-bench-"))
    e2e = queued_e2e(str(work / "e2e"))
    print(json.dumps(e2e))
    if "error" not in e2e:
        print(
            f"claim + execute 500 runs: unkeyed {e2e['unkeyed_per_s']:.0f} runs/s, "
            f"50 keys x 10 queued {e2e['queued_per_s']:.0f} runs/s: ratio {e2e['ratio']:.2f}x; "
            f"one key each {e2e['keyed_per_s']:.0f} runs/s: ratio {e2e['keyed_ratio']:.2f}x"
        )
    claim = claim_behind_queue(str(work / "claim"))
    print(json.dumps(claim))
    if "error" not in claim:
        print(
            f"claim + execute an unkeyed run: {claim['claim_no_queue_s'] * 1e3:.2f} ms with no queue, "
            f"{claim['claim_s'] * 1e3:.2f} ms behind {claim['queued']:,} queued on a busy key: "
            f"ratio {claim['ratio']:.2f}x"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
