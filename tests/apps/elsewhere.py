"""An app whose instance has an explicit root of its own (a --root mismatch)."""

from durably import Durably

from .cli_app import ADD

durably = Durably("/tmp/durably-tests-elsewhere-root-never-written", jobs=[ADD])
