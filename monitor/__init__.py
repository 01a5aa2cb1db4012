"""`durably monitor`: a live terminal UI over a durably root directory.

Reads only through durably's public API (`Durably.get_runs`, `get_run`, `get_steps`,
`get_logs`, `changes`), never parses run files, takes no locks, and writes nothing unless the
user confirms an action (cancel, retrigger, delete).
"""

from __future__ import annotations

import logging

from ._app import MonitorApp
from ._backend import Source, open_source

__all__ = ["MonitorApp", "Source", "run"]


def run(root: str | None = None, *, read_only: bool = False, app: str | None = None) -> None:
    """Run the monitor in this terminal until the user quits.

    Args:
        root: the root directory (default: `$DURABLY_ROOT`, else `.durably`).
        read_only: hide every action that writes.
        app: `module:attr` naming a `Durably` instance with the jobs registered; needed to
            retrigger runs, since retrigger re-validates input against the job.
    """
    # durably warns on its logger about runs it skips (damaged, still syncing); with no
    # handler configured, Python would print those over the screen
    logger = logging.getLogger("durably")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    MonitorApp(open_source(root, app), read_only=read_only).run()
