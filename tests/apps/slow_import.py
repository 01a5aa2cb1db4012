"""`apps.cli_app:durably` again, but its import waits until a file `import-gate` exists next to
the root (`$DURABLY_ROOT`, which `durably worker` exports), after appending the pid of the
importing process to `importing` there: worker processes held while importing APP."""

from __future__ import annotations

import os
from pathlib import Path

from .cli_app import durably, record, wait_for_file

_HERE = Path(os.environ["DURABLY_ROOT"]).parent
record(_HERE / "importing", str(os.getpid()))
wait_for_file(_HERE / "import-gate")

__all__ = ["durably"]
