"""Slot chains: a compare-and-set register made of publish-once files, exact across hosts.

A concurrency key is bound to one run at a time, and rebinding it must be decided by one
writer even when record locks do not reach the other writers (hosts sharing a root). A
chain is a directory of slot files ``0``, ``1``, ``2`` …; the highest slot is the current
binding. To rebind, a writer that read slot ``n`` publishes slot ``n + 1`` with ``link()``:
of all writers that read ``n``, exactly one wins. Nothing ever removes the highest slot, so
the head never goes backwards. Old slots are pruned (all but the two below the new one);
a writer so slow that it read a head which has been pruned since can still publish a
pruned number, so after publishing, a writer that finds a higher slot withdraws its own.
"""

from __future__ import annotations

import os
from typing import Any

from . import _files as files
from . import _records as records


def _numbers(names: list[str]) -> list[int]:
    return sorted(int(name) for name in names if name.isdigit() and len(name) < 19)


def _slots(chain: str) -> list[int]:
    return _numbers(files.list_dir(chain))


def head(chain: str) -> tuple[int, dict[str, Any] | None]:
    """The highest slot number (-1 if none) and its record (None if missing or unreadable)."""
    slots = _slots(chain)
    if not slots:
        return -1, None
    n = slots[-1]
    return n, records.read_json(os.path.join(chain, str(n)))


def publish(root: str, tmp_dir: str, chain: str, n: int, body: bytes, *, sync: bool) -> bool:
    """Publish slot ``n`` of ``chain`` (a directory below ``root``; the head read was
    ``n - 1``); False if another writer won: the binding changed since it was read.

    True only if slot ``n`` was free and no higher slot exists once it is linked: so the
    head was ``n - 1`` all along from the read to the ``link()``, however long ago that
    read was (the head never goes backwards, and a slot is only published again after a
    higher one exists, which is never removed)."""
    with files.opened_dirs(root, tmp_dir, chain, create=True, sync=sync) as (tmp_fd, chain_fd):
        return files.publish_once(tmp_fd, chain_fd, str(n), body, sync=sync) and _settle(chain_fd, n)


def link(root: str, chain: str, n: int, tmp_fd: int, tmp: str, *, sync: bool) -> bool:
    """:func:`publish` of a file already staged as ``tmp`` in directory ``tmp_fd``
    (``_files.stage``): slot ``n`` becomes another name of it."""
    with files.opened_dir(root, chain, create=True, sync=sync) as chain_fd:
        return files.link_once(tmp_fd, tmp, chain_fd, str(n), sync=sync) and _settle(chain_fd, n)


def _settle(chain_fd: int, n: int) -> bool:
    """After slot ``n`` was linked: withdraw it if a higher slot exists (the head read was
    pruned since), else prune the slots more than one below it."""
    slots = _numbers(os.listdir(chain_fd))
    if slots and slots[-1] > n:
        files.remove_file(chain_fd, str(n))
        return False
    for old in slots:
        if old < n - 1:
            files.remove_file(chain_fd, str(old))
    return True


def slot_mtime(chain: str, n: int) -> float:
    """When slot ``n`` was published (0.0 if it is gone)."""
    return files.mtime(os.path.join(chain, str(n)))
