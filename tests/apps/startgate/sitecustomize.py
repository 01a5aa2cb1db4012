"""Holds every `durably worker` process (``python -c ...``) at interpreter start-up, before
any durably code runs, until the file `$DURABLY_TEST_START_GATE` exists: the window in
which a supervisor can die before its processes know who their parent is."""

from __future__ import annotations

import os
import sys
import time

_GATE = os.environ.get("DURABLY_TEST_START_GATE")
if _GATE and sys.argv[:1] == ["-c"]:
    while not os.path.exists(_GATE):
        time.sleep(0.01)
