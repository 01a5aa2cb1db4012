"""The errors durably raises.

Every error is a :class:`DurablyError`; the tree::

    DurablyError                 base; carries ``status_code`` (HTTP-style) and context
    ├── NotFoundError (404)      no run with that id, or the job is not registered
    ├── ValidationError (400)    bad input, options, labels, names or unstorable values
    ├── ConflictError (409)      the run's state forbids the operation, or a key is taken
    ├── CancelledError (409)     the run was cancelled (raised by waits and inside steps)
    ├── LeaseLostError (409)     another worker owns the run now (raised inside steps)
    ├── RunFailedError (500)     a waited-for run failed; ``run_id`` and ``error`` say why
    ├── WaitTimeoutError (408)   a wait gave up; also a :class:`TimeoutError`
    └── StoreError (500)         a file of the root could not be read or written; ``path``
        └── FormatError          a record written by a newer durably (left untouched)

Third-party errors (pydantic, orjson, OSError) are wrapped where they cross the public
surface, with the original kept as ``__cause__``.
"""

from __future__ import annotations

import errno
import traceback


class DurablyError(Exception):
    """Base class of every error durably raises.

    Attributes:
        status_code: An HTTP-style code for the error class (500 for the base).
        run_id: The run the error concerns, when there is one.
        step: The step the error concerns, when there is one.
        path: The file the error concerns, when there is one.
    """

    status_code: int = 500

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        step: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id
        self.step = step
        self.path = path


class NotFoundError(DurablyError):
    """A run (or a job) does not exist."""

    status_code = 404


class ValidationError(DurablyError):
    """Input, options, labels, names or a step value were invalid."""

    status_code = 400


class ConflictError(DurablyError):
    """The operation conflicts with the run's state or with another run."""

    status_code = 409


class CancelledError(DurablyError):
    """The run was cancelled."""

    status_code = 409

    def __init__(self, run_id: str, message: str | None = None) -> None:
        super().__init__(message or f"Run was cancelled: {run_id}", run_id=run_id)


class LeaseLostError(DurablyError):
    """This worker no longer owns the run: another worker claimed it."""

    status_code = 409

    def __init__(self, run_id: str, message: str | None = None) -> None:
        super().__init__(message or f"Lease ownership was lost: {run_id}", run_id=run_id)


class RunFailedError(DurablyError):
    """A run that was waited for ended ``failed``.

    Attributes:
        error: The run's stored error message.
    """

    status_code = 500

    def __init__(self, run_id: str, error: str | None) -> None:
        self.error = error or "Run failed"
        super().__init__(self.error, run_id=run_id)


class WaitTimeoutError(DurablyError, TimeoutError):
    """A wait timed out; the run itself goes on."""

    status_code = 408


class StoreError(DurablyError):
    """A file in the root could not be read or written (disk full, permissions, damage)."""


class FormatError(StoreError):
    """A record was written by a newer version of durably; it is left untouched."""


def describe(exc: BaseException) -> str:
    """An exception as one line for a run's or a step's ``error``.

    The job's own exceptions name their type and message (``"KeyError: 'missing'"``, the
    type alone when the message is empty); errors durably raises itself keep their
    sentence."""
    text = str(exc)
    if isinstance(exc, DurablyError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def format_traceback(exc: BaseException) -> str:
    """An exception's traceback as a run or a step stores it: Python's own text, chained
    exceptions included, without the ``^^^`` lines under each frame (finding where they
    go costs more than the rest of the traceback, and a retried step formats one per
    attempt)."""
    top = traceback.TracebackException.from_exception(exc)
    todo, seen = [top], set()
    while todo:
        te = todo.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        for frame in te.stack:
            frame.colno = None
        todo.extend(t for t in (te.__cause__, te.__context__) if t is not None)
        todo.extend(getattr(te, "exceptions", None) or ())
    return "".join(top.format())


STORE_FAILURES = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
)
"""The errors of a file system that fails (full, read-only, broken) rather than of a file
that is wrong: they say nothing about a run, and go away when the store works again."""


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (a :class:`StoreError` from ``_files.wrap_os_error``) is the file system
    failing (:data:`STORE_FAILURES`), not a damaged or planted file."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in STORE_FAILURES
