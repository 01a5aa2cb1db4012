"""Sync the users of an organisation, one checkpointed step per user, and survive a crash.

Run it twice from the same directory:

    python examples/sync_users.py   # syncs 3 users, then the flaky API crashes the process
    python examples/sync_users.py   # resumes the same run: 4 steps replayed, the rest run

The first invocation dies half-way (the fake API below kills the process once, as a
power cut or an OOM kill would). The second invocation triggers the job again with the
same idempotency key, gets the same run back, and finishes it from its checkpoints:
completed steps return their stored values without calling the API again. A third
invocation finds the run completed and only prints its output.

Runs are stored under `.durably` in the working directory (or `$DURABLY_ROOT`).
Delete that directory to start over.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from pydantic import BaseModel

from durably import Durably, RunProgressEvent, Step, define_job

# One run per organisation and day in real life, e.g. f"sync-{org_id}-{date.today()}".
# Fixed here so that the second invocation finds the run the first one left behind.
IDEMPOTENCY_KEY = "sync-org_123-2026-11-28"
ROOT = Path(os.environ.get("DURABLY_ROOT") or ".durably")


# --- the job's types -----------------------------------------------------------------


class User(BaseModel):
    id: str
    email: str


class SyncIn(BaseModel):
    org_id: str
    force: bool = False


class SyncOut(BaseModel):
    synced_count: int
    errors: list[str]


# --- a fake directory API and a fake database (deterministic) -----------------------


class FlakyDirectoryApi:
    """Returns six users; the first time user u4 is written, the process crashes."""

    # Remembered in the durably root, so deleting `.durably` resets the demo.
    crash_marker = ROOT / "example-sync-users-crashed-once"

    def fetch_users(self, org_id: str) -> list[User]:
        print(f"  api: GET /orgs/{org_id}/users")
        return [
            User(id=f"u{i}", email=f"user{i}@example.com" if i != 5 else "not-an-email") for i in range(1, 7)
        ]

    def maybe_crash(self, user: User) -> None:
        if user.id == "u4" and not self.crash_marker.exists():
            self.crash_marker.touch()
            print(f"  api: PUT /users/{user.id} ... the process crashes here (simulated)")
            print("\nCrashed mid-run. Run this script again to resume from the checkpoints.")
            sys.stdout.flush()
            os._exit(1)  # no cleanup, no `finally`: like kill -9 or a power cut


class FakeDatabase:
    """An upsert keyed by user id: writing the same user twice is harmless."""

    def __init__(self, api: FlakyDirectoryApi) -> None:
        self.api = api
        self.rows: dict[str, User] = {}
        self.written_by_this_process: set[str] = set()

    def upsert_user(self, user: User) -> str | None:
        """Writes the user; returns an error message for a user that cannot be synced."""
        self.api.maybe_crash(user)
        if "@" not in user.email:
            return f"{user.id}: invalid email {user.email!r}"
        self.rows[user.id] = user
        self.written_by_this_process.add(user.id)
        return None


api = FlakyDirectoryApi()
db = FakeDatabase(api)


# --- the job -------------------------------------------------------------------------


@define_job(name="sync-users", input=SyncIn, output=SyncOut)
def sync_users(step: Step, payload: SyncIn) -> SyncOut:
    users = step.run("fetch-users", lambda: api.fetch_users(payload.org_id), returns=list[User])
    step.log.info(f"{len(users)} users to sync", {"org_id": payload.org_id})

    errors: list[str] = []
    for i, user in enumerate(users, start=1):
        # One step per user: once its checkpoint is written, this user is never synced
        # again, whatever happens to the process. The step returns its outcome, so the
        # `errors` list is rebuilt identically when the step is replayed.
        error = step.run(f"sync-{user.id}", functools.partial(db.upsert_user, user))
        if error is not None:
            errors.append(error)
            step.log.warn(error)
        # (Only to show what happened; a real job would not need to know.)
        how = "synced now" if user.id in db.written_by_this_process else "replayed"
        step.progress(i, len(users), f"{user.id} {'skipped' if error else how}")

    return SyncOut(synced_count=len(users) - len(errors), errors=errors)


# --- the script ----------------------------------------------------------------------


def show_progress(event: RunProgressEvent) -> None:
    progress = event.progress
    if progress is not None:
        print(f"  [{progress.current}/{progress.total}] {progress.message}")


def main() -> None:
    durably = Durably(jobs=[sync_users])  # root: $DURABLY_ROOT or ./.durably
    job = durably.register(sync_users)  # the same handle again: registering is idempotent

    # Print what the run reports while it executes in this process.
    durably.on("run:progress", show_progress)
    durably.on("log:write", lambda event: print(f"  {event.level}: {event.message}"))
    executed: list[str] = []  # steps whose function ran in this process
    durably.on("step:complete", lambda event: executed.append(event.step_name))

    run = job.trigger(SyncIn(org_id="org_123"), idempotency_key=IDEMPOTENCY_KEY)
    if run.disposition == "created":
        print(f"run {run.id} created (root: {ROOT})")
    elif run.is_terminal:
        print(f"run {run.id} already {run.status.value} (same idempotency key): nothing to do")
    else:
        print(
            f"run {run.id} resumed: the crashed process left it {run.status.value} "
            f"with {run.completed_step_count} completed steps"
        )

    durably.process_until_idle()  # a crashed owner's run is claimed at once on this host

    result = job.get_run(run.id)
    assert result is not None
    if result.output is None:
        print(f"run {run.id} ended {result.status.value}: {result.error}")
        sys.exit(1)
    if run.disposition == "idempotent" and executed:
        replayed = run.completed_step_count
        print(f"resumed: {replayed} steps replayed from checkpoints, {len(executed)} run now")
    print(f"output: {result.output.model_dump_json()}")


if __name__ == "__main__":
    main()
