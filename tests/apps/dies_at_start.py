"""`apps.cli_app:durably` again, but a process importing it SIGKILLs itself while a file
`die-at-start` exists next to the root (`$DURABLY_ROOT`, which `durably worker` exports),
after appending its pid to `died-at-start` there: a worker process killed during start-up."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .cli_app import durably, record

_HERE = Path(os.environ["DURABLY_ROOT"]).parent
if (_HERE / "die-at-start").exists():
    record(_HERE / "died-at-start", str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)

__all__ = ["durably"]
