"""Schedules (SPEC §10): one run per tick by its idempotency key, catch-up policies, pause
and resume, time zones across daylight-saving changes, bad input; all on a ManualClock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

from durably import ConflictError, Durably, NotFoundError, RunStatus, StoreError, ValidationError, define_job
from durably._driver import fire_schedules  # the firing alone, without a claim
from durably.testing import ManualClock

START = datetime(2026, 1, 1, tzinfo=UTC)


class In(pydantic.BaseModel):
    org: str


def _sync(step: Any, payload: In) -> str:
    return str(step.run("fetch", lambda: payload.org))


sync = define_job(name="sync", input=In, output=str, run=_sync)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def make(root: Path, clock: ManualClock, *jobs: Any) -> Durably:
    return Durably(root, jobs=list(jobs), clock=clock, fsync=False)


def keys(d: Durably) -> list[str]:
    return sorted(r.idempotency_key or "" for r in d.get_runs(limit=10_000))


class TestFiring:
    def test_each_tick_is_one_run_with_the_spec_key_and_options(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, sync)
        fired: list[Any] = []
        d.on("schedule:fire", fired.append)
        d.schedule("hourly", sync, "0 * * * *", input=In(org="o1"), labels={"team": "a"})
        assert d.process_until_idle() == 0  # the first tick is after creation
        clock.advance(timedelta(hours=1))
        assert d.process_until_idle() == 1
        (run,) = d.get_runs()
        assert run.idempotency_key == "hourly@2026-01-01T01:00:00Z"
        assert run.labels == {"team": "a"}
        assert run.input == {"org": "o1"}
        assert run.status is RunStatus.COMPLETED
        assert run.output == "o1"
        assert [(e.schedule_name, e.scheduled_at, e.run_id) for e in fired] == [
            ("hourly", datetime(2026, 1, 1, 1, tzinfo=UTC), run.id)
        ]
        s = d.get_schedule("hourly")
        assert s is not None
        assert s.last_run_id == run.id
        assert s.last_run_at == datetime(2026, 1, 1, 1, tzinfo=UTC)
        assert s.next_run_at == datetime(2026, 1, 1, 2, tzinfo=UTC)
        assert d.process_until_idle() == 0  # the same tick never fires again

    def test_a_tick_at_the_creation_moment_is_not_fired(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("midnight", sync, "0 0 * * *", input={"org": "o"})  # START is a tick
        d.process_until_idle()
        assert keys(d) == []
        clock.advance(timedelta(days=1))
        d.process_until_idle()
        assert keys(d) == ["midnight@2026-01-02T00:00:00Z"]

    def test_seconds_first_six_fields(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("fast", sync, "*/10 * * * * *", input={"org": "o"}, catch_up="all")
        clock.advance(timedelta(seconds=30))
        d.process_until_idle()
        assert keys(d) == [f"fast@2026-01-01T00:00:{s}Z" for s in ("10", "20", "30")]

    def test_another_instance_sharing_the_root_never_fires_a_tick_twice(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        a, b = make(tmp_path, clock, sync), make(tmp_path, clock, sync)
        a.schedule("s", sync, "* * * * *", input={"org": "o"})
        b.schedule("s", sync, "* * * * *", input={"org": "o"})  # import time in every process
        for _ in range(5):
            clock.advance(timedelta(minutes=1))
            b.process_until_idle()
            a.process_until_idle()
            # the one that fires second finds the run by its key; its fired record is older
            b.process_until_idle()
        assert keys(a) == [f"s@2026-01-01T00:0{m}:00Z" for m in range(1, 6)]

    def test_a_crash_before_the_fired_record_fires_the_same_run_again(
        self, tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("s", sync, "0 * * * *", input={"org": "o"})
        clock.advance(timedelta(hours=1))
        book = type(d._rt.store.schedules)
        real = book.put_fired

        def fail(self: Any, name: str, fired: Any) -> None:
            raise StoreError("disk full (injected)")

        monkeypatch.setattr(book, "put_fired", fail)
        errors: list[Any] = []
        d.on("worker:error", errors.append)
        d.process_until_idle()
        assert errors
        assert {e.context for e in errors} == {"schedule"}
        first = d.get_runs()
        assert len(first) == 1  # the run exists, the fired record does not
        monkeypatch.setattr(book, "put_fired", real)
        d.process_until_idle()
        assert [r.id for r in d.get_runs()] == [first[0].id]
        s = d.get_schedule("s")
        assert s is not None
        assert s.last_run_id == first[0].id

    def test_an_instance_without_the_job_lists_but_does_not_fire(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        make(tmp_path, clock, sync).schedule("s", sync, "0 * * * *", input={"org": "o"})
        other = make(tmp_path, clock)
        clock.advance(timedelta(hours=1))
        other.process_until_idle()
        assert keys(other) == []
        assert [s.name for s in other.get_schedules()] == ["s"]

    def test_a_pending_run_holding_the_key_skips_the_tick_and_says_so(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("k", sync, "0 * * * *", input={"org": "o"}, concurrency_key="one")
        d.register(sync).trigger({"org": "x"}, concurrency_key="one")  # pending, never claimed
        errors: list[Any] = []
        d.on("worker:error", errors.append)
        clock.advance(timedelta(hours=1))
        fire_schedules(d._rt)
        assert len(d.get_runs()) == 1
        assert errors
        assert "skipped tick k@2026-01-01T01:00:00Z" in errors[0].error

    def test_coalesce_skip_gives_the_tick_the_pending_run(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("k", sync, "0 * * * *", input={"org": "o"}, concurrency_key="one", coalesce="skip")
        pending = d.register(sync).trigger({"org": "x"}, concurrency_key="one")
        clock.advance(timedelta(hours=1))
        fire_schedules(d._rt)
        s = d.get_schedule("k")
        assert s is not None
        assert s.last_run_id == pending.id
        assert len(d.get_runs()) == 1


class TestCatchUp:
    def gap(self, tmp_path: Path, clock: ManualClock, policy: str, hours: float) -> list[str]:
        d = make(tmp_path, clock, sync)
        d.schedule("h", sync, "0 * * * *", input={"org": "o"}, catch_up=policy)
        clock.advance(timedelta(hours=hours))
        d.process_until_idle()
        return keys(d)

    def test_latest_fires_only_the_latest_due_tick(self, tmp_path: Path, clock: ManualClock) -> None:
        assert self.gap(tmp_path, clock, "latest", 5.5) == ["h@2026-01-01T05:00:00Z"]

    def test_all_fires_every_due_tick_oldest_first(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("h", sync, "0 * * * *", input={"org": "o"}, catch_up="all")
        clock.advance(timedelta(hours=3, minutes=10))
        d.process_until_idle()
        runs = d.get_runs(limit=100)[::-1]  # oldest first
        assert [r.idempotency_key for r in runs] == [f"h@2026-01-01T0{h}:00:00Z" for h in (1, 2, 3)]

    def test_all_fires_at_most_the_latest_thousand(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("m", sync, "* * * * *", input={"org": "o"}, catch_up="all")
        clock.advance(timedelta(minutes=1500))
        d.process_until_idle()
        got = keys(d)
        assert len(got) == 1000
        assert got[0] == "m@2026-01-01T08:21:00Z"
        assert got[-1] == "m@2026-01-02T01:00:00Z"

    def test_none_fires_an_on_time_tick_only(self, tmp_path: Path, clock: ManualClock) -> None:
        assert self.gap(tmp_path, clock, "none", 1 + 59 / 3600) == ["h@2026-01-01T01:00:00Z"]

    def test_none_skips_a_missed_tick(self, tmp_path: Path, clock: ManualClock) -> None:
        assert self.gap(tmp_path, clock, "none", 1 + 61 / 3600) == []

    def test_the_next_run_of_a_missed_none_tick_is_the_next_tick(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("h", sync, "0 * * * *", input={"org": "o"}, catch_up="none")
        clock.advance(timedelta(hours=1, minutes=5))
        s = d.get_schedule("h")
        assert s is not None
        assert s.next_run_at == datetime(2026, 1, 1, 2, tzinfo=UTC)


class TestChanging:
    def test_the_same_arguments_again_change_nothing(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        first = d.schedule("h", sync, "0 * * * *", input=In(org="o"))
        clock.advance(timedelta(minutes=59, seconds=59))
        again = d.schedule("h", sync, "0 * * * *", input={"org": "o"})
        assert again.created_at == first.created_at
        clock.advance(timedelta(seconds=1))
        d.process_until_idle()
        assert keys(d) == ["h@2026-01-01T01:00:00Z"]  # the tick still counts from creation

    def test_other_arguments_replace_it_and_count_from_then(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("h", sync, "0 * * * *", input={"org": "o"})
        clock.advance(timedelta(hours=2))  # two ticks due, none fired yet
        d.schedule("h", sync, "30 * * * *", input={"org": "new"})
        d.process_until_idle()
        assert keys(d) == []
        clock.advance(timedelta(minutes=30))
        d.process_until_idle()
        (run,) = d.get_runs()
        assert run.idempotency_key == "h@2026-01-01T02:30:00Z"
        assert run.input == {"org": "new"}

    def test_pause_skips_ticks_and_resume_counts_from_then(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("h", sync, "0 * * * *", input={"org": "o"}, catch_up="all")
        d.pause_schedule("h")
        s = d.get_schedule("h")
        assert s is not None
        assert s.paused
        assert s.next_run_at is None
        clock.advance(timedelta(hours=3))
        d.process_until_idle()
        assert keys(d) == []
        d.resume_schedule("h")
        d.process_until_idle()
        assert keys(d) == []  # the paused ticks never fire, even with catch_up="all"
        clock.advance(timedelta(hours=1))
        d.process_until_idle()
        assert keys(d) == ["h@2026-01-01T04:00:00Z"]

    def test_unschedule_stops_firing_and_keeps_the_runs(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("h", sync, "0 * * * *", input={"org": "o"})
        clock.advance(timedelta(hours=1))
        d.process_until_idle()
        d.unschedule("h")
        assert d.get_schedule("h") is None
        assert d.get_schedules() == []
        clock.advance(timedelta(hours=1))
        d.process_until_idle()
        assert keys(d) == ["h@2026-01-01T01:00:00Z"]

    def test_unknown_names_raise_not_found(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        for action in (d.pause_schedule, d.resume_schedule, d.unschedule):
            with pytest.raises(NotFoundError, match="nope"):
                action("nope")
        assert d.get_schedule("nope") is None

    def test_schedules_survive_a_new_instance(self, tmp_path: Path, clock: ManualClock) -> None:
        make(tmp_path, clock, sync).schedule(
            "h", sync, "0 * * * *", input={"org": "o"}, timezone="Asia/Tokyo"
        )
        (s,) = make(tmp_path, clock).get_schedules()
        assert (s.name, s.job_name, s.cron, s.timezone, s.input) == (
            "h",
            "sync",
            "0 * * * *",
            "Asia/Tokyo",
            {"org": "o"},
        )


class TestTimeZones:
    def run_days(self, tmp_path: Path, start: datetime, days: int) -> list[str]:
        clock = ManualClock(start)
        d = make(tmp_path, clock, sync)
        d.schedule("nightly", sync, "30 2 * * *", input={"org": "o"}, timezone="Europe/Berlin")
        for _ in range(days * 24):
            clock.advance(timedelta(hours=1))
            d.process_until_idle()
        return keys(d)

    def test_spring_forward_fires_once_that_day(self, tmp_path: Path) -> None:
        got = self.run_days(tmp_path, datetime(2026, 3, 27, 12, tzinfo=UTC), 4)
        # 02:30 does not exist on 29 March in Berlin: cron fires at 03:00 CEST instead
        assert got == [
            "nightly@2026-03-28T01:30:00Z",
            "nightly@2026-03-29T01:00:00Z",
            "nightly@2026-03-30T00:30:00Z",
            "nightly@2026-03-31T00:30:00Z",
        ]

    def test_fall_back_fires_once_that_day(self, tmp_path: Path) -> None:
        got = self.run_days(tmp_path, datetime(2026, 10, 23, 12, tzinfo=UTC), 4)
        # 02:30 happens twice on 25 October in Berlin: it fires once
        assert got == [
            "nightly@2026-10-24T00:30:00Z",
            "nightly@2026-10-25T00:30:00Z",
            "nightly@2026-10-26T01:30:00Z",
            "nightly@2026-10-27T01:30:00Z",
        ]


class TestBadInput:
    @pytest.mark.parametrize(
        ("cron", "says"),
        [
            ("* * *", "3 fields"),
            ("61 * * * *", "Bad minute"),
            ("* * * * * * *", "7 fields"),
            ("", "0 fields"),
            ("0 0 30 2 *", "Bad day-of-month"),
        ],
    )
    def test_bad_cron_expressions(self, tmp_path: Path, clock: ManualClock, cron: str, says: str) -> None:
        d = make(tmp_path, clock, sync)
        with pytest.raises(ValidationError, match=says):
            d.schedule("s", sync, cron, input={"org": "o"})
        assert d.get_schedules() == []

    def test_unknown_timezone(self, tmp_path: Path, clock: ManualClock) -> None:
        with pytest.raises(ValidationError, match="Unknown timezone 'Mars/Olympus'"):
            make(tmp_path, clock, sync).schedule(
                "s", sync, "0 * * * *", input={"org": "o"}, timezone="Mars/Olympus"
            )

    def test_a_timezone_that_is_a_path(self, tmp_path: Path, clock: ManualClock) -> None:
        with pytest.raises(ValidationError, match="Unknown timezone"):
            make(tmp_path, clock, sync).schedule(
                "s", sync, "0 * * * *", input={"org": "o"}, timezone="../../etc/passwd"
            )

    def test_a_name_of_a_thousand_characters(self, tmp_path: Path, clock: ManualClock) -> None:
        with pytest.raises(ValidationError, match="1000 characters long; at most 200"):
            make(tmp_path, clock, sync).schedule("é" * 1000, sync, "0 * * * *", input={"org": "o"})

    @pytest.mark.parametrize("name", ["", "  ", "a\nb", "\ud800"])
    def test_names_that_cannot_be_shown_or_stored(
        self, tmp_path: Path, clock: ManualClock, name: str
    ) -> None:
        with pytest.raises(ValidationError, match="schedule name"):
            make(tmp_path, clock, sync).schedule(name, sync, "0 * * * *", input={"org": "o"})

    def test_an_input_that_does_not_validate(self, tmp_path: Path, clock: ManualClock) -> None:
        with pytest.raises(ValidationError, match="Invalid input of schedule 's'"):
            make(tmp_path, clock, sync).schedule("s", sync, "0 * * * *", input={"nope": 1})

    def test_a_bad_catch_up_and_coalesce(self, tmp_path: Path, clock: ManualClock) -> None:
        d = make(tmp_path, clock, sync)
        with pytest.raises(ValidationError, match="catch_up 'sometimes'"):
            d.schedule("s", sync, "0 * * * *", input={"org": "o"}, catch_up="sometimes")
        with pytest.raises(ValidationError, match="coalesce requires concurrency_key"):
            d.schedule("s", sync, "0 * * * *", input={"org": "o"}, coalesce="skip")

    def test_a_damaged_record_is_left_out_and_never_stops_a_worker(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        d = make(tmp_path, clock, sync)
        d.schedule("good", sync, "0 * * * *", input={"org": "o"})
        d.schedule("bad", sync, "0 * * * *", input={"org": "o"})
        bad = d._rt.store.schedules.layout.schedule_file("bad", ".json")
        Path(bad).write_bytes(b'{"v": 1, "name": "bad", "cr')
        clock.advance(timedelta(hours=1))
        d.process_until_idle()
        assert keys(d) == ["good@2026-01-01T01:00:00Z"]
        assert [s.name for s in d.get_schedules()] == ["good"]

    def test_a_conflict_free_job_name_is_required(self, tmp_path: Path, clock: ManualClock) -> None:
        other = define_job(name="sync", input=In, output=str, run=_sync)
        d = make(tmp_path, clock, sync)
        with pytest.raises(ConflictError):
            d.schedule("s", other, "0 * * * *", input={"org": "o"})
