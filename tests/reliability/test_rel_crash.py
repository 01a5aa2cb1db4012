"""A crash at any system call, injected from outside the process (plan case C6 of
docs/reliability.md): ``strace -e inject=...:signal=SIGKILL`` kills a keyed trigger and
the execution of its run at every ``linkat``, ``fdatasync`` and ``renameat``, with no code
hook in the process, then a fresh process recovers the root.

``tests/test_crash.py`` kills at every file-system call through a Python hook
(``apps.killhook``) and at seeded points inside steps; this sweep checks the same
promise without trusting that hook.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from apps.children import REPO_ROOT, Zygote, call_argv, child_env

from .relhelpers import finish_traced, need_tool, traced

STATS: dict[str, int] = {"strace_kill_points": 0}


SWEEP_CALLS = ("linkat", "fdatasync", "renameat")  # durably links and renames by dir fd


def test_sigkill_at_each_link_fdatasync_and_rename_without_a_code_hook(
    tmp_path: Path, zygote: Zygote
) -> None:
    """C6: a keyed trigger and the execution of its 3-step run, in one process that
    ``strace`` SIGKILLs on entering its N-th ``linkat``, ``fdatasync`` or ``renameat`` (the
    publish of key, claim and end records, each step's commit, the compaction), for
    every N. No code of durably or of the test runs in the process. After each kill a
    fresh process finds the root consistent, finishes the run without re-running an
    acknowledged step, and one run holds the key."""
    template = tmp_path / "template"
    (template / "work").mkdir(parents=True)
    zygote.check(
        "apps.crash_jobs:sweep_op",
        root=str(template / "root"),
        workdir=str(template / "work"),
        op="init",
        kill_at=0,
        result=str(template / "init.json"),
    )
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    trace = tmp_path / "trace.txt"
    strace = need_tool("strace", "strace")
    subprocess.run(
        [
            strace,
            "-f",
            "-qq",
            "--seccomp-bpf",
            "-o",
            str(trace),
            "-e",
            "trace=" + ",".join(SWEEP_CALLS),
            *call_argv(
                "apps.crash_jobs:keyed_workload", root=str(probe / "root"), workdir=str(probe / "work")
            ),
        ],
        env=child_env(),
        cwd=str(REPO_ROOT),
        check=True,
        capture_output=True,
        timeout=120,
    )
    counts = Counter(
        line.split()[1].split("(")[0]
        for line in trace.read_text().splitlines()
        if "(" in line and not line.split()[1].startswith("---")
    )
    cases = [(call, n) for call in SWEEP_CALLS for n in range(1, counts[call] + 1)]
    assert counts["linkat"] >= 4, counts
    assert counts["fdatasync"] >= 3, counts
    outcomes = []
    for first in range(0, len(cases), 4):  # four at a time: the children mostly wait on fsync
        batch = cases[first : first + 4]
        procs = []
        for call, n in batch:
            case = tmp_path / f"{call}-{n}"
            shutil.copytree(template, case)
            procs.append(
                traced(
                    call,
                    f"{call}:signal=SIGKILL:when={n}",
                    "apps.crash_jobs:keyed_workload",
                    root=str(case / "root"),
                    workdir=str(case / "work"),
                )
            )
        for (call, n), proc in zip(batch, procs, strict=True):
            err = finish_traced(proc)
            assert proc.returncode in (-9, 128 + 9), f"{call} #{n}: exit {proc.returncode}\n{err}"
            STATS["strace_kill_points"] += 1
        for call, n in batch:
            case = tmp_path / f"{call}-{n}"
            result = case / "check.json"
            code = zygote.run(
                "apps.crash_jobs:sweep_check",
                root=str(case / "root"),
                workdir=str(case / "work"),
                result=str(result),
            )
            assert code == 0, f"killed at {call} #{n}: recovery failed\n{zygote.stderr()}"
            outcomes.append(json.loads(result.read_text())["status"])
            shutil.rmtree(case)
    assert outcomes == ["completed"] * len(cases)
