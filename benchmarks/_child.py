"""Run one benchmark function in this fresh interpreter: ``module function JSON-params``.

Prints the function's dict as JSON on the last line of stdout (``{"error": ...}`` if it
raised). Used by ``Context.child``.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback


def main() -> None:
    module, function, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        out = getattr(importlib.import_module(module), function)(**params)
    except Exception as exc:  # noqa: BLE001 -- report any failure as JSON
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
