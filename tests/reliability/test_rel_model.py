"""A hypothesis state machine of the store against a plain-dict model (plan case K1 of docs/reliability.md).

Rules: trigger (with and without idempotency and concurrency keys, some of them hostile
strings, with and without ``coalesce="skip"`` or ``"queue"``), claim and execute through
``process_one``, a worker dying between two steps (the run stays leased and the next
``process_one`` resumes it), cancel, delete, retrigger, and reopening the root with a new
instance.
After every rule: the runs, their statuses, outputs and keys match the model; a step
acknowledged before a crash never runs again; every
non-ended run has its queue marker and no ended run has one; no temp file is left;
every file is 0600 and every directory 0700; and ``durably doctor`` finds nothing.

``REL_HYPOTHESIS_EXAMPLES`` raises the number of examples (nightly: 1000).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections import Counter
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule
from pydantic import BaseModel

import durably
from durably import Step, define_job
from durably._doctor import Doctor

KEYS = ["a", "../x", "a/b", "é" * 200, "key\nwith newline", "🙂"]
STATS = {"examples": 0, "rules": 0, "states_checked": 0, "queued_behind": 0}


class Tagged(BaseModel):
    tag: int


RAN: Counter[tuple[str, str]] = Counter()  # (run id, step) -> executions
CRASH = {"next": False}


class Crash(BaseException):
    """The worker process going away between two steps (the run stays leased)."""


def _step(run_id: str, name: str, value: int) -> int:
    RAN[(run_id, name)] += 1
    return value


def _body(step: Step, payload: Tagged) -> dict[str, int]:
    a = step.run("first", lambda: _step(step.run_id, "first", payload.tag))
    if CRASH["next"]:
        CRASH["next"] = False
        raise Crash
    b = step.run("second", lambda: _step(step.run_id, "second", a * 2))
    return {"tag": a, "double": b}


JOB = define_job(name="model-job", input=Tagged, run=_body)


class StoreMachine(RuleBasedStateMachine):
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        STATS["examples"] += 1
        self.tmp = tempfile.mkdtemp(prefix="durably-model-")
        self.root = os.path.join(self.tmp, "root")
        self.d = self._open()
        self.model: dict[str, dict[str, Any]] = {}  # id -> status, idem, conc, tag, after, started
        self.idem: dict[str, str] = {}
        self.tail: dict[str, str] = {}  # concurrency key -> its latest run
        self.tag = 0

    def _open(self) -> durably.Durably:
        return durably.Durably(self.root, jobs=[JOB], fsync=False)

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _live(self, run_id: str | None) -> str | None:
        """The first run from ``run_id`` up its queue that has not ended: past runs that
        ended without starting; a run that ended after it started ends the walk."""
        while run_id is not None:
            m = self.model[run_id]
            if m["status"] in ("pending", "leased"):
                return run_id
            if m["started"] or m["status"] == "deleted":
                return None
            run_id = m["after"]
        return None

    def _pending_with(self, conc: str) -> str | None:
        """The key's pending run: its live tail, if that has not started."""
        live = self._live(self.tail.get(conc))
        return live if live is not None and self.model[live]["status"] == "pending" else None

    def _create(
        self, run_id: str, idem: str | None, conc: str | None, tag: int, after: str | None = None
    ) -> None:
        self.model[run_id] = {
            "status": "pending",
            "idem": idem,
            "conc": conc,
            "tag": tag,
            "after": after,
            "started": False,
        }
        if idem is not None:
            self.idem[idem] = run_id
        if conc is not None:
            self.tail[conc] = run_id

    @rule(
        target=runs,
        idem=st.none() | st.sampled_from(KEYS),
        conc=st.none() | st.sampled_from(KEYS),
        coalesce=st.sampled_from([None, "skip", "queue"]),
    )
    def trigger(self, idem: str | None, conc: str | None, coalesce: Literal["skip", "queue"] | None) -> str:
        return self._trigger(idem, conc, coalesce)

    def _trigger(self, idem: str | None, conc: str | None, coalesce: Literal["skip", "queue"] | None) -> str:
        STATS["rules"] += 1
        if conc is None:
            coalesce = None  # coalesce without a key is a ValidationError
        self.tag += 1
        handle = self.d.get_job("model-job")
        assert handle is not None
        holder = self._pending_with(conc) if conc is not None and coalesce != "queue" else None
        try:
            res = handle.trigger(
                Tagged(tag=self.tag), idempotency_key=idem, concurrency_key=conc, coalesce=coalesce
            )
        except durably.ConflictError:
            assert idem not in self.idem
            assert holder is not None
            assert coalesce is None
            return holder
        if idem is not None and idem in self.idem:
            assert (res.disposition, res.id) == ("idempotent", self.idem[idem])
        elif holder is not None:
            assert coalesce == "skip"
            assert (res.disposition, res.id) == ("coalesced", holder)
        else:
            assert res.disposition == "created"
            assert res.id not in self.model
            after = self._live(self.tail.get(conc)) if conc is not None and coalesce == "queue" else None
            self._create(res.id, idem, conc, self.tag, after)
            STATS["queued_behind"] += after is not None
        return res.id

    @rule(
        target=runs,
        idem=st.none() | st.sampled_from(KEYS[:2]),
        coalesce=st.sampled_from(["queue", None, "skip", "queue"]),
    )
    def trigger_on_a_shared_key(self, idem: str | None, coalesce: Literal["skip", "queue"] | None) -> str:
        """A trigger of the one key many triggers share: queues form, and are cancelled,
        crashed and deleted in the middle."""
        return self._trigger(idem, KEYS[0], coalesce)

    def _claimable(self) -> list[str]:
        # Pending runs, and runs leased by a worker that died (on this host: at once).
        # (The oldest is never queued behind a run that has not ended: that one is older.)
        return sorted(i for i, m in self.model.items() if m["status"] in ("pending", "leased"))

    @rule()
    def process_one(self) -> None:
        STATS["rules"] += 1
        claimable = self._claimable()
        assert self.d.process_one() is bool(claimable)
        if claimable:
            self.model[claimable[0]].update(status="completed", started=True)

    @rule()
    def process_one_and_crash(self) -> None:
        """The worker dies after the run's first step: the run stays leased."""
        STATS["rules"] += 1
        claimable = self._claimable()
        CRASH["next"] = True
        try:
            if claimable:
                with pytest.raises(Crash):
                    self.d.process_one()
            else:
                assert self.d.process_one() is False
        finally:
            CRASH["next"] = False
        if claimable:
            self.model[claimable[0]].update(status="leased", started=True)

    @rule(run_id=runs)
    def cancel(self, run_id: str) -> None:
        STATS["rules"] += 1
        m = self.model.get(run_id)
        try:
            self.d.cancel(run_id)
        except durably.NotFoundError:
            assert m is None or m["status"] == "deleted"
            return
        except durably.ConflictError:
            assert m is not None
            assert m["status"] in ("completed", "cancelled")
            return
        assert m is not None
        assert m["status"] in ("pending", "leased")
        m["status"] = "cancelled"

    @rule(run_id=consumes(runs))
    def delete(self, run_id: str) -> None:
        STATS["rules"] += 1
        m = self.model.get(run_id)
        try:
            self.d.delete_run(run_id)
        except durably.NotFoundError:
            assert m is None or m["status"] == "deleted"
            return
        except durably.ConflictError:
            assert m is not None
            # active, or a cancelled link of a queue whose runs ahead have not ended
            assert m["status"] in ("pending", "leased") or (
                not m["started"] and self._live(m["after"]) is not None
            )
            return
        assert m is not None
        assert m["status"] in ("completed", "cancelled")
        assert m["started"] or self._live(m["after"]) is None
        m["status"] = "deleted"
        if m["idem"] is not None and self.idem.get(m["idem"]) == run_id:
            del self.idem[m["idem"]]

    @rule(target=runs, run_id=runs)
    def retrigger(self, run_id: str) -> str:
        STATS["rules"] += 1
        m = self.model.get(run_id)
        holder = self._pending_with(m["conc"]) if m is not None and m["conc"] is not None else None
        try:
            new = self.d.retrigger(run_id)
        except durably.NotFoundError:
            assert m is None or m["status"] == "deleted"
            return run_id
        except durably.ConflictError:
            assert m is not None
            assert m["status"] in ("pending", "leased") or holder is not None
            return run_id
        assert m is not None
        assert m["status"] in ("completed", "cancelled")
        assert holder is None
        assert new.status == "pending"
        assert new.input == {"tag": m["tag"]}
        self._create(new.id, None, m["conc"], m["tag"])
        return new.id

    @rule()
    def reopen(self) -> None:
        """A new instance on the same root (a restarted process) sees the same store."""
        STATS["rules"] += 1
        self.d = self._open()

    @invariant()
    def matches_model(self) -> None:
        STATS["states_checked"] += 1
        live = {i: m for i, m in self.model.items() if m["status"] != "deleted"}
        runs = self.d.get_runs()
        assert [r.id for r in runs] == sorted(live, reverse=True)
        for run in runs:
            m = live[run.id]
            assert run.status == m["status"], (run.id, run.status, m)
            assert run.input == {"tag": m["tag"]}
            assert (run.idempotency_key, run.concurrency_key) == (m["idem"], m["conc"])
            if m["status"] == "completed":
                assert run.output == {"tag": m["tag"], "double": 2 * m["tag"]}
                # A step acknowledged before a crash is replayed, never executed again.
                assert RAN[(run.id, "first")] == 1, (run.id, RAN)
                assert RAN[(run.id, "second")] == 1, (run.id, RAN)
        for run_id, m in self.model.items():
            if m["status"] == "deleted":
                assert self.d.get_run(run_id) is None

    @invariant()
    def files_are_tidy(self) -> None:
        if not os.path.isdir(self.root):
            return
        queued = {n.split(".")[0] for n in os.listdir(os.path.join(self.root, "queue"))}
        assert queued == {i for i, m in self.model.items() if m["status"] in ("pending", "leased")}
        assert os.listdir(os.path.join(self.root, "tmp")) == []
        for top, dirs, names in os.walk(self.root):
            for name in dirs:
                assert stat.S_IMODE(os.lstat(os.path.join(top, name)).st_mode) == 0o700
            for name in names:
                st_ = os.lstat(os.path.join(top, name))
                assert stat.S_ISREG(st_.st_mode)
                assert stat.S_IMODE(st_.st_mode) == 0o600
                assert len(name.encode()) <= 100
                assert name.isascii()
        assert Doctor(self.root).check() == []


StoreMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("REL_HYPOTHESIS_EXAMPLES", "100")),
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_store_state_machine = StoreMachine.TestCase
