"""Run durably's benchmarks, the floors and the peers in one go; print one table.

    python benchmarks/run.py                 # everything (installs the peers on first use)
    python benchmarks/run.py --quick         # small sizes: a smoke test
    python benchmarks/run.py --only durably  # one benchmark (and what it needs), or a list
    python benchmarks/run.py --json out.json # also dump every figure as JSON

Benchmarks are the ``@benchmark`` functions of ``benchmarks/bench_*.py`` (see
``benchmarks/registry.py``); progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `benchmarks` and `durably` importable
    sys.path.insert(0, str(REPO))

from benchmarks.registry import BENCHMARKS, Benchmark, Context, Result, Sizes  # noqa: E402
from benchmarks.report import check_targets, render, render_targets  # noqa: E402

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "durably-bench-cache"
DEFAULT_PEERS = REPO / "benchmarks" / ".peers"


def load_benchmarks() -> list[Result]:
    """Import every ``benchmarks/bench_*.py``; a module that fails becomes an n/a row."""
    failed = []
    for path in sorted((REPO / "benchmarks").glob("bench_*.py")):
        try:
            importlib.import_module(f"benchmarks.{path.stem}")
        except Exception as exc:  # noqa: BLE001 -- one broken module must not stop the rest
            error = f"import failed: {type(exc).__name__}: {exc}"
            print(f"benchmarks/{path.name}: {error}", file=sys.stderr)
            failed.append(Result(path.stem, path.stem, "durably", None, error=error))
    return failed


def select(names: list[str] | None) -> list[Benchmark]:
    """The benchmarks to run, in registry order, with what they need before them."""
    by_name = {b.name: b for b in BENCHMARKS}
    if not names:
        return list(BENCHMARKS)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(by_name)}")
    wanted: list[str] = []

    def add(name: str) -> None:
        for need in by_name[name].needs:
            add(need)
        if name not in wanted:
            wanted.append(name)

    for n in names:
        add(n)
    return [b for b in BENCHMARKS if b.name in wanted]


def machine(workdir: Path) -> dict:
    node = shutil.which("node")
    node_version = (
        subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        if node
        else "none"
    )
    try:
        fs = subprocess.run(
            ["df", "-T", str(workdir)], capture_output=True, text=True, check=False
        ).stdout.splitlines()
    except OSError:
        fs = []
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": platform.python_version(),
        "node": node_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "filesystem": fs[-1].split()[1] if len(fs) > 1 else "?",
        "commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--only", help="comma-separated benchmark names (e.g. durably,coji)")
    p.add_argument("--json", metavar="OUT", help="write all figures and targets as JSON")
    p.add_argument(
        "--dir",
        help="where to make the scratch directory (its file system is "
        "the one measured; default: the system temp dir)",
    )
    p.add_argument(
        "--cache",
        default=str(DEFAULT_CACHE),
        help="kept between runs: generated roots (default: %(default)s)",
    )
    p.add_argument(
        "--peers-dir", default=str(DEFAULT_PEERS), help="where the peers are installed (default: %(default)s)"
    )
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)

    failed = load_benchmarks()
    if args.list:
        for b in BENCHMARKS:
            print(b.name + (f" (needs {', '.join(b.needs)})" if b.needs else ""))
        return 0
    chosen = select([n.strip() for n in args.only.split(",")] if args.only else None)

    workdir = Path(tempfile.mkdtemp(prefix="durably-bench-", dir=args.dir))
    ctx = Context(
        quick=args.quick,
        sizes=Sizes.quick() if args.quick else Sizes(),
        workdir=workdir,
        cache=Path(args.cache),
        peers_dir=Path(args.peers_dir),
        verbose=not args.quiet,
    )
    started = datetime.now(UTC)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "benchmarks": [b.name for b in chosen],
        "load_before": os.getloadavg(),
        **machine(workdir),
    }
    results: list[Result] = [] if args.only else failed
    try:
        for b in chosen:
            t0 = time.monotonic()
            try:
                results.extend(b.fn(ctx))
            except Exception as exc:  # noqa: BLE001 -- a broken benchmark must not hide the rest
                ctx.log(f"{b.name}: failed: {type(exc).__name__}: {exc}")
                results.append(Result(b.name, b.name, "durably", None, error=f"{type(exc).__name__}: {exc}"))
            ctx.log(f"{b.name}: done in {time.monotonic() - t0:.1f} s")
            if args.json:  # a long run can be read while it goes on
                dump(args.json, meta, results, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    meta["load_after"] = os.getloadavg()

    checks = check_targets(results)
    print(
        f"durably benchmarks, {meta['started']} UTC, commit {meta['commit'] or '?'}"
        f"{' (--quick sizes)' if args.quick else ''}"
    )
    print(
        f"python {meta['python']}, node {meta['node']}, {meta['cpus']} CPUs, "
        f"{meta['filesystem']}; load {meta['load_before'][0]:.2f} before, "
        f"{meta['load_after'][0]:.2f} after; {meta['seconds']:.0f} s"
    )
    print()
    print(render(results))
    if not args.quick:
        print()
        print(render_targets(checks))
    if args.json:
        dump(args.json, meta, results, dict(checks))
    sys.stdout.flush()
    for cleanup in ctx.cleanups:  # slow housekeeping, after the table is out
        cleanup()
    return 0


def dump(path: str, meta: dict, results: list[Result], targets: dict | None) -> None:
    """Write the figures as JSON (``targets`` None: a partial dump during the run)."""
    Path(path).write_text(
        json.dumps(
            {
                "meta": meta,
                "results": [dataclasses.asdict(r) for r in results],
                "targets": targets,
                "complete": targets is not None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
