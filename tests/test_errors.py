"""The error tree (docs/errors.md), status codes, and errors raised through the public API."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from pydantic import BaseModel

import durably
from durably import Durably, define_job

ERROR_NAMES = [
    "DurablyError",
    "NotFoundError",
    "ValidationError",
    "ConflictError",
    "CancelledError",
    "LeaseLostError",
    "RunFailedError",
    "WaitTimeoutError",
]


class In(BaseModel):
    n: int


class TestTree:
    @pytest.mark.parametrize("name", ERROR_NAMES)
    def test_every_error_is_importable_from_durably(self, name: str) -> None:
        """Each error class is a public name of `durably`."""
        cls = getattr(durably, name)

        assert isinstance(cls, type)
        assert issubclass(cls, Exception)
        assert name in durably.__all__

    @pytest.mark.parametrize("name", ERROR_NAMES[1:])
    def test_every_error_derives_from_durably_error(self, name: str) -> None:
        """Every error is a subclass of the base `DurablyError`."""
        assert issubclass(getattr(durably, name), durably.DurablyError)

    def test_wait_timeout_error_is_also_a_timeout_error(self) -> None:
        """WaitTimeoutError is also a builtin TimeoutError."""
        assert issubclass(durably.WaitTimeoutError, TimeoutError)

    def test_validation_error_is_durablys_own(self) -> None:
        """`durably.ValidationError` is the library's class, not pydantic's."""
        # mypy sees two distinct classes already; the test pins it at run time.
        assert durably.ValidationError is not pydantic.ValidationError  # type: ignore[comparison-overlap]

    def test_errors_are_distinct_classes(self) -> None:
        """The eight names are eight different classes."""
        assert len({getattr(durably, name) for name in ERROR_NAMES}) == len(ERROR_NAMES)


class TestStatusCodes:
    def test_not_found_is_404(self, root: Path) -> None:
        """NotFoundError has `status_code` 404."""
        d = Durably(root, fsync=False)
        with pytest.raises(durably.NotFoundError) as info:
            d.cancel("no-such-run")

        assert info.value.status_code == 404
        assert isinstance(info.value, durably.DurablyError)

    def test_validation_is_400(self, root: Path) -> None:
        """ValidationError has `status_code` 400."""
        with pytest.raises(durably.ValidationError) as info:
            Durably(root, fsync=False, max_concurrent_runs=0)

        assert info.value.status_code == 400

    def test_conflict_is_409(self, root: Path) -> None:
        """ConflictError has `status_code` 409."""
        d = Durably(root, fsync=False)
        d.register(define_job(name="j", input=In, run=lambda step, payload: None))
        with pytest.raises(durably.ConflictError) as info:
            d.register(define_job(name="j", input=In, run=lambda step, payload: None))

        assert info.value.status_code == 409

    def test_invalid_input_is_a_400_validation_error(self, root: Path) -> None:
        """Invalid trigger input raises durably's ValidationError (wrapping pydantic's)."""
        d = Durably(root, fsync=False)
        handle = d.register(define_job(name="j", input=In, run=lambda step, payload: None))

        with pytest.raises(durably.ValidationError) as info:
            handle.trigger({"n": "not a number"})

        assert info.value.status_code == 400
        assert "n" in str(info.value)

    def test_run_failed_error_carries_run_id_and_error(self, root: Path) -> None:
        """RunFailedError carries the failed run's `run_id` and `error`."""

        def job(step: durably.Step, payload: In) -> None:
            raise RuntimeError("broken on purpose")

        d = Durably(root, fsync=False)
        handle = d.register(define_job(name="j", input=In, run=job))
        result = handle.trigger(In(n=1))
        d.process_until_idle()

        with pytest.raises(durably.RunFailedError) as info:
            d.wait_for_run(result.id, timeout=5)

        assert info.value.run_id == result.id
        assert "broken on purpose" in info.value.error
        assert isinstance(info.value, durably.DurablyError)
