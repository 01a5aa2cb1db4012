"""The runtime below the ``Durably`` facade: what the engine's parts share.

One :class:`Runtime` per ``Durably`` instance holds the store, the event emitter, the
registered jobs, the lease keeper, the frozen options, the wake event (set when work
may have appeared) and this instance's owner id. The execution loop, ``RunTail``, job
handles and the worker supervisor depend on it, never on the facade.
"""

from __future__ import annotations

import threading
import time
import uuid

from ._events import Emitter
from ._lease_keeper import LeaseKeeper
from ._options import Options
from ._records import system_clock
from ._registry import JobRegistry
from ._store import FileStore, Store

MAX_BACKOFF = 5.0
"""Longest wait before the next claim after the store failed again and again."""


class Runtime:
    """The shared parts of one instance (see the module docstring)."""

    def __init__(self, root: str, options: Options) -> None:
        self.options = options
        self.clock = options.clock or system_clock
        self.real_clock = options.clock is None
        """True with the system clock: short waits may be spent in the worker."""
        self.store: Store = FileStore(root, fsync=options.fsync, clock=self.clock)
        self.root = self.store.root
        self.emitter = Emitter()
        self.registry = JobRegistry()
        self.keeper = LeaseKeeper(self.emitter, options.lease_renew_interval)
        self.wake = threading.Event()
        self.owner = f"worker_{uuid.uuid4().hex[:12]}"
        self.skipped: set[str] = set()
        """Queued runs that cannot be read (warned about once)."""
        self.last_maintenance = 0.0
        """When idle maintenance last ran (``time.monotonic``; 0: never)."""
        self.backoff_until = 0.0
        """No claim before this (``time.monotonic``): the store failed recently."""
        self._store_failures = 0
        self.schedule_due: dict[str, tuple[object, float]] = {}
        """Schedule name -> (its definition as last read, epoch seconds of its next tick):
        nothing to read or compute for it before then while its definition is the same."""

    def store_failed(self) -> None:
        """The store failed (a full disk, an I/O error): wait before the next claim, a
        polling interval at first and twice as long after each failure in a row (up to
        :data:`MAX_BACKOFF` seconds)."""
        self._store_failures += 1
        wait = min(MAX_BACKOFF, self.options.polling_interval * 2 ** (self._store_failures - 1))
        self.backoff_until = time.monotonic() + wait

    def store_worked(self) -> None:
        """The store worked again: claims are no longer delayed."""
        self._store_failures = 0
        self.backoff_until = 0.0
