"""Failure details (SPEC §15): a failed run names its exception's type and keeps its
traceback, in a step or outside any step; a cancelled run keeps its last progress."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_harness import durably_cli
from helpers import Payload, Started, wait_until
from pydantic import BaseModel

from durably import Durably, RunStatus, Step, define_job

Factory = Callable[..., Durably]


class In(BaseModel):
    pass


def _helper(data: dict[str, str]) -> str:
    return data["missing"]


def _outside(step: Step, payload: In) -> str:
    step.run("fine", lambda: 1)
    return _helper({})


def _inside(step: Step, payload: In) -> None:
    def price() -> None:
        raise RuntimeError("pricing service 503")

    step.run("price", price)


OUTSIDE = define_job(name="outside", input=In, run=_outside)
INSIDE = define_job(name="inside", input=In, run=_inside)


def _failed(d: Durably, job: Any) -> Any:
    result = d.register(job).trigger(In())
    d.process_until_idle()
    run = d.get_run(result.id)
    assert run is not None
    assert run.status is RunStatus.FAILED
    return run


class TestFailedRuns:
    def test_an_error_outside_any_step_names_its_type_and_keeps_its_traceback(self, d: Durably) -> None:
        """A KeyError raised by a helper outside step.run: `KeyError: 'missing'`, traceback kept."""
        run = _failed(d, OUTSIDE)

        assert run.error == "KeyError: 'missing'"
        assert run.failed_step_name is None
        assert run.error_traceback is not None
        assert "_helper" in run.error_traceback
        assert "KeyError: 'missing'" in run.error_traceback

    def test_an_error_in_a_step_names_its_type_and_keeps_its_traceback(self, d: Durably) -> None:
        """A RuntimeError in a step: the run's error names the type, its traceback the step's frame."""
        run = _failed(d, INSIDE)

        assert run.error == "RuntimeError: pricing service 503"
        assert run.failed_step_name == "price"
        assert run.error_traceback is not None
        assert "in price" in run.error_traceback
        (step,) = d.get_steps(run.id)
        assert step.error == "RuntimeError: pricing service 503"

    def test_a_traceback_keeps_the_chained_exceptions(self, d: Durably) -> None:
        """`raise ... from ...` and an error while handling another: every exception of the
        chain is in the stored traceback, in Python's order, each with its frames."""

        def lookup() -> None:
            raise KeyError("sku-1")

        def job(step: Step, payload: In) -> None:
            try:
                lookup()
            except KeyError as exc:
                try:
                    raise RuntimeError("price unknown") from exc
                except RuntimeError:
                    raise ValueError("no invoice")  # noqa: B904 - the implicit chain is the point

        run = _failed(d, define_job(name="chained", input=In, run=job))
        tb = run.error_traceback
        assert tb is not None
        assert run.error == "ValueError: no invoice"
        order = [
            tb.index(t)
            for t in ("KeyError: 'sku-1'", "RuntimeError: price unknown", "ValueError: no invoice")
        ]
        assert order == sorted(order)
        assert "The above exception was the direct cause of the following exception" in tb
        assert "During handling of the above exception, another exception occurred" in tb
        assert "in lookup" in tb

    def test_an_exception_without_a_message_is_its_type(self, d: Durably) -> None:
        """An exception with an empty message is named by its type alone."""

        def job(step: Step, payload: In) -> None:
            raise LookupError

        run = _failed(d, define_job(name="bare", input=In, run=job))
        assert run.error == "LookupError"

    def test_errors_durably_decides_keep_their_sentence(self, d: Durably) -> None:
        """An output that fails validation keeps durably's own sentence, with no type prefix."""

        class Out(BaseModel):
            n: int

        def bad(step: Step, payload: In) -> Any:
            return {"n": "x"}

        job = define_job(name="badout", input=In, output=Out, run=bad)
        run = _failed(d, job)
        assert run.error is not None
        assert run.error.startswith("Invalid output")

    def test_show_prints_the_error_and_traceback(self, d: Durably, root: Path) -> None:
        """`durably show` prints the typed error and the traceback; `--json` has `error_traceback`."""
        run = _failed(d, OUTSIDE)

        shown = durably_cli("show", run.id, "--root", root)
        assert shown.returncode == 0, shown.stderr
        assert "KeyError: 'missing'" in shown.stdout
        assert "Traceback (most recent call last)" in shown.stdout
        assert "_helper" in shown.stdout
        data = json.loads(durably_cli("show", run.id, "--json", "--root", root).stdout)
        assert data["error"] == "KeyError: 'missing'"
        assert "_helper" in data["error_traceback"]

    def test_show_prints_a_failed_steps_traceback_once(self, d: Durably, root: Path) -> None:
        """A step's failure: its traceback appears once in `durably show`."""
        run = _failed(d, INSIDE)

        shown = durably_cli("show", run.id, "--root", root)
        assert shown.stdout.count("Traceback (most recent call last)") == 1


class TestCancelledRuns:
    def test_a_cancelled_run_keeps_its_last_progress(self, durably_factory: Factory) -> None:
        """Cancelling a running run keeps the progress it last reported, like a failed run."""
        gate, started = threading.Event(), Started()

        def job(step: Step, payload: Payload) -> None:
            step.progress(3, 10, "three of ten")

            def wait() -> None:
                started.enter(payload.value)
                gate.wait(30)

            step.run("wait", wait)

        d = durably_factory(jobs=[define_job(name="p", input=Payload, run=job)])
        result = d.jobs["p"].trigger(Payload(value="v"))
        d.start()
        wait_until(lambda: started.count() == 1)
        d.cancel(result.id)
        gate.set()

        run = d.get_run(result.id)
        assert run is not None
        assert run.status is RunStatus.CANCELLED
        assert run.progress is not None
        assert (run.progress.current, run.progress.total, run.progress.message) == (3, 10, "three of ten")

    def test_show_json_of_a_cancelled_run_has_its_progress(self, d: Durably, root: Path) -> None:
        """`durably show --json` of a run cancelled after reporting progress has `progress`."""
        holder: dict[str, str] = {}

        def job(step: Step, payload: In) -> None:
            step.progress(1, 2)
            d.cancel(holder["id"])
            step.run("after", lambda: None)

        holder["id"] = d.register(define_job(name="c", input=In, run=job)).trigger(In()).id
        d.process_until_idle()

        data = json.loads(durably_cli("show", holder["id"], "--json", "--root", root).stdout)
        assert data["status"] == "cancelled"
        assert data["progress"] == {"current": 1, "total": 2, "message": None}


class TestUnstorableValues:
    @pytest.mark.parametrize(
        ("value", "hinted"),
        [
            (float("nan"), False),
            (2**70, False),
            ({"deep": [float("inf")]}, False),
            ((1, 2), True),
            ({1: "a"}, True),
            (datetime(2026, 1, 1, tzinfo=UTC), True),
        ],
        ids=["nan", "big-int", "inf-inside", "tuple", "int-keys", "datetime"],
    )
    def test_the_returns_hint_is_offered_only_where_a_type_helps(
        self, d: Durably, value: Any, hinted: bool
    ) -> None:
        """A step value JSON cannot hold: the `returns=` hint appears for values a declared
        type could store (a tuple, a datetime, int keys), never for NaN or a 65-bit int."""

        def job(step: Step, payload: In) -> None:
            step.run("make", lambda: value)

        run = _failed(d, define_job(name="unstorable", input=In, run=job))
        assert run.error is not None
        assert "cannot store a value" in run.error
        assert ("returns=" in run.error) is hinted, run.error
