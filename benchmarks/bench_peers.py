"""The peers, installed on first use into the peers cache (outside git), same figures.

- @coji/durably 0.15 on Node, better-sqlite3 12 through Kysely, WAL with
  synchronous=FULL (power-loss safe) and synchronous=NORMAL (process-crash safe);
- DBOS with its SQLite system database: its default (rollback journal,
  synchronous=FULL: power-loss safe), and WAL with synchronous=NORMAL.

A peer that cannot be installed or run prints ``n/a (reason)``; the rest goes on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench_durably import TRIGGER_ROW, e2e_row, replay_row, step_row
from benchmarks.registry import Context, Result, benchmark, result_from, run_json

HERE = Path(__file__).resolve().parent
NODE_PACKAGES = ["@coji/durably@0.15.0", "better-sqlite3@12.6.2", "kysely@0.27", "zod@4"]
NODE_SCRIPT = "coji_durably_peer.mjs"
DBOS_REQUIREMENT = "dbos>=3.4,<4"
DBOS_SCRIPT = "dbos_peer.py"
REPLAY_NOTES = {
    "coji": "timed from processOne(), once the dead worker's lease expired",
    "dbos": "timed from DBOS.launch(), which recovers the workflow",
}


def _install(ctx: Context, name: str, spec: str, steps: list[tuple[list[str], Path]], installed: Path) -> str:
    """Run install commands once per ``spec``; return "" or the reason it failed.

    ``installed`` is a file the install creates: if it went missing, install again.
    """
    marker = ctx.peers_dir / f".{name}.installed"
    if marker.exists() and marker.read_text() == spec and installed.exists():
        return ""
    ctx.log(f"{name}: installing into {ctx.peers_dir} (first use; takes a few minutes)")
    for argv, cwd in steps:
        try:
            proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=1500, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{argv[0]} failed: {exc}"
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
            err = [ln for ln in lines if "ERR" in ln or "rror" in ln] or lines
            return f"{' '.join(argv[:2])} exit {proc.returncode}: {err[-1][:200]}"
    marker.write_text(spec)
    return ""


def ensure_node(ctx: Context) -> tuple[list[str] | None, str]:
    """The argv prefix that runs the @coji/durably peer script, or None and why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "node and npm are not installed"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major = version[1:].split(".")[0]
    if not version.startswith("v") or not major.isdigit() or int(major) < 20:
        return None, f"node {version}: better-sqlite3 12 needs node 20+"
    home = ctx.peers_dir / "node"
    home.mkdir(parents=True, exist_ok=True)
    pkg = home / "package.json"
    if not pkg.exists():
        pkg.write_text(json.dumps({"name": "durably-bench-peers", "private": True, "type": "module"}))
    spec = " ".join(NODE_PACKAGES) + f" {version}"
    argv = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *NODE_PACKAGES]
    err = _install(
        ctx,
        "node",
        spec,
        [(argv, home)],
        home / "node_modules" / "better-sqlite3" / "build" / "Release" / "better_sqlite3.node",
    )
    if err:
        return None, err
    # ESM resolves packages from the script's own folder: run a copy beside node_modules.
    shutil.copyfile(HERE / "peers" / NODE_SCRIPT, home / NODE_SCRIPT)
    return [node, str(home / NODE_SCRIPT)], ""


def ensure_dbos(ctx: Context) -> tuple[list[str] | None, str]:
    """The argv prefix that runs the DBOS peer script in its own venv, or None and why not."""
    venv = ctx.peers_dir / "dbos-venv"
    python = venv / "bin" / "python"
    steps = [
        ([sys.executable, "-m", "venv", "--clear", str(venv)], ctx.peers_dir),
        (
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", DBOS_REQUIREMENT],
            ctx.peers_dir,
        ),
    ]
    ctx.peers_dir.mkdir(parents=True, exist_ok=True)
    err = _install(ctx, "dbos", f"{DBOS_REQUIREMENT} {sys.version_info[:2]}", steps, python)
    if err:
        return None, err
    return [str(python), str(HERE / "peers" / DBOS_SCRIPT)], ""


def _peer(
    ctx: Context,
    system: str,
    ensure: Callable[[Context], tuple[list[str] | None, str]],
    modes: list[tuple[list[str], str, str]],
) -> list[Result]:
    s = ctx.sizes
    rows = [
        ("step", "step_s", step_row(ctx), "s", ["--steps", str(s.steps)]),
        ("trigger", "trigger_per_s", TRIGGER_ROW, "/s", ["--count", str(s.triggers)]),
        ("e2e", "e2e_s", e2e_row(ctx), "s", ["--runs", str(s.e2e_runs), "--steps", str(s.e2e_steps)]),
        ("replay", "replay_s", replay_row(ctx), "s", ["--steps", str(s.replay_steps)]),
    ]
    prefix, why = ensure(ctx)
    if prefix is None:
        ctx.log(f"{system}: n/a ({why})")
        return [
            Result(section, row, system, None, unit, error=why)
            for _, section, _ in modes
            for _, _, row, unit, _ in rows
        ]
    out = []
    for mode_args, section, tag in modes:
        for figure, key, row, unit, sizes in rows:
            ctx.log(f"{system} {tag}: {figure}")
            db = str(ctx.scratch(f"{system}-{figure}") / "bench.sqlite")
            argv = [*prefix, figure, "--db", db, *mode_args, *sizes]
            if figure == "replay":
                setup = run_json([*prefix, "replay-setup", "--db", db, *mode_args, *sizes], expect_kill=True)
                if setup.get("error"):
                    out.append(Result(section, row, system, None, unit, error=setup["error"]))
                    continue
            r = run_json(argv)
            note = ""
            if figure == "replay":
                note = REPLAY_NOTES[system]
            out.append(result_from(r, key, section, row, system, unit=unit, note=note))
    return out


@benchmark("coji")
def coji(ctx: Context) -> list[Result]:
    return _peer(
        ctx,
        "coji",
        ensure_node,
        [
            (["--sync", "FULL"], "power-loss safe", "WAL, synchronous=FULL"),
            (["--sync", "NORMAL"], "process-crash safe", "WAL, synchronous=NORMAL"),
        ],
    )


@benchmark("dbos")
def dbos(ctx: Context) -> list[Result]:
    return _peer(
        ctx,
        "dbos",
        ensure_dbos,
        [
            (["--mode", "default"], "power-loss safe", "default SQLite (synchronous=FULL)"),
            (["--mode", "wal-normal"], "process-crash safe", "WAL, synchronous=NORMAL"),
        ],
    )
