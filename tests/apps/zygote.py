"""A fork server: one process imports durably once, then forks a child per command.

Forking from this small single-threaded process is fork-safe and makes a fresh process
cost milliseconds instead of the ~0.4 s of a Python start with pydantic, so the crash
sweeps can afford one child per crash point. Protocol, one JSON object per line:

- ``{"op": "spawn", "fn": "module:function", "kwargs": {...}, "group": G | null}``
  forks a child that runs ``function(**kwargs)`` and exits 0 (1 on an exception, with
  the traceback on stderr); with a group, the child first blocks until ``release``.
  Reply ``{"pid": PID}``.
- ``{"op": "release", "group": G}``: every child of the group starts at once (they all
  block reading one pipe; closing its write end wakes them together). Reply ``{}``.
- ``{"op": "wait", "pid": PID}``: reply ``{"pid": PID, "code": C}``: the exit code, or
  ``-signal`` when a signal killed it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

import durably  # noqa: F401  - imported once here, inherited by every child

# The apps the children run, imported once here too (a child imports nothing then).
from . import (  # noqa: F401
    crash_jobs,
    durability_trace,
    killhook,
    logged_steps,
    probe,
    stalls,
)


def _child(fn: str, kwargs: dict[str, Any], gate: int | None) -> None:
    code = 0
    try:
        if gate is not None:
            os.read(gate, 1)
            os.close(gate)
        module, _, attr = fn.partition(":")
        getattr(importlib.import_module(module), attr)(**kwargs)
    except BaseException:  # noqa: BLE001 - report everything, exit non-zero
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    killhook.install()
    groups: dict[str, tuple[int, int]] = {}
    proto_in = sys.stdin.buffer
    proto_out = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)  # children must never write into the protocol stream
    for line in proto_in:
        msg = json.loads(line)
        op = msg["op"]
        reply: dict[str, Any] = {}
        if op == "spawn":
            group = msg.get("group")
            if group is not None and group not in groups:
                groups[group] = os.pipe()
            pid = os.fork()
            if pid == 0:
                proto_out.close()
                gate = None
                for name, (r, w) in groups.items():
                    os.close(w)
                    if name == group:
                        gate = r
                    else:
                        os.close(r)
                _child(msg["fn"], msg.get("kwargs", {}), gate)
            reply = {"pid": pid}
        elif op == "release":
            r, w = groups.pop(msg["group"])
            os.close(w)
            os.close(r)
        elif op == "wait":
            _, status = os.waitpid(msg["pid"], 0)
            reply = {"pid": msg["pid"], "code": os.waitstatus_to_exitcode(status)}
        else:
            reply = {"error": f"unknown op {op!r}"}
        proto_out.write(json.dumps(reply) + "\n")
        proto_out.flush()


if __name__ == "__main__":
    main()
