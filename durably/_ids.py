"""Run ids: monotonic ULIDs, so ids sort by creation even within one millisecond."""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID = re.compile("[" + re.escape(_ALPHABET) + "]{26}")
_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id() -> str:
    """Return a new 26-character ULID, greater than every id this process made before."""
    global _last_ms, _last_rand  # noqa: PLW0603 - one generator per process
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _last_rand += 1
        else:
            _last_rand = int.from_bytes(os.urandom(10), "big") >> 1
        _last_ms = ms
        return _encode(ms, 10) + _encode(_last_rand, 16)


def id_time_ms(run_id: str) -> int:
    """Return the creation time (ms since the epoch) encoded in a ULID."""
    value = 0
    for ch in run_id[:10]:
        value = value * 32 + _ALPHABET.index(ch)
    return value


def time_prefix(ms: int) -> str:
    """The first 10 characters of the ids made at ``ms`` (epoch milliseconds): ids made
    at or after ``ms`` sort at or after it."""
    return _encode(max(0, min(ms, 2**48 - 1)), 10)


def is_valid_id(run_id: object) -> bool:
    """Tell whether ``run_id`` looks like an id made by :func:`new_id`."""
    # A regular expression: claimers check the id of every queue marker on every pass.
    return isinstance(run_id, str) and _ID.fullmatch(run_id) is not None
