"""``python -m apps.call MODULE:FUNCTION JSON-KWARGS``: run ``FUNCTION(**KWARGS)`` in a
fresh process, the call the fork server (``zygote``) makes in a forked one.

For children that a tool must start itself: ``strace -e inject=...`` cannot attach to a
forked child without root. ``apps.children.call_argv`` builds the command line.
"""

from __future__ import annotations

import importlib
import json
import sys


def main(argv: list[str]) -> None:
    fn, kwargs = argv
    module, _, attr = fn.partition(":")
    getattr(importlib.import_module(module), attr)(**json.loads(kwargs))


if __name__ == "__main__":
    main(sys.argv[1:])
