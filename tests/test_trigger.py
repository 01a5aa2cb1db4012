"""Triggering runs (docs/api.md: JobHandle): inputs, idempotency, concurrency keys,
coalescing, labels, batches, `trigger_and_wait` and handle queries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal

import pytest
from helpers import Payload, Started, blocking_job, status_of, wait_until
from pydantic import BaseModel

import durably
from durably import (
    BatchItem,
    ConflictError,
    Durably,
    RunFailedError,
    Step,
    ValidationError,
    WaitTimeoutError,
    define_job,
)

Factory = Callable[..., Durably]


class SyncIn(BaseModel):
    org_id: str
    force: bool = False


class SyncOut(BaseModel):
    synced_count: int
    errors: list[str]


received: list[Any] = []


def _sync(step: Step, payload: SyncIn) -> SyncOut:
    received.append(payload)
    return SyncOut(synced_count=len(payload.org_id), errors=[])


SYNC = define_job(name="sync-users", input=SyncIn, output=SyncOut, run=_sync)
OTHER = define_job(name="other", input=SyncIn, output=SyncOut, run=_sync)


def _fail(step: Step, payload: SyncIn) -> SyncOut:
    step.run("boom", _raise)
    raise AssertionError("unreachable")


def _raise() -> None:
    raise RuntimeError("Intentional failure")


FAILING = define_job(name="failing", input=SyncIn, output=SyncOut, run=_fail)


@pytest.fixture
def sync(d: Durably) -> durably.JobHandle[SyncIn, SyncOut]:
    return d.register(SYNC)


def _plain(value: Any) -> Any:
    """A run's input as plain JSON data, whether it is given back as a model or a dict."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _count_runs(d: Durably, **filters: Any) -> int:
    return len(d.get_runs(**filters))


class TestTriggerResult:
    def test_trigger_returns_a_pending_created_run(self, sync: durably.JobHandle[SyncIn, SyncOut]) -> None:
        """A first trigger returns a TriggerResult: a pending Run with disposition "created"."""
        result = sync.trigger(SyncIn(org_id="acme"))

        assert isinstance(result, durably.TriggerResult)
        assert isinstance(result, durably.Run)
        assert result.disposition == "created"
        assert result.status == durably.RunStatus.PENDING
        assert result.job_name == "sync-users"
        assert result.lease_generation == 0
        assert result.labels == {}
        assert result.output is None
        assert result.error is None

    def test_each_trigger_creates_a_new_run(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """Triggers without keys create distinct runs."""
        first = sync.trigger(SyncIn(org_id="a"))
        second = sync.trigger(SyncIn(org_id="a"))

        assert first.id != second.id
        assert _count_runs(d) == 2


class TestInput:
    @pytest.mark.parametrize(
        "given",
        [SyncIn(org_id="acme"), {"org_id": "acme"}, {"org_id": "acme", "force": False}],
        ids=["model", "mapping", "mapping-with-default"],
    )
    def test_model_or_mapping_is_validated_and_stored(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut], given: Any
    ) -> None:
        """A model instance or a mapping is accepted; the validated value is stored."""
        result = sync.trigger(given)

        stored = d.get_run(result.id)
        assert stored is not None
        assert stored.input == {"org_id": "acme", "force": False}
        assert _plain(result.input) == {"org_id": "acme", "force": False}

    def test_run_receives_the_validated_model(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """The job's `run` gets the validated input as an instance of the input model."""
        received.clear()
        sync.trigger({"org_id": "acme"})
        d.process_until_idle()

        assert received == [SyncIn(org_id="acme", force=False)]
        assert type(received[0]) is SyncIn

    @pytest.mark.parametrize(
        ("given", "field"),
        [({}, "org_id"), ({"org_id": 5}, "org_id"), ({"org_id": "x", "force": "maybe"}, "force")],
        ids=["missing", "wrong-type", "bad-bool"],
    )
    def test_invalid_input_raises_validation_error_naming_the_field(
        self,
        d: Durably,
        sync: durably.JobHandle[SyncIn, SyncOut],
        given: dict[str, Any],
        field: str,
    ) -> None:
        """Invalid input raises ValidationError naming the field, and creates no run."""
        with pytest.raises(ValidationError, match=field):
            sync.trigger(given)

        assert _count_runs(d) == 0

    def test_extra_keys_are_dropped_by_validation(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """What is stored is the validated value, so unknown keys are not kept."""
        result = sync.trigger({"org_id": "acme", "unknown": 1})

        stored = d.get_run(result.id)
        assert stored is not None
        assert stored.input == {"org_id": "acme", "force": False}


class TestIdempotency:
    def test_same_key_returns_the_existing_run_with_its_original_input(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """A repeated idempotency key returns the existing run, disposition "idempotent"."""
        first = sync.trigger(SyncIn(org_id="first"), idempotency_key="k")
        again = sync.trigger(SyncIn(org_id="second"), idempotency_key="k")

        assert again.id == first.id
        assert again.disposition == "idempotent"
        assert _plain(again.input) == {"org_id": "first", "force": False}
        assert again.idempotency_key == "k"
        assert _count_runs(d) == 1

    @pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
    def test_same_key_returns_the_existing_run_whatever_its_status(self, d: Durably, outcome: str) -> None:
        """The existing run is returned even once it is terminal."""
        handle = d.register(FAILING if outcome == "failed" else SYNC)
        first = handle.trigger(SyncIn(org_id="a"), idempotency_key="k")
        if outcome == "cancelled":
            d.cancel(first.id)
        else:
            d.process_until_idle()
        assert status_of(d, first.id) == outcome

        again = handle.trigger(SyncIn(org_id="b"), idempotency_key="k")

        assert again.id == first.id
        assert again.disposition == "idempotent"
        assert again.status == outcome
        assert _count_runs(d) == 1

    def test_idempotent_trigger_and_wait_returns_the_existing_output(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """`trigger_and_wait` with a used key returns the existing run's output."""
        first = sync.trigger(SyncIn(org_id="ab"), idempotency_key="k")
        d.process_until_idle()

        again = sync.trigger_and_wait(SyncIn(org_id="abcdef"), idempotency_key="k", timeout=5)

        assert (again.id, again.disposition) == (first.id, "idempotent")
        assert again.output == SyncOut(synced_count=2, errors=[])

    def test_idempotent_trigger_emits_no_event(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """Only the creating trigger emits `run:trigger`; an idempotent hit emits nothing."""
        seen: list[Any] = []
        for kind in ("run:trigger", "run:coalesced"):
            d.on(kind, seen.append)

        sync.trigger(SyncIn(org_id="a"), idempotency_key="k")
        sync.trigger(SyncIn(org_id="a"), idempotency_key="k")

        assert [e.type for e in seen] == ["run:trigger"]

    def test_keys_hold_across_instances_on_one_root(self, durably_factory: Factory) -> None:
        """Another instance on the same root sees the key: same run, and the same pending key."""
        first, second = durably_factory(jobs=[SYNC]), durably_factory(jobs=[SYNC])
        created = first.jobs["sync-users"].trigger(
            SyncIn(org_id="a"), idempotency_key="k", concurrency_key="c"
        )

        again = second.jobs["sync-users"].trigger(SyncIn(org_id="b"), idempotency_key="k")
        with pytest.raises(ConflictError):
            second.jobs["sync-users"].trigger(SyncIn(org_id="c"), concurrency_key="c")

        assert (again.id, again.disposition) == (created.id, "idempotent")

    def test_keys_are_scoped_to_the_job(self, d: Durably) -> None:
        """The same idempotency key on another job creates a separate run."""
        a = d.register(SYNC).trigger(SyncIn(org_id="a"), idempotency_key="k")
        b = d.register(OTHER).trigger(SyncIn(org_id="a"), idempotency_key="k")

        assert b.disposition == "created"
        assert b.id != a.id

    @pytest.mark.parametrize("coalesce", [None, "skip", "queue"])
    def test_idempotency_outranks_the_concurrency_rules(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut], coalesce: Literal["skip", "queue"] | None
    ) -> None:
        """Same idempotency and concurrency key while pending is "idempotent", not a conflict."""
        first = sync.trigger(SyncIn(org_id="a"), idempotency_key="k", concurrency_key="c")

        again = sync.trigger(SyncIn(org_id="a"), idempotency_key="k", concurrency_key="c", coalesce=coalesce)

        assert again.id == first.id
        assert again.disposition == "idempotent"

    def test_idempotent_hit_still_validates_the_input(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """Input is validated before the idempotency lookup: bad input raises ValidationError."""
        sync.trigger(SyncIn(org_id="a"), idempotency_key="k")

        with pytest.raises(ValidationError):
            sync.trigger({"force": True}, idempotency_key="k")


WEIRD_NAMES = [
    "a/b/c",
    "../../outside",
    "..",
    "naïve ünïcode ✓ 日本語",
    "with spaces and\ttabs",
    "x" * 1000,
    "é" * 1000,
]


class TestNamesAreData:
    @pytest.mark.parametrize("name", WEIRD_NAMES, ids=range(len(WEIRD_NAMES)))
    def test_any_job_name_works(self, durably_factory: Factory, root: Any, name: str) -> None:
        """Job names with any characters, up to 1,000 of them, trigger and complete."""
        d = durably_factory(jobs=[define_job(name=name, input=SyncIn, output=SyncOut, run=_sync)])
        result = d.jobs[name].trigger(SyncIn(org_id="a"))

        assert d.process_until_idle() == 1
        run = d.get_run(result.id)
        assert run is not None
        assert (run.job_name, run.status) == (name, "completed")
        assert [r.id for r in d.get_runs(job_name=name)] == [result.id]
        assert all(p.resolve().is_relative_to(root.resolve()) for p in root.rglob("*"))
        assert not (root.parent / "outside").exists()

    @pytest.mark.parametrize("key", WEIRD_NAMES, ids=range(len(WEIRD_NAMES)))
    def test_any_idempotency_and_concurrency_key_works(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut], root: Any, key: str
    ) -> None:
        """Idempotency and concurrency keys with any characters keep their meaning."""
        first = sync.trigger(SyncIn(org_id="a"), idempotency_key=key, concurrency_key=key)
        again = sync.trigger(SyncIn(org_id="b"), idempotency_key=key)
        with pytest.raises(ConflictError):
            sync.trigger(SyncIn(org_id="c"), concurrency_key=key)

        assert (again.id, again.disposition) == (first.id, "idempotent")
        assert (again.idempotency_key, again.concurrency_key) == (key, key)
        assert all(p.resolve().is_relative_to(root.resolve()) for p in root.rglob("*"))

    def test_similar_keys_stay_distinct(self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]) -> None:
        """Keys that differ only by case, separators or length are different keys."""
        keys = ["k", "K", "k/", "k ", "k" * 999 + "a", "k" * 999 + "b", "a/b", "a_b"]
        ids = {sync.trigger(SyncIn(org_id="a"), idempotency_key=k).id for k in keys}

        assert len(ids) == len(keys)


class TestConcurrencyKey:
    def test_second_pending_run_with_the_same_key_conflicts(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """A second trigger while a run with the same key is pending raises ConflictError."""
        sync.trigger(SyncIn(org_id="a"), concurrency_key="c")

        with pytest.raises(ConflictError):
            sync.trigger(SyncIn(org_id="b"), concurrency_key="c")
        assert _count_runs(d) == 1

    def test_different_keys_and_no_key_never_conflict(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """Runs with different concurrency keys, or none, are all created."""
        dispositions = [
            sync.trigger(SyncIn(org_id="a"), concurrency_key="c1").disposition,
            sync.trigger(SyncIn(org_id="a"), concurrency_key="c2").disposition,
            sync.trigger(SyncIn(org_id="a")).disposition,
            sync.trigger(SyncIn(org_id="a")).disposition,
        ]

        assert dispositions == ["created"] * 4

    def test_pending_limit_is_per_job(self, d: Durably) -> None:
        """The same concurrency key on another job may have its own pending run."""
        d.register(SYNC).trigger(SyncIn(org_id="a"), concurrency_key="c")

        other = d.register(OTHER).trigger(SyncIn(org_id="a"), concurrency_key="c")

        assert other.disposition == "created"

    def test_key_is_free_again_once_the_pending_run_is_leased(
        self, durably_factory: Factory, gates: Any
    ) -> None:
        """While one run with the key is leased, one more may be pending, but not two."""
        gate, started = gates(), Started()
        d = durably_factory(jobs=[blocking_job("blocking", gate, started)])
        handle = d.jobs["blocking"]
        first = handle.trigger(Payload(value="1"), concurrency_key="c")
        d.start()
        wait_until(lambda: started.count() == 1)
        assert status_of(d, first.id) == "leased"

        second = handle.trigger(Payload(value="2"), concurrency_key="c")
        assert second.disposition == "created"
        with pytest.raises(ConflictError):
            handle.trigger(Payload(value="3"), concurrency_key="c")

        gate.set()
        d.wait_for_run(second.id, timeout=10)

    @pytest.mark.parametrize("end", ["cancelled", "completed"])
    def test_key_is_free_again_once_the_pending_run_ends(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut], end: str
    ) -> None:
        """Once the pending run with the key is cancelled or done, a new one may be created."""
        first = sync.trigger(SyncIn(org_id="a"), concurrency_key="c")
        if end == "cancelled":
            d.cancel(first.id)
        else:
            d.process_until_idle()

        again = sync.trigger(SyncIn(org_id="b"), concurrency_key="c")

        assert again.disposition == "created"
        assert again.id != first.id

    def test_coalesce_skip_returns_the_pending_run(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """`coalesce="skip"` returns the pending run, with its original input, as "coalesced"."""
        first = sync.trigger(SyncIn(org_id="first"), concurrency_key="c")

        again = sync.trigger(SyncIn(org_id="second"), concurrency_key="c", coalesce="skip")

        assert again.id == first.id
        assert again.disposition == "coalesced"
        assert _plain(again.input) == {"org_id": "first", "force": False}
        assert _count_runs(d) == 1

    def test_coalesce_skip_without_a_pending_run_creates_one(
        self, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """`coalesce="skip"` creates the run when none with the key is pending."""
        result = sync.trigger(SyncIn(org_id="a"), concurrency_key="c", coalesce="skip")

        assert result.disposition == "created"

    def test_coalesced_trigger_emits_run_coalesced_and_no_run_trigger(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """A coalesced trigger emits `run:coalesced` for the existing run, not `run:trigger`."""
        first = sync.trigger(SyncIn(org_id="first"), concurrency_key="c")
        seen: list[Any] = []
        for kind in ("run:trigger", "run:coalesced"):
            d.on(kind, seen.append)

        sync.trigger(SyncIn(org_id="second"), concurrency_key="c", coalesce="skip")

        assert [e.type for e in seen] == ["run:coalesced"]
        assert seen[0].run_id == first.id
        assert seen[0].job_name == "sync-users"

    def test_coalesce_without_concurrency_key_is_invalid(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """`coalesce` without a concurrency key raises ValidationError."""
        with pytest.raises(ValidationError):
            sync.trigger(SyncIn(org_id="a"), coalesce="skip")
        assert _count_runs(d) == 0

    @pytest.mark.parametrize("value", ["replace", "", "SKIP", "Queue", 1, ["queue"]])
    def test_unknown_coalesce_value_is_invalid(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut], value: object
    ) -> None:
        """Any `coalesce` value other than "skip" or "queue" raises ValidationError naming
        the argument and the valid values; nothing is written."""
        with pytest.raises(ValidationError, match=r"coalesce.*'skip', 'queue'"):
            sync.trigger(SyncIn(org_id="a"), concurrency_key="c", coalesce=value)  # type: ignore[arg-type]
        assert _count_runs(d) == 0


class Team(BaseModel):
    team: str
    env: str = "prod"


class TestLabels:
    def test_labels_are_stored_on_the_run(self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]) -> None:
        """Labels given to a trigger are stored and returned as a dict of strings."""
        labels = {"team": "core", "app.kubernetes.io/name": "sync", "a_b-c": "x y"}
        result = sync.trigger(SyncIn(org_id="a"), labels=labels)

        assert result.labels == labels
        stored = d.get_run(result.id)
        assert stored is not None
        assert stored.labels == labels

    def test_labels_default_to_empty(self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]) -> None:
        """A run triggered without labels has `labels == {}`."""
        result = sync.trigger(SyncIn(org_id="a"))

        stored = d.get_run(result.id)
        assert stored is not None
        assert stored.labels == {}

    @pytest.mark.parametrize("key", ["invalid key", 'key"injection', "", "ключ", "a:b"])
    def test_invalid_label_keys_raise_validation_error(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut], key: str
    ) -> None:
        """Label keys outside `[A-Za-z0-9-_./]+` raise ValidationError and create no run."""
        with pytest.raises(ValidationError):
            sync.trigger(SyncIn(org_id="a"), labels={key: "v"})
        assert _count_runs(d) == 0

    def test_non_string_label_values_raise_validation_error(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """Labels are `dict[str, str]`: a non-string value raises ValidationError."""
        with pytest.raises(ValidationError):
            sync.trigger(SyncIn(org_id="a"), labels={"n": 1})  # type: ignore[dict-item]

    def test_labels_schema_rejects_invalid_labels(self, durably_factory: Factory) -> None:
        """With a labels model, labels that do not match it raise ValidationError."""
        d = durably_factory(jobs=[SYNC], labels=Team)

        with pytest.raises(ValidationError, match="labels"):
            d.jobs["sync-users"].trigger(SyncIn(org_id="a"), labels={"env": "dev"})
        assert _count_runs(d) == 0

    def test_labels_schema_applies_when_labels_are_omitted(self, durably_factory: Factory) -> None:
        """With a labels model, omitted labels are validated too (a required key is enforced)."""
        d = durably_factory(jobs=[SYNC], labels=Team)

        with pytest.raises(ValidationError, match="labels"):
            d.jobs["sync-users"].trigger(SyncIn(org_id="a"))
        assert _count_runs(d) == 0

    def test_labels_schema_stores_the_validated_labels(self, durably_factory: Factory) -> None:
        """With a labels model, the validated labels (defaults filled in) are stored."""
        d = durably_factory(jobs=[SYNC], labels=Team)

        result = d.jobs["sync-users"].trigger(SyncIn(org_id="a"), labels={"team": "core"})

        stored = d.get_run(result.id)
        assert stored is not None
        assert stored.labels == {"team": "core", "env": "prod"}


class TestBatchTrigger:
    def test_returns_one_result_per_item_in_order(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """Bare inputs and BatchItems each yield a created run, in item order."""
        results = sync.batch_trigger(
            [
                SyncIn(org_id="a"),
                {"org_id": "b"},
                BatchItem(SyncIn(org_id="c"), labels={"k": "v"}),
            ]
        )

        assert [r.disposition for r in results] == ["created"] * 3
        assert [_plain(r.input)["org_id"] for r in results] == ["a", "b", "c"]
        assert all(isinstance(r, durably.TriggerResult) for r in results)
        assert len({r.id for r in results}) == 3
        assert _count_runs(d) == 3

    def test_empty_batch_returns_empty_list(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """An empty batch returns [] and creates nothing."""
        assert sync.batch_trigger([]) == []
        assert _count_runs(d) == 0

    def test_per_item_options_are_honoured(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """Each BatchItem's keys and labels are stored on its run."""
        results = sync.batch_trigger(
            [
                BatchItem(
                    SyncIn(org_id="a"),
                    idempotency_key="i1",
                    concurrency_key="c1",
                    labels={"team": "x"},
                ),
                BatchItem(input=SyncIn(org_id="b"), idempotency_key="i2"),
            ]
        )

        first = d.get_run(results[0].id)
        second = d.get_run(results[1].id)
        assert first is not None
        assert second is not None
        assert (first.idempotency_key, first.concurrency_key, first.labels) == (
            "i1",
            "c1",
            {"team": "x"},
        )
        assert (second.idempotency_key, second.concurrency_key, second.labels) == (
            "i2",
            None,
            {},
        )

    @pytest.mark.parametrize(
        "bad_item",
        [
            pytest.param({"org_id": 5}, id="invalid-input"),
            pytest.param(BatchItem(SyncIn(org_id="x"), coalesce="skip"), id="coalesce-no-key"),
            pytest.param(
                BatchItem(SyncIn(org_id="x"), concurrency_key="c", coalesce="later"),  # type: ignore[arg-type]
                id="bad-coalesce",
            ),
            pytest.param(BatchItem(SyncIn(org_id="x"), coalesce="queue"), id="queue-no-key"),
            pytest.param(BatchItem(SyncIn(org_id="x"), labels={"bad key": "v"}), id="label-key"),
        ],
    )
    def test_an_invalid_item_rejects_the_whole_batch_naming_its_index(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut], bad_item: Any
    ) -> None:
        """An invalid item raises ValidationError saying `at index i`; no run is created."""
        with pytest.raises(ValidationError, match="at index 2"):
            sync.batch_trigger([SyncIn(org_id="a"), SyncIn(org_id="b"), bad_item])

        assert _count_runs(d) == 0

    def test_labels_schema_errors_name_the_index(self, durably_factory: Factory) -> None:
        """With a labels model, a bad item's labels fail the batch `at index i`."""
        d = durably_factory(jobs=[SYNC], labels=Team)
        items = [
            BatchItem(SyncIn(org_id="a"), labels={"team": "x"}),
            BatchItem(SyncIn(org_id="b"), labels={"env": "dev"}),
        ]

        with pytest.raises(ValidationError, match="at index 1"):
            d.jobs["sync-users"].batch_trigger(items)
        assert _count_runs(d) == 0

    def test_a_conflict_on_any_item_rolls_back_the_batch(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """A ConflictError on one item leaves no run of the batch behind."""
        sync.trigger(SyncIn(org_id="existing"), concurrency_key="busy")

        with pytest.raises(ConflictError):
            sync.batch_trigger(
                [
                    BatchItem(SyncIn(org_id="a"), concurrency_key="free"),
                    SyncIn(org_id="b"),
                    BatchItem(SyncIn(org_id="c"), concurrency_key="busy"),
                ]
            )

        assert _count_runs(d) == 1

    def test_same_key_twice_in_one_batch_conflicts(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """Two items with one concurrency key and no coalesce conflict; nothing is created."""
        with pytest.raises(ConflictError):
            sync.batch_trigger(
                [
                    BatchItem(SyncIn(org_id="a"), concurrency_key="k"),
                    BatchItem(SyncIn(org_id="b"), concurrency_key="k"),
                ]
            )
        assert _count_runs(d) == 0

    def test_later_item_coalesces_onto_an_earlier_item_of_the_same_batch(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """key-1 skip, key-2, key-1 skip gives created, created, coalesced (onto the first)."""
        results = sync.batch_trigger(
            [
                BatchItem(SyncIn(org_id="a"), concurrency_key="key-1", coalesce="skip"),
                BatchItem(SyncIn(org_id="b"), concurrency_key="key-2"),
                BatchItem(SyncIn(org_id="c"), concurrency_key="key-1", coalesce="skip"),
            ]
        )

        assert [r.disposition for r in results] == ["created", "created", "coalesced"]
        assert results[2].id == results[0].id
        assert _count_runs(d) == 2

    def test_emits_one_event_per_item_in_item_order(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """A batch emits `run:trigger` (or `run:coalesced`) for its items, in item order."""
        seen: list[Any] = []
        for kind in ("run:trigger", "run:coalesced"):
            d.on(kind, seen.append)

        results = sync.batch_trigger(
            [
                BatchItem(SyncIn(org_id="a"), concurrency_key="k", coalesce="skip"),
                SyncIn(org_id="b"),
                BatchItem(SyncIn(org_id="c"), concurrency_key="k", coalesce="skip"),
            ]
        )

        assert [(e.type, e.run_id) for e in seen] == [
            ("run:trigger", results[0].id),
            ("run:trigger", results[1].id),
            ("run:coalesced", results[0].id),
        ]

    def test_idempotent_item_returns_the_existing_run(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """An item whose idempotency key exists returns that run as "idempotent"."""
        existing = sync.trigger(SyncIn(org_id="a"), idempotency_key="k")

        results = sync.batch_trigger([SyncIn(org_id="b"), BatchItem(SyncIn(org_id="c"), idempotency_key="k")])

        assert [r.disposition for r in results] == ["created", "idempotent"]
        assert results[1].id == existing.id


class TestTriggerAndWait:
    def test_returns_id_output_and_disposition(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """`trigger_and_wait` returns the run id, the typed output and the disposition."""
        d.start()

        result = sync.trigger_and_wait(SyncIn(org_id="acme"), timeout=10)

        assert isinstance(result, durably.TriggerAndWaitResult)
        assert result.output == SyncOut(synced_count=4, errors=[])
        assert isinstance(result.output, SyncOut)
        assert result.disposition == "created"
        assert status_of(d, result.id) == "completed"

    def test_applies_trigger_options(self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]) -> None:
        """Trigger options given to `trigger_and_wait` are stored on the run."""
        d.start()

        result = sync.trigger_and_wait(SyncIn(org_id="a"), timeout=10, idempotency_key="k", labels={"t": "1"})

        run = d.get_run(result.id)
        assert run is not None
        assert (run.idempotency_key, run.labels) == ("k", {"t": "1"})

    def test_coalesced_trigger_waits_on_the_existing_run(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """When the trigger coalesces, the wait returns the existing run's output."""
        first = sync.trigger(SyncIn(org_id="abc"), concurrency_key="c")
        coalesced = threading.Event()
        d.on("run:coalesced", lambda event: coalesced.set())
        results: list[Any] = []
        waiter = threading.Thread(
            target=lambda: results.append(
                sync.trigger_and_wait(
                    SyncIn(org_id="abcdefgh"), timeout=10, concurrency_key="c", coalesce="skip"
                )
            )
        )
        waiter.start()
        assert coalesced.wait(10)
        d.start()  # only now can the pending run be claimed
        waiter.join(15)

        (result,) = results
        assert result.disposition == "coalesced"
        assert result.id == first.id
        assert result.output == SyncOut(synced_count=3, errors=[])

    def test_failed_run_raises_run_failed_error(self, d: Durably) -> None:
        """A run that fails makes `trigger_and_wait` raise RunFailedError with its error."""
        handle = d.register(FAILING)
        d.start()

        with pytest.raises(RunFailedError) as info:
            handle.trigger_and_wait(SyncIn(org_id="a"), timeout=10)

        assert "Intentional failure" in str(info.value.error)
        assert info.value.run_id is not None
        assert status_of(d, info.value.run_id) == "failed"

    def test_timeout_raises_wait_timeout_error(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """With no worker, `trigger_and_wait(timeout=...)` raises WaitTimeoutError."""
        with pytest.raises(WaitTimeoutError):
            sync.trigger_and_wait(SyncIn(org_id="a"), timeout=0.1)

        runs = d.get_runs()
        assert [r.status for r in runs] == ["pending"]

    def test_reports_progress_and_logs(self, d: Durably) -> None:
        """`on_progress` and `on_log` see the run's progress and logs as they happen."""
        got_progress, got_log = threading.Event(), threading.Event()

        def job(step: Step, payload: SyncIn) -> None:
            # Repeat until the waiter has seen one: it only sees events after it subscribed.
            for i in range(1, 2000):
                step.progress(i, 2000)
                if got_progress.wait(0.01):
                    break
            for _ in range(2000):
                step.log.warn("careful", data={"n": 1})
                if got_log.wait(0.01):
                    break

        handle = d.register(define_job(name="chatty", input=SyncIn, run=job))
        progress: list[Any] = []
        logs: list[Any] = []

        def on_progress(p: Any) -> None:
            progress.append(p)
            got_progress.set()

        def on_log(entry: Any) -> None:
            logs.append(entry)
            got_log.set()

        d.start()
        handle.trigger_and_wait(SyncIn(org_id="a"), timeout=30, on_progress=on_progress, on_log=on_log)

        progress = [getattr(p, "progress", p) for p in progress]
        assert progress
        assert all(p.total == 2000 for p in progress)
        assert logs
        assert all((e.level, e.message, e.data) == ("warn", "careful", {"n": 1}) for e in logs)


class TestHandleQueries:
    def test_get_run_returns_none_for_another_jobs_run(self, d: Durably) -> None:
        """`handle.get_run` returns None for a run that belongs to a different job."""
        sync = d.register(SYNC)
        other = d.register(OTHER)
        result = other.trigger(SyncIn(org_id="a"))

        assert sync.get_run(result.id) is None
        assert other.get_run(result.id) is not None

    def test_get_run_returns_none_for_unknown_id(self, sync: durably.JobHandle[SyncIn, SyncOut]) -> None:
        """`handle.get_run` returns None for an id that does not exist."""
        assert sync.get_run("no-such-run") is None

    def test_get_runs_is_scoped_to_the_job(self, d: Durably) -> None:
        """`handle.get_runs` only lists the handle's own runs, newest first."""
        sync = d.register(SYNC)
        other = d.register(OTHER)
        a = sync.trigger(SyncIn(org_id="a"))
        other.trigger(SyncIn(org_id="b"))
        c = sync.trigger(SyncIn(org_id="c"))

        assert [r.id for r in sync.get_runs()] == [c.id, a.id]
        assert [r.id for r in sync.get_runs(limit=1)] == [c.id]

    def test_get_runs_takes_the_filters(self, d: Durably) -> None:
        """`handle.get_runs` accepts the status, labels, limit and offset filters."""
        sync = d.register(SYNC)
        a = sync.trigger(SyncIn(org_id="a"), labels={"k": "v"})
        b = sync.trigger(SyncIn(org_id="b"), labels={"k": "v"})
        sync.trigger(SyncIn(org_id="c"))
        d.process_one()

        assert [r.id for r in sync.get_runs(status="completed")] == [a.id]
        assert [r.id for r in sync.get_runs(labels={"k": "v"})] == [b.id, a.id]
        assert [r.id for r in sync.get_runs(labels={"k": "v"}, limit=1, offset=1)] == [a.id]

    def test_handle_runs_carry_typed_output(
        self, d: Durably, sync: durably.JobHandle[SyncIn, SyncOut]
    ) -> None:
        """Runs read through a handle carry the output as the output model."""
        result = sync.trigger(SyncIn(org_id="ab"))
        d.process_until_idle()

        run = sync.get_run(result.id)
        assert run is not None
        assert isinstance(run.output, SyncOut)
        assert [type(r.output) for r in sync.get_runs()] == [SyncOut]
