"""Resuming and forking ended runs (SPEC §11, docs/recovering.md) and finding runs by
creation time (SPEC §12): ``Durably.resume``, ``Run.resumed_from``,
``get_runs(created_after=, created_before=)``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import run_dir_of, tree
from pydantic import BaseModel

import durably
from durably import ConflictError, Durably, NotFoundError, RunStatus, Step, ValidationError, define_job
from durably import _files as files_module
from durably._ids import time_prefix
from durably.testing import ManualClock

Factory = Callable[..., Durably]


class In(BaseModel):
    n: int = 3


class Point(BaseModel):
    x: float
    tags: tuple[str, ...]


CALLS: list[str] = []
BROKEN: set[str] = set()


def _body(name: str, value: Any) -> Callable[[], Any]:
    def run() -> Any:
        CALLS.append(name)
        if name in BROKEN:
            raise RuntimeError(f"{name} is broken")
        return value

    return run


def _pipeline(step: Step, payload: In) -> dict[str, Any]:
    point = step.run("fetch", _body("fetch", Point(x=0.1, tags=("a", "b"))), returns=Point)
    parts = [step.run(f"part-{k}", _body(f"part-{k}", k * 10)) for k in range(payload.n)]
    total = step.run("load", _body("load", sum(parts)))
    return {"x": point.x, "tags": list(point.tags), "total": total, "types": type(point).__name__}


PIPELINE = define_job(name="pipeline", input=In, run=_pipeline)


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    BROKEN.clear()


def _ended(d: Durably, status: str, **trigger: Any) -> durably.Run[Any]:
    handle = d.register(PIPELINE)
    if status == "failed":
        BROKEN.add("load")
    result = handle.trigger(In(), **trigger)
    if status == "cancelled":
        d.cancel(result.id)
    else:
        d.process_until_idle()
    BROKEN.clear()
    run = d.get_run(result.id)
    assert run is not None
    assert run.status == status, run
    CALLS.clear()
    return run


class TestResume:
    def test_a_failed_run_goes_on_from_its_checkpoints(self, d: Durably) -> None:
        """Resuming a failed run replays its completed steps (their functions are not
        called again) and runs the failed step and the rest, in a new run."""
        failed = _ended(d, "failed", labels={"team": "a"}, concurrency_key="k")

        new = d.resume(failed.id)

        assert (new.status, new.resumed_from, new.input) == (RunStatus.PENDING, failed.id, {"n": 3})
        assert (new.labels, new.concurrency_key, new.idempotency_key) == ({"team": "a"}, "k", None)
        assert new.id != failed.id
        d.process_until_idle()
        done = d.get_run(new.id)
        assert done is not None
        assert done.status is RunStatus.COMPLETED, done
        assert CALLS == ["load"]
        assert done.output == {"x": 0.1, "tags": ["a", "b"], "total": 30, "types": "Point"}
        assert done.completed_step_count == 5

    def test_replayed_values_are_equal_and_of_the_same_type(self, durably_factory: Factory) -> None:
        """A replayed checkpoint decodes through the same codec as any replay: a pydantic
        model with a tuple comes back as that model, equal to the first execution's."""
        seen: list[Any] = []

        def job(step: Step, payload: In) -> None:
            seen.append(step.run("fetch", lambda: Point(x=0.1, tags=("a",)), returns=Point))
            step.run("boom", _body("boom", 1))

        d = durably_factory(jobs=[define_job(name="typed", input=In, run=job)])
        BROKEN.add("boom")
        first = d.get_job("typed").trigger(In()).id  # type: ignore[union-attr]
        d.process_until_idle()
        BROKEN.clear()
        d.resume(first)
        d.process_until_idle()
        assert len(seen) == 2
        assert seen[0] == seen[1]
        assert type(seen[1]) is Point
        assert seen[1].tags == ("a",)

    def test_the_original_is_unchanged(self, d: Durably) -> None:
        """Resuming writes nothing in the original run's directory, and it reads as before."""
        failed = _ended(d, "failed")
        before = tree(Path(run_dir_of(d, failed.id)))
        steps_before = d.get_steps(failed.id)

        new = d.resume(failed.id)
        d.process_until_idle()

        assert tree(Path(run_dir_of(d, failed.id))) == before
        assert d.get_run(failed.id) == failed
        assert d.get_steps(failed.id) == steps_before
        assert d.get_run(new.id).status is RunStatus.COMPLETED  # type: ignore[union-attr]

    def test_deleting_the_original_does_not_break_the_resumed_run(self, d: Durably) -> None:
        """The checkpoints are copied into the new run: the original can be deleted before
        the new run executes, and its steps still replay."""
        failed = _ended(d, "failed")
        new = d.resume(failed.id)
        d.delete_run(failed.id)

        d.process_until_idle()

        run = d.get_run(new.id)
        assert run is not None
        assert run.status is RunStatus.COMPLETED, run
        assert CALLS == ["load"]
        assert run.resumed_from == failed.id
        assert [s.name for s in d.get_steps(new.id) if s.status == "completed"] == [
            "fetch",
            "part-0",
            "part-1",
            "part-2",
            "load",
        ]

    def test_a_cancelled_run_can_be_resumed(self, d: Durably) -> None:
        """A run cancelled before it ran resumes as a new run that runs every step."""
        cancelled = _ended(d, "cancelled")
        new = d.resume(cancelled.id)
        d.process_until_idle()
        assert d.get_run(new.id).status is RunStatus.COMPLETED  # type: ignore[union-attr]
        assert CALLS == ["fetch", "part-0", "part-1", "part-2", "load"]

    def test_from_step_runs_that_step_and_the_ones_after_it_again(self, d: Durably) -> None:
        """With from_step, only the steps before the first step of that name replay."""
        failed = _ended(d, "failed")
        new = d.resume(failed.id, from_step="part-1")
        d.process_until_idle()
        assert d.get_run(new.id).status is RunStatus.COMPLETED  # type: ignore[union-attr]
        assert CALLS == ["part-1", "part-2", "load"]

    def test_a_completed_run_forks_from_a_step_when_its_checkpoints_were_kept(
        self, durably_factory: Factory
    ) -> None:
        """preserve_steps=True: a completed run can be resumed from a step."""
        d = durably_factory(preserve_steps=True)
        done = _ended(d, "completed")
        new = d.resume(done.id, from_step="load")
        d.process_until_idle()
        assert d.get_run(new.id).output["total"] == 30  # type: ignore[index, union-attr]
        assert CALLS == ["load"]

    def test_a_resumed_run_can_be_resumed_again(self, d: Durably) -> None:
        """A resumed run that fails again resumes from its own and its original's
        checkpoints (the copies it replays are copied on)."""
        failed = _ended(d, "failed")
        BROKEN.add("load")
        second = d.resume(failed.id)
        d.process_until_idle()
        assert d.get_run(second.id).status is RunStatus.FAILED  # type: ignore[union-attr]
        BROKEN.clear()
        CALLS.clear()
        d.delete_run(failed.id)
        third = d.resume(second.id)
        d.process_until_idle()
        assert d.get_run(third.id).status is RunStatus.COMPLETED  # type: ignore[union-attr]
        assert CALLS == ["load"]

    def test_the_new_run_emits_run_trigger(self, d: Durably) -> None:
        """The new run's creation is a run:trigger event of that run."""
        failed = _ended(d, "failed")
        seen: list[Any] = []
        d.on("run:trigger", seen.append)
        new = d.resume(failed.id)
        assert [(e.type, e.run_id) for e in seen] == [("run:trigger", new.id)]

    def test_works_with_fsync(self, durably_factory: Factory) -> None:
        """With fsync=True the copied checkpoints are synced like a trigger's files."""
        d = durably_factory(fsync=True)
        failed = _ended(d, "failed")
        new = d.resume(failed.id)
        d.process_until_idle()
        assert d.get_run(new.id).status is RunStatus.COMPLETED  # type: ignore[union-attr]
        assert CALLS == ["load"]


class TestResumeRefused:
    def _unchanged(self, root: Path, call: Callable[[], Any], error: type[Exception], match: str) -> None:
        before = tree(root)
        with pytest.raises(error, match=match):
            call()
        assert tree(root) == before

    def test_an_active_run_is_a_conflict(self, d: Durably, root: Path) -> None:
        """Resuming a pending run raises ConflictError and writes nothing."""
        pending = d.register(PIPELINE).trigger(In()).id
        self._unchanged(root, lambda: d.resume(pending), ConflictError, "Cannot resume pending run")

    def test_a_completed_run_without_from_step_is_a_conflict(
        self, durably_factory: Factory, root: Path
    ) -> None:
        """A completed run needs from_step."""
        d = durably_factory(preserve_steps=True)
        done = _ended(d, "completed")
        self._unchanged(root, lambda: d.resume(done.id), ConflictError, "without from_step")

    def test_a_completed_run_whose_checkpoints_were_dropped_is_a_conflict(
        self, d: Durably, root: Path
    ) -> None:
        """preserve_steps=False dropped the checkpoints: nothing to replay, ConflictError."""
        done = _ended(d, "completed")
        self._unchanged(
            root, lambda: d.resume(done.id, from_step="load"), ConflictError, r"preserve_steps=False"
        )

    def test_a_step_that_never_ran_is_a_validation_error_naming_it(self, d: Durably, root: Path) -> None:
        """from_step must name a step the original executed; the error names it."""
        failed = _ended(d, "failed")
        self._unchanged(
            root, lambda: d.resume(failed.id, from_step="lode"), ValidationError, "from step 'lode'"
        )
        with pytest.raises(ValidationError) as info:
            d.resume(failed.id, from_step="lode")
        assert (info.value.step, info.value.run_id) == ("lode", failed.id)

    @pytest.mark.parametrize("bad", ["", 3])
    def test_a_bad_from_step_is_a_validation_error(self, d: Durably, bad: Any) -> None:
        """from_step is a non-empty string."""
        failed = _ended(d, "failed")
        with pytest.raises(ValidationError, match="from_step must be a non-empty string"):
            d.resume(failed.id, from_step=bad)

    def test_an_unknown_run_is_not_found(self, d: Durably) -> None:
        """An unknown id raises NotFoundError."""
        with pytest.raises(NotFoundError, match="Run not found"):
            d.resume("01ARZ3NDEKTSV4RRFFQ69G5FAV")

    def test_a_job_this_instance_has_not_registered_is_not_found(
        self, d: Durably, durably_factory: Factory, root: Path
    ) -> None:
        """Another instance without the job refuses with NotFoundError naming the job."""
        failed = _ended(d, "failed")
        bare = durably_factory()
        self._unchanged(
            root, lambda: bare.resume(failed.id), NotFoundError, "job 'pipeline' is not registered"
        )

    def test_an_input_the_job_now_refuses_is_a_validation_error(
        self, d: Durably, durably_factory: Factory, root: Path
    ) -> None:
        """The input is validated again by the job as registered now; nothing is written."""

        class Stricter(BaseModel):
            n: int
            region: str

        failed = _ended(d, "failed")
        changed = durably_factory(jobs=[define_job(name="pipeline", input=Stricter, run=_pipeline)])
        self._unchanged(
            root, lambda: changed.resume(failed.id), ValidationError, f"Cannot resume run {failed.id}"
        )

    def test_a_pending_run_holding_the_concurrency_key_is_a_conflict(self, d: Durably) -> None:
        """The new run keeps the concurrency key, so a pending run holding it refuses it."""
        failed = _ended(d, "failed", concurrency_key="k")
        d.register(PIPELINE).trigger(In(), concurrency_key="k")
        with pytest.raises(ConflictError):
            d.resume(failed.id)


class TestCreatedWindow:
    def _runs_at(
        self, durably_factory: Factory, monkeypatch: pytest.MonkeyPatch, hours_ago: list[int]
    ) -> tuple[Durably, datetime, list[str]]:
        """Runs created at those times (their ids and created_at agree)."""
        now = datetime.now(UTC).replace(microsecond=0)
        clock = ManualClock(now - timedelta(hours=max(hours_ago)))
        d = durably_factory(clock=clock)
        handle = d.register(PIPELINE)
        made = []
        for i, h in enumerate(hours_ago):
            when = now - timedelta(hours=h)
            clock.advance(when - clock.now())
            ident = time_prefix(int(when.timestamp() * 1000)) + f"{i:016d}"
            monkeypatch.setattr("durably._trigger.new_id", lambda ident=ident: ident)
            made.append(handle.trigger(In()).id)
        return d, now, made

    def test_after_is_inclusive_and_before_exclusive(
        self, durably_factory: Factory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """created_after includes a run created at that instant; created_before excludes it."""
        d, now, (old, mid, new) = self._runs_at(durably_factory, monkeypatch, [3, 2, 1])
        two = now - timedelta(hours=2)
        assert [r.id for r in d.get_runs(created_after=two)] == [new, mid]
        assert [r.id for r in d.get_runs(created_before=two)] == [old]
        assert [r.id for r in d.get_runs(created_after=two, created_before=now - timedelta(hours=1))] == [mid]
        handle = d.get_job("pipeline")
        assert handle is not None
        assert [r.id for r in handle.get_runs(created_after=two, limit=1)] == [new]

    def test_only_the_shards_of_the_window_are_listed(
        self, durably_factory: Factory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A window of the last 90 minutes never lists the shard of a run made 3 hours ago."""
        d, now, (old, _mid, new) = self._runs_at(durably_factory, monkeypatch, [3, 2, 1])
        listed: list[str] = []
        real = files_module.list_dir

        def spy(path: str) -> list[str]:
            listed.append(path)
            return real(path)

        monkeypatch.setattr(files_module, "list_dir", spy)
        assert [r.id for r in d.get_runs(created_after=now - timedelta(minutes=90))] == [new]
        assert not any(old[:6] in p for p in listed if old[:6] != new[:6]), listed

    @pytest.mark.parametrize("name", ["created_after", "created_before"])
    def test_a_naive_datetime_is_refused(self, d: Durably, name: str) -> None:
        """A datetime without a time zone raises ValidationError naming the parameter."""
        naive: dict[str, Any] = {name: datetime(2026, 1, 1)}
        with pytest.raises(ValidationError, match=f"{name} must be an aware datetime"):
            d.get_runs(**naive)
        handle = d.register(PIPELINE)
        with pytest.raises(ValidationError, match=name):
            handle.get_runs(**naive)
