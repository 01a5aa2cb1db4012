"""Journal files: append-only files of framed, self-validating lines.

A line is ``<json>\t<crc32 hex>\n``: greppable, and checkable on its own. A reader takes
the longest prefix of valid lines; a torn tail (a crash mid-append), NUL bytes or a bad
checksum end it, and what follows reads as "not written yet" (invariant 1).
The :class:`JournalWriter` appends lines to one open file: one ``fdatasync`` per
acknowledged line is the whole cost of a durable step commit.
"""

from __future__ import annotations

import os
import stat
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import orjson

from ._errors import StoreError
from ._files import O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK, own_only, wrap_os_error, write_all


def frame(record: dict[str, Any]) -> bytes:
    """Frame one journal record: ``<json>\\t<crc32 hex>\\n`` (greppable, self-checking)."""
    body = orjson.dumps(record)
    return body + b"\t" + f"{zlib.crc32(body):08x}".encode() + b"\n"


def read_frames(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of the valid lines at the start of ``data``, and their length in bytes.

    Reading stops at the first bad line: a torn tail (crash mid-append), NUL bytes or a
    checksum mismatch end the valid prefix, and what follows is "not written yet", never
    data. (A replay reads every line of a run: this is a hot path.)
    """
    crc32, loads, tab = zlib.crc32, orjson.loads, 9  # ord("\t")
    records: list[dict[str, Any]] = []
    append = records.append
    pos = 0
    lines = data.split(b"\n")
    del lines[-1]  # what follows the last newline is not a line (yet)
    for line in lines:
        if len(line) < 10 or line[-9] != tab:
            break
        body = line[:-9]
        if b"%08x" % crc32(body) != line[-8:]:
            break
        try:
            record = loads(body)
        except orjson.JSONDecodeError:
            break
        if record.__class__ is not dict:
            break
        append(record)
        pos += len(line) + 1
    return records, pos


def iter_frames(data: bytes) -> Iterator[tuple[dict[str, Any], int]]:
    """Each valid line's record with the offset where the line ends (see :func:`read_frames`)."""
    records, _ = read_frames(data)
    pos = 0
    for record, line in zip(records, data.split(b"\n"), strict=False):
        pos += len(line) + 1
        yield record, pos


class JournalWriter:
    """An open append-only journal of one lease generation of one run.

    ``append`` writes one framed record; with ``sync`` it is on disk (fdatasync) when the
    call returns. The file was created, and its name made durable, at claim time, so a
    step commit costs exactly one fdatasync on the critical path.

    ``path`` names the journal in messages; it is opened as its last component in the
    directory ``dir_fd`` (see :func:`open_dir`).
    """

    def __init__(self, path: str, *, dir_fd: int) -> None:
        self.path = path
        # O_NONBLOCK: a FIFO planted at ``path`` fails (ENXIO) instead of blocking the
        # open until a reader appears; regular files ignore the flag.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK
        self._fd = os.open(os.path.basename(path), flags, 0o600, dir_fd=dir_fd)
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            self._fd = -1
            raise StoreError(f"{path} is not a regular file; refusing to write to it", path=path)
        own_only(self._fd, 0o600)
        self._lock = threading.Lock()
        self._broken: str | None = None

    def append(self, record: dict[str, Any], *, sync: bool) -> None:
        """Append one record; fdatasync it when ``sync``.

        A failed append is undone (the journal is truncated back to where it ended), so
        a torn or unsynced record never sits in front of later ones: readers stop at the
        first bad line, and records after it would be lost. If the undo fails too, every
        later append is refused.

        Raises:
            StoreError: the write or the sync failed (disk full, I/O error); the record
                is not acknowledged, and the error names the journal and the cause.
        """
        data = frame(record)
        with self._lock:
            if self._broken is not None:
                raise StoreError(
                    f"cannot append to journal {self.path}: an earlier append "
                    f"failed ({self._broken}) and could not be undone",
                    path=self.path,
                )
            start = -1
            try:
                start = os.lseek(self._fd, 0, os.SEEK_END)
                write_all(self._fd, data)
                if sync:
                    os.fdatasync(self._fd)
            except OSError as exc:
                error = wrap_os_error(exc, "append to journal", self.path)
                try:
                    if start < 0:
                        raise
                    os.ftruncate(self._fd, start)
                except OSError:
                    self._broken = os.strerror(exc.errno) if exc.errno else str(exc)
                raise error from exc

    def touch(self) -> None:
        """Move the journal's mtime forward: the lease heartbeat other hosts read.

        Raises:
            StoreError: the heartbeat could not be written; names the journal and the cause.
        """
        try:
            os.utime(self._fd)
        except OSError as exc:
            raise wrap_os_error(exc, "renew the lease (heartbeat) of journal", self.path) from exc

    def close(self) -> None:
        """Close the journal (idempotent; the descriptor is gone even if close reports an
        error, so it is never closed twice: the number may already name another file)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
