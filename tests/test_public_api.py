"""The public namespace of `durably` (docs/api.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from apps.children import REPO_ROOT, child_env

import durably

API_NAMES = {
    "Durably",
    "define_job",
    "Step",
    "BatchItem",
    "Run",
    "RunStatus",
    "StepRecord",
    "LogEntry",
}
ERROR_NAMES = {
    "DurablyError",
    "NotFoundError",
    "ValidationError",
    "ConflictError",
    "CancelledError",
    "LeaseLostError",
    "RunFailedError",
    "WaitTimeoutError",
}
# Named by the signatures of docs/api.md: the definition, handle and result types, and run progress.
SIGNATURE_NAMES = {
    "JobDefinition",
    "JobHandle",
    "TriggerResult",
    "TriggerAndWaitResult",
    "Progress",
}
# What an `async def` job receives (docs/api.md: Step), typed so `await step.run(name, sync_fn)` checks.
TYPING_NAMES = {"AsyncStep"}
# Runs that wait (SPEC §9): the retry policy of steps and jobs.
WAIT_NAMES = {"Retry"}
# Errors of a corrupted or newer-format root (docs/errors.md: StoreError and FormatError).
EXTRA_ERROR_NAMES = {"FormatError", "StoreError"}
# One class per event type (docs/api.md: Events), plus their common base `Event`.
EVENT_NAMES = {
    "Event",
    "LogWriteEvent",
    "RunCancelEvent",
    "RunCoalescedEvent",
    "RunCompleteEvent",
    "RunDeleteEvent",
    "RunFailEvent",
    "RunLeaseRenewedEvent",
    "RunLeasedEvent",
    "RunProgressEvent",
    "RunSignalEvent",
    "RunTriggerEvent",
    "RunWaitEvent",
    "StepCancelEvent",
    "StepCompleteEvent",
    "StepFailEvent",
    "StepStartEvent",
    "WorkerErrorEvent",
}

# What `Durably.get_workers` returns: one live `durably worker` process (docs/api.md: Workers).
WORKER_NAMES = {"WorkerInfo"}
SCHEDULE_NAMES = {"Schedule", "ScheduleFireEvent"}

EXPECTED = (
    API_NAMES
    | ERROR_NAMES
    | EXTRA_ERROR_NAMES
    | SIGNATURE_NAMES
    | EVENT_NAMES
    | TYPING_NAMES
    | WAIT_NAMES
    | WORKER_NAMES
    | SCHEDULE_NAMES
)


class TestAll:
    def test_all_is_sorted(self) -> None:
        """`durably.__all__` is sorted."""
        assert list(durably.__all__) == sorted(durably.__all__)

    def test_all_has_no_duplicates(self) -> None:
        """Each public name appears once in `__all__`."""
        assert len(set(durably.__all__)) == len(durably.__all__)

    def test_all_is_exactly_the_public_names(self) -> None:
        """`__all__` holds exactly the names docs/api.md makes public."""
        assert set(durably.__all__) == EXPECTED

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_each_public_name_is_importable(self, name: str) -> None:
        """Every public name is an attribute of `durably`."""
        assert hasattr(durably, name)

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_each_public_object_has_a_docstring(self, name: str) -> None:
        """Every public object carries a docstring."""
        obj = getattr(durably, name)
        assert (obj.__doc__ or "").strip(), name


class TestPackage:
    def test_ships_py_typed(self) -> None:
        """The package ships the `py.typed` marker."""
        assert (Path(durably.__file__).parent / "py.typed").is_file()

    @pytest.mark.slow
    def test_core_never_imports_textual(self) -> None:
        """Importing `durably` does not import textual."""
        code = "import sys, durably; print('textual' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=child_env(),
            cwd=str(REPO_ROOT),
            capture_output=True,
            text=True,
            check=True,
        ).stdout

        assert out.strip() == "False"
