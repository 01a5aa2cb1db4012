"""`durably monitor`: a live terminal UI over a durably root directory.

Reads only through durably's public API (`Durably.get_runs`, `get_run`, `get_steps`,
`get_logs`, `changes`), never parses run files, takes no locks, and writes nothing unless the
user confirms an action (cancel, retrigger, delete).
"""

from __future__ import annotations

import logging
import os
import sys

from ._app import MonitorApp
from ._backend import DurablyReader, Source, open_source, root_problem

__all__ = ["DurablyReader", "MonitorApp", "Source", "run"]


def run(
    root: str | None = None, *, read_only: bool = False, app: str | None = None, wait_for_root: bool = False
) -> None:
    """Run the monitor in this terminal until the user quits.

    A root that is missing, or not a directory, is one line on stderr and exit status 2,
    before the screen opens; with `wait_for_root` a missing root is waited for instead.

    Args:
        root: the root directory (default: `$DURABLY_ROOT`, else `.durably`).
        read_only: hide every action that writes.
        app: `module:attr` naming a `Durably` instance with the jobs registered; needed to
            retrigger runs, since retrigger re-validates input against the job.
        wait_for_root: open on a root that does not exist yet and wait until it does.

    Raises:
        SystemExit: the root cannot be watched, or APP cannot be loaded.
    """
    source = open_source(root, app)
    if source.root is not None:
        problem = root_problem(source.root)
        if problem and not (wait_for_root and not os.path.exists(source.root)):
            print(f"durably monitor: error: {problem}", file=sys.stderr)
            raise SystemExit(2)
    # durably warns on its logger about runs it skips (damaged, still syncing); with no
    # handler configured, Python would print those over the screen
    logger = logging.getLogger("durably")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    MonitorApp(source, read_only=read_only).run()
