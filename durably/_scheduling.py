"""Schedules (SPEC §10): cron ticks in a time zone, each fired as exactly one run.

A tick's run has the idempotency key ``"<name>@<tick UTC>"``, so however many workers,
processes or hosts fire the same tick, the key's publish-once record gives them all the
same run. Ticks are computed with ``cronsim``, which follows Debian cron across
daylight-saving changes: a daily time that does not exist fires once, right after the
change, and a time that happens twice fires once.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from . import _records as records
from ._errors import ConflictError, NotFoundError, ValidationError, describe
from ._events import ScheduleFireEvent, WorkerErrorEvent
from ._job import BatchItem, Coalesce
from ._models import Schedule
from ._registry import RegisteredJob
from ._runtime import Runtime
from ._schedules import FiredRecord, ScheduleRecord
from ._trigger import check_text, trigger, validate_item

log = logging.getLogger("durably")

CATCH_UP = ("latest", "all", "none")
"""What a worker fires of the ticks that fell while none ran (SPEC §10)."""
ON_TIME = timedelta(seconds=60)
"""A due tick is on time until this long after it; later it is missed."""
MAX_CATCH_UP = 1000
"""``catch_up="all"`` fires at most this many of the latest due ticks."""
MAX_NAME = 200
"""Longest schedule name, in characters (it is shown in tables and run keys)."""
TICK_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def tick_key(name: str, tick: datetime) -> str:
    """The idempotency key of a tick's run: ``"<name>@<tick in UTC>"``."""
    return f"{name}@{tick.astimezone(UTC).strftime(TICK_FORMAT)}"


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValidationError(f"timezone must be a time zone name such as 'Europe/Berlin', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"Unknown timezone {name!r} (use an IANA name such as 'Europe/Berlin')"
        ) from None


def _check_cron(cron: object, zone: ZoneInfo) -> str:
    if not isinstance(cron, str):
        raise ValidationError(f"cron must be a string, got {type(cron).__name__}")
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise ValidationError(
            f"Invalid cron expression {cron!r}: {len(fields)} fields; give 5 (minute hour day month "
            "weekday) or 6 with seconds first"
        )
    try:
        next(CronSim(cron, datetime.now(zone)))
    except CronSimError as exc:
        raise ValidationError(f"Invalid cron expression {cron!r}: {exc}") from None
    except StopIteration:
        raise ValidationError(f"Invalid cron expression {cron!r}: it never matches") from None
    return cron


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"schedule name must be a non-empty string, got {name!r}")
    check_text(name, "schedule name")
    if len(name) > MAX_NAME:
        raise ValidationError(f"schedule name is {len(name)} characters long; at most {MAX_NAME} are allowed")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValidationError(f"schedule name {name!r} contains control characters")
    return name


# -- ticks ----------------------------------------------------------------------------


def _floor(rec: ScheduleRecord, fired: FiredRecord | None) -> datetime:
    """Ticks after this one are due to fire: the later of ``since`` and the last tick."""
    since = records.parse_time(rec.since) or datetime.min.replace(tzinfo=UTC)
    last = records.parse_time(fired.tick) if fired is not None else None
    return max(since, last) if last is not None else since


def due_ticks(rec: ScheduleRecord, fired: FiredRecord | None, now: datetime) -> list[datetime]:
    """The ticks a worker fires at ``now``, oldest first (catch-up policy applied)."""
    if rec.paused:
        return []
    floor = _floor(rec, fired)
    zone = ZoneInfo(rec.timezone)
    start = (now.replace(microsecond=0) + timedelta(seconds=1)).astimezone(zone)
    found: list[datetime] = []
    limit = MAX_CATCH_UP if rec.catch_up == "all" else 1
    for local in CronSim(rec.cron, start, reverse=True):
        tick = local.astimezone(UTC)
        if tick <= floor or len(found) >= limit:
            break
        found.append(tick)
    if rec.catch_up == "none" and found and now - found[0] > ON_TIME:
        return []
    return found[::-1]


def next_tick(rec: ScheduleRecord, fired: FiredRecord | None, now: datetime) -> datetime | None:
    """The tick a worker fires next (in the past if one is due and not fired yet)."""
    if rec.paused:
        return None
    due = due_ticks(rec, fired, now)
    if due:
        return due[0]
    after = max(_floor(rec, fired), now).astimezone(ZoneInfo(rec.timezone))
    try:
        return next(CronSim(rec.cron, after)).astimezone(UTC)
    except StopIteration:
        return None


def to_schedule(rec: ScheduleRecord, fired: FiredRecord | None, now: datetime) -> Schedule:
    """What users read of a schedule's records."""
    run_id = fired.run_id if fired is not None else None
    return Schedule(
        name=rec.name,
        job_name=rec.job_name,
        cron=rec.cron,
        timezone=rec.timezone,
        input=rec.input,
        labels=dict(rec.labels),
        paused=rec.paused,
        next_run_at=next_tick(rec, fired, now),
        last_run_id=run_id,
        last_run_at=records.parse_time(fired.tick) if fired is not None and run_id else None,
        created_at=records.parse_time(rec.created_at) or now,
        concurrency_key=rec.concurrency_key,
        coalesce=rec.coalesce,
        catch_up=rec.catch_up,
    )


# -- the operations -------------------------------------------------------------------


def schedule(
    rt: Runtime,
    name: str,
    job_name: str,
    cron: str,
    *,
    input: Any,
    timezone: str,
    labels: dict[str, str] | None,
    concurrency_key: str | None,
    coalesce: Coalesce | None,
    catch_up: str,
) -> Schedule:
    """Create or replace a schedule (the same definition again changes nothing).

    Raises:
        ValidationError: a bad name, cron expression, time zone, catch-up policy, input
            or trigger option.
    """
    job = rt.registry.get(job_name)
    if job is None:
        raise NotFoundError(f"Unknown job: {job_name}")
    name = _check_name(name)
    zone = _zone(timezone)
    cron = _check_cron(cron, zone)
    if catch_up not in CATCH_UP:
        raise ValidationError(
            f"Invalid catch_up {catch_up!r}. Valid values: {', '.join(map(repr, CATCH_UP))}"
        )
    item = BatchItem(input, None, concurrency_key, coalesce, labels)
    checked = validate_item(rt, job, item, f" of schedule {name!r}")
    now = records.iso(rt.clock())
    new = ScheduleRecord(
        name=name,
        job_name=job.name,
        cron=cron,
        timezone=timezone,
        input=checked.input,
        labels=checked.labels,
        concurrency_key=concurrency_key,
        coalesce=coalesce,
        catch_up=catch_up,
        paused=False,
        since=now,
        created_at=now,
    )
    rt.store.ensure_ready()
    book = rt.store.schedules
    with book.locked(name):
        found = book.get(name)
        if found is not None and found.definition() == new.definition():
            return to_schedule(found, book.fired(name), rt.clock())
        book.put(new)
    rt.wake.set()
    return to_schedule(new, book.fired(name), rt.clock())


def get_schedules(rt: Runtime) -> list[Schedule]:
    """Every schedule of the root, by name."""
    now, book = rt.clock(), rt.store.schedules
    return [to_schedule(rec, book.fired(rec.name), now) for rec in book.all()]


def get_schedule(rt: Runtime, name: str) -> Schedule | None:
    """One schedule by name, or None."""
    found = rt.store.schedules.get(name) if isinstance(name, str) else None
    return None if found is None else to_schedule(found, rt.store.schedules.fired(name), rt.clock())


def require(rt: Runtime, name: str) -> ScheduleRecord:
    """A schedule's definition.

    Raises:
        NotFoundError: no schedule of this name.
    """
    found = rt.store.schedules.get(name) if isinstance(name, str) else None
    if found is None:
        raise NotFoundError(f"Schedule not found: {name!r}")
    return found


def set_paused(rt: Runtime, name: str, paused: bool) -> None:
    """Pause or resume a schedule; resuming counts ticks from now (no catch-up of the
    ticks that fell while paused).

    Raises:
        NotFoundError: no schedule of this name.
    """
    require(rt, name)  # a missing name is NotFoundError, also on a read-only root
    rt.store.ensure_ready()
    book = rt.store.schedules
    with book.locked(name):
        rec = require(rt, name)
        if rec.paused == paused:
            return
        since = rec.since if paused else records.iso(rt.clock())
        book.put(ScheduleRecord(**{**_fields(rec), "paused": paused, "since": since}))
    rt.wake.set()


def unschedule(rt: Runtime, name: str) -> None:
    """Delete a schedule (its runs stay).

    Raises:
        NotFoundError: no schedule of this name.
    """
    require(rt, name)
    rt.store.ensure_ready()
    book = rt.store.schedules
    with book.locked(name):
        book.remove(name)


def _fields(rec: ScheduleRecord) -> dict[str, Any]:
    return {f: getattr(rec, f) for f in rec.__dataclass_fields__}


def fire_due(rt: Runtime) -> int:
    """Fire every due tick of the schedules whose job this instance has registered;
    return how many runs were created. Cheap while nothing is due: one ``stat`` and a
    comparison per schedule (each schedule's next tick is remembered; its fired record
    is read only when that tick comes)."""
    if not rt.registry:
        return 0
    now = rt.clock()
    stamp = now.timestamp()
    book = rt.store.schedules
    created = 0
    for rec in book.all():
        cached = rt.schedule_due.get(rec.name)
        if cached is not None and cached[0] is rec and stamp < cached[1]:
            continue
        job = rt.registry.get(rec.job_name)
        if job is None:
            rt.schedule_due[rec.name] = (rec, float("inf"))  # until its record changes
            continue
        fired = book.fired(rec.name)
        due = due_ticks(rec, fired, now)
        if due:
            created += _fire(rt, job, rec, due)
            fired = book.fired(rec.name)
        upcoming = next_tick(rec, fired, now)
        rt.schedule_due[rec.name] = (rec, upcoming.timestamp() if upcoming else float("inf"))
    return created


def _fire(rt: Runtime, job: RegisteredJob, rec: ScheduleRecord, ticks: list[datetime]) -> int:
    created = 0
    last: FiredRecord | None = None
    for tick in ticks:
        coalesce = cast("Coalesce | None", rec.coalesce)  # checked when the schedule was stored
        item = BatchItem(rec.input, tick_key(rec.name, tick), rec.concurrency_key, coalesce, rec.labels)
        try:
            result = trigger(rt, job, [item], batch=False)[0]
        except (ConflictError, ValidationError) as exc:
            # A pending run holds the key (no coalesce), or the input no longer fits the
            # job: this tick cannot fire; say so, and go on with the next one.
            rt.emitter.emit(
                WorkerErrorEvent(
                    run_id=None,
                    job_name=rec.job_name,
                    labels=dict(rec.labels),
                    error=f"schedule {rec.name!r} skipped tick {tick_key(rec.name, tick)}: {describe(exc)}",
                    context="schedule",
                )
            )
            last = FiredRecord(records.iso(tick), None)
            continue
        if result.disposition != "idempotent":
            created += 1
            rt.emitter.emit(
                ScheduleFireEvent(
                    run_id=result.id,
                    job_name=rec.job_name,
                    labels=dict(rec.labels),
                    schedule_name=rec.name,
                    scheduled_at=tick,
                )
            )
        last = FiredRecord(records.iso(tick), result.id)
    if last is not None:
        rt.store.schedules.put_fired(rec.name, last)
    return created
