"""``durably doctor --fix``: repair what the doctor found, and the doctor's command line.

``--fix`` never deletes data: damaged or unknown files are moved into
``ROOT/quarantine/<timestamp>/`` under their relative path. It removes only what is
debris by construction: temp files older than an hour and queue markers of ended or
missing runs. It recreates missing queue markers and tightens permissions. Records of a
newer format are left untouched. Exit code: 0 healthy, 1 problems remain, 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from . import _files as files
from . import _locks as locks
from . import _records as records
from ._doctor import Doctor, Problem
from ._errors import DurablyError
from ._keys import write_key_record
from ._layout import state_name
from ._records import KeyRecord


class Repairs:
    """The repairs of one doctor's findings (one quarantine directory per repair)."""

    def __init__(self, doctor: Doctor) -> None:
        self.doctor = doctor
        self._quarantine: str | None = None

    def quarantine_dir(self) -> str:
        if self._quarantine is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            self._quarantine = os.path.join(self.doctor.layout.quarantine, stamp)
        return self._quarantine

    def quarantine(self, rel: str) -> str:
        """Move ``rel`` (relative to the root) into the quarantine, keeping its path.

        Both directories are reached without following a symlink (``files.open_dir``); a
        symlink being quarantined is moved itself, never its target.
        """
        src = os.path.join(self.doctor.root, rel)
        dst = os.path.join(self.quarantine_dir(), rel)
        with (
            files.opened_dir(self.doctor.root, os.path.dirname(src)) as src_fd,
            files.opened_dir(self.doctor.root, os.path.dirname(dst), create=True, sync=True) as dst_fd,
        ):
            files.move(src_fd, os.path.basename(src), dst_fd, os.path.basename(dst), sync=True)
        return self.doctor.rel(dst)

    def fix(self) -> list[Problem]:
        """Repair the fixable problems found by ``check()``; return what was done."""
        done = []
        for p in self.doctor.problems:
            if p.fix is None or p.fixed:
                continue
            try:
                p.fixed = self._fix_one(p)
            except OSError as exc:
                p.message += f" (fix failed: {os.strerror(exc.errno or 0)})"
                continue
            except DurablyError as exc:
                p.message += f" (fix failed: {exc})"
                continue
            if p.fixed:
                done.append(p)
        return done

    def _fix_one(self, p: Problem) -> str | None:
        path = os.path.join(self.doctor.root, p.path)
        if p.fix == "rebuild-key":
            return self._rebuild_key(path)
        if p.fix == "restore-end":
            return self._restore_end(os.path.basename(path))
        if not os.path.lexists(path):
            return "already gone"
        if p.fix == "remove":
            with files.opened_dir(self.doctor.root, os.path.dirname(path)) as dir_fd:
                files.remove_entry(dir_fd, os.path.basename(path))  # never follows a link
                files.sync_dir(dir_fd)
            return "removed"
        if p.fix == "quarantine":
            return "moved to " + self.quarantine(p.path)
        if p.fix == "quarantine-run":
            return "run moved to " + self.quarantine(os.path.dirname(p.path))
        if p.fix == "chmod":
            mode = files.set_mode(self.doctor.root, path)
            return None if mode is None else f"mode set to {mode:04o}"
        if p.fix == "requeue":
            state, _ = self.doctor.load(os.path.basename(path))
            if state is None or state.is_terminal:
                return None
            if state.status == "waiting":  # its marker belongs in wait/, by its wake time
                self.doctor.store.waits.park(state)
                return "wait marker recreated"
            self.doctor.store.queue.ensure(state)
            return "queue marker recreated"
        return None

    def _rebuild_key(self, path: str) -> str | None:
        """Write an idempotency key record again from the run whose record holds the key."""
        run_id = self.doctor.key_owners.get(os.path.basename(path)[: -len(".json")])
        state, _ = self.doctor.load(run_id) if run_id else (None, False)
        key = None if state is None else state.record.idempotency_key
        if state is None or key is None:
            return None
        body = KeyRecord(run=state.run_id, job=state.record.job_name, host=locks.HOST).to_bytes()
        layout = self.doctor.layout
        write_key_record(layout, path, body, replace=os.path.lexists(path), fsync=True)
        lock = layout.idempotency_lock(state.record.job_name, key)
        locks.lock(lock, root=layout.root)
        try:
            locks.write_note(lock, body)
        finally:
            locks.unlock(lock)
        return f"rebuilt from run {state.run_id}"

    def _restore_end(self, run_id: str) -> str | None:
        """Publish a run's lost end state again, from the copy in its compacted journal."""
        state, _ = self.doctor.load(run_id)
        end = None if state is None else state.end
        if state is None or end is None:
            return None
        layout = self.doctor.layout
        name = state_name(state.head_n + 1)
        if not files.publish_path(
            layout.root, layout.tmp, layout.run_file(run_id, name), records.state_bytes(end), sync=True
        ):
            return None  # a damaged file still holds the name: its own problem moves it first
        return f"end state restored as {name} ({end.kind})"


def repair(doctor: Doctor) -> list[Problem]:
    """Repair the fixable problems ``doctor.check()`` found; return what was done."""
    return Repairs(doctor).fix()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The doctor's arguments (shared by ``durably doctor`` and ``python -m durably._doctor``)."""
    p.add_argument("root_arg", nargs="?", metavar="ROOT", help="root directory (same as --root)")
    p.add_argument(
        "--fix",
        action="store_true",
        help="repair what is safe: remove old temp files and stale markers, requeue, "
        "fix modes, quarantine damaged files (never deletes data)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(root: str, *, fix: bool, as_json: bool, out: Any = None) -> int:
    """Examine (and with ``fix``, repair) ``root``; print the report; return the exit code."""
    out = out or sys.stdout
    if not os.path.isdir(root) or os.path.islink(root):
        print(f"durably doctor: error: no durably root at {os.path.abspath(root)}", file=sys.stderr)
        return 2
    doctor = Doctor(root)
    doctor.check()
    fixed: list[Problem] = []
    if fix:
        repairs = Repairs(doctor)
        for _ in range(3):  # a repair can reveal another (a quarantined run's keys dangle)
            done = repairs.fix()
            fixed.extend(done)
            if not done:
                break
            doctor.now = time.time()
            doctor.check()
    remaining = [p for p in doctor.problems if not p.fixed]
    if as_json:
        report = {
            "root": doctor.root,
            "healthy": not remaining,
            "checked": doctor.counts,
            "problems": [p.as_dict() for p in remaining],
            "interrupted": [{"run": run_id, "message": message} for run_id, message in doctor.interrupted],
            "fixed": [p.as_dict() for p in fixed],
        }
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for p in fixed:
            out.write(f"fixed    {p.kind:<15} {p.path}: {p.message} -> {p.fixed}\n")
        for p in remaining:
            hint = " (--fix can repair this)" if p.fix and not fix else ""
            out.write(f"problem  {p.kind:<15} {p.path}: {p.message}{hint}\n")
        for run_id, message in doctor.interrupted:
            out.write(f"notice   {'interrupted':<15} run {run_id}: {message}\n")
        c = doctor.counts
        summary = (
            f"checked {c['runs']} run(s), {c['markers']} marker(s), {c['keys']} key(s), "
            f"{c['files']} file(s): "
        )
        waiting = (
            f", {len(doctor.interrupted)} run(s) interrupted (waiting for a worker)"
            if doctor.interrupted
            else ""
        )
        out.write(
            summary + (f"{len(remaining)} problem(s) remain" if remaining else "healthy") + waiting + "\n"
        )
    return 1 if remaining else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m durably._repair [ROOT] [--fix] [--json]``."""
    p = argparse.ArgumentParser(prog="durably doctor", description=__doc__.splitlines()[0])
    p.add_argument("--root", metavar="DIR")
    add_arguments(p)
    args = p.parse_args(argv)
    root = args.root_arg or args.root or os.environ.get("DURABLY_ROOT") or ".durably"
    return run(root, fix=args.fix, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
