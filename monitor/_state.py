"""What the screens draw from: the run index, the clock, and the monitor's live flags.

The app owns one `MonitorState` and hands it to each screen it makes; screens read it and
never import the app (so the module graph stays acyclic). Only the app changes it, always on
the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from ._index import RunIndex


@dataclass(eq=False)
class MonitorState:
    """The monitor's shared view state.

    Attributes:
        label: how the root is named in the header.
        clock: returns the current aware datetime (tests freeze it).
        tz: time zone for absolute times (None: local time).
        index: every known run, filtered and sorted for the list.
        read_only_flag: `--read-only` was given.
        root_read_only: the root cannot be written by this process.
        paused: live updates are paused (`space`).
        loading: the first scan (or a full reload) has not finished.
        waiting: the root does not exist yet and the monitor waits for it.
    """

    label: str
    clock: Callable[[], datetime]
    tz: tzinfo | None = None
    index: RunIndex = field(default_factory=RunIndex)
    read_only_flag: bool = False
    root_read_only: bool = False
    paused: bool = False
    loading: bool = True
    waiting: bool = False

    @property
    def actions_allowed(self) -> bool:
        """False with --read-only or when the root cannot be written."""
        return not (self.read_only_flag or self.root_read_only)

    @property
    def notices(self) -> list[str]:
        """Short warnings shown in the filter bar."""
        if self.root_read_only:
            return ["read-only root: actions hidden"]
        if self.read_only_flag:
            return ["read-only"]
        return []
