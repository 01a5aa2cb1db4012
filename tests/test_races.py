"""Races between real processes: idempotency keys, concurrency keys, same-key execution,
and lease fencing of a stale owner paused past its lease (and, as its control, of a
paused owner nobody re-claims).

Racers are forked from a pre-imported fork server (tests/apps/zygote.py) and
released together: they all block reading one pipe whose write end is then closed.
"Other host" racers take no lock another racer sees (see
``apps.common.pose_as_other_host``), so exclusion must come from the files.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from apps import crash_jobs
from apps.children import Zygote, poll

from durably._durably import runtime_of

pytestmark = pytest.mark.slow

RACERS = 8
ROUNDS = 10
STATS = {"race_rounds": 0, "racing_processes": 0}
WINDOW = 0.02  # each racer pauses this long between publishing a key file and its run


def _race(zygote: Zygote, tmp_path: Path, group: str, hosts: bool, **kwargs: Any) -> list[dict[str, Any]]:
    outs = [tmp_path / f"{group}-{i}.json" for i in range(RACERS)]
    pids = [
        zygote.spawn(
            "apps.crash_jobs:race_trigger",
            group=group,
            root=str(tmp_path / "root"),
            out=str(out),
            value=f"racer-{i}",
            host=f"host-{i}" if hosts else None,
            window=WINDOW if hosts else WINDOW / 4,
            **kwargs,
        )
        for i, out in enumerate(outs)
    ]
    zygote.release(group)
    STATS["race_rounds"] += 1
    STATS["racing_processes"] += RACERS
    for pid in pids:
        assert zygote.wait(pid) == 0, zygote.stderr()
    return [json.loads(out.read_text()) for out in outs]


HOSTS = pytest.mark.parametrize("hosts", [False, True], ids=["one-host", "eight-hosts"])


class TestIdempotencyRace:
    @HOSTS
    def test_eight_processes_triggering_one_key_create_exactly_one_run(
        self, tmp_path: Path, zygote: Zygote, hosts: bool
    ) -> None:
        """8 processes released together with one idempotency key: one run is created, every
        racer gets that run (the others as ``idempotent``, with the winner's input)."""
        reader = crash_jobs.make(str(tmp_path / "root"))
        for r in range(ROUNDS):
            outcomes = _race(zygote, tmp_path, f"idem-{r}", hosts, idem=f"key-{r}", conc=None, coalesce=None)
            runs = [run for run in reader.get_runs() if run.idempotency_key == f"key-{r}"]
            assert len(runs) == 1, f"round {r}: {len(runs)} runs for one key"
            assert all("error" not in o for o in outcomes), f"round {r}: {outcomes}"
            assert {o["id"] for o in outcomes} == {runs[0].id}, f"round {r}"
            assert sorted(o["disposition"] for o in outcomes) == ["created"] + ["idempotent"] * (
                RACERS - 1
            ), f"round {r}: {outcomes}"
            assert {o["tag"] for o in outcomes} == {runs[0].input["tag"]}, f"round {r}"


class TestConcurrencyKeyRace:
    @pytest.mark.parametrize("hosts", [False, True], ids=["one-host", "eight-hosts"])
    @pytest.mark.parametrize("coalesce", [None, "skip"])
    def test_eight_processes_triggering_one_concurrency_key_create_one_pending_run(
        self, tmp_path: Path, zygote: Zygote, hosts: bool, coalesce: str | None
    ) -> None:
        """8 processes released together with one concurrency key (fresh, or still bound to
        a completed run): exactly one pending run is created; the others get ConflictError,
        or that run as ``coalesced`` with coalesce="skip"."""
        reader = crash_jobs.make(str(tmp_path / "root"), fsync=False)
        steps = reader.get_job("steps")
        assert steps is not None
        for r in range(ROUNDS // 2):
            if r % 2:  # the key is still bound to an earlier run, which has completed
                earlier = steps.trigger(crash_jobs.Tag(steps=0), concurrency_key=f"ck-{r}").id
                reader.process_until_idle()
                assert reader.get_run(earlier).status == "completed"  # type: ignore[union-attr]
            outcomes = _race(
                zygote, tmp_path, f"conc-{r}", hosts, idem=None, conc=f"ck-{r}", coalesce=coalesce
            )
            runs = [run for run in reader.get_runs(status="pending") if run.concurrency_key == f"ck-{r}"]
            assert len(runs) == 1, f"round {r}: {len(runs)} runs for one key: {outcomes}"
            assert runs[0].status == "pending"
            created = [o for o in outcomes if o.get("disposition") == "created"]
            assert len(created) == 1, f"round {r}: {outcomes}"
            assert created[0]["id"] == runs[0].id, f"round {r}: {outcomes}"
            others = [o for o in outcomes if o is not created[0]]
            if coalesce is None:
                assert {o.get("error") for o in others} == {"ConflictError"}, f"round {r}: {others}"
            else:
                assert {(o.get("disposition"), o.get("id")) for o in others} == {("coalesced", runs[0].id)}, (
                    f"round {r}: {others}"
                )


class TestCancelRacesClaim:
    def test_cancels_and_workers_racing_on_one_run_end_it_exactly_once(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """4 processes cancelling a run and 4 trying to execute it, released together (10
        rounds, the run 3 or 300 steps long in turn): the run ends once; if it was
        cancelled exactly one cancel succeeded and the others got ConflictError; if it
        completed no cancel succeeded."""
        d = crash_jobs.make(str(tmp_path / "root"), fsync=False)
        steps = d.get_job("steps")
        assert steps is not None
        ended = set()
        for r in range(ROUNDS):
            n = 3 if r % 2 else 300  # a long run in every other round: the cancels get a chance
            run_id = steps.trigger(crash_jobs.Tag(steps=n)).id
            outs = [tmp_path / f"end-{r}-{i}.json" for i in range(RACERS)]
            pids = [
                zygote.spawn(
                    "apps.crash_jobs:race_end",
                    group=f"end-{r}",
                    root=str(tmp_path / "root"),
                    out=str(o),
                    run_id=run_id,
                    role="cancel" if i % 2 else "work",
                )
                for i, o in enumerate(outs)
            ]
            zygote.release(f"end-{r}")
            STATS["race_rounds"] += 1
            STATS["racing_processes"] += RACERS
            for pid in pids:
                assert zygote.wait(pid) == 0, zygote.stderr()
            outcomes = [json.loads(o.read_text()) for o in outs]
            run = d.get_run(run_id)
            assert run is not None, r
            assert run.is_terminal, (r, run)
            cancels = [o for o in outcomes if o["role"] == "cancel"]
            ok = [o for o in cancels if o.get("ok")]
            assert {o.get("error") for o in cancels if not o.get("ok")} <= {"ConflictError"}, cancels
            assert len(ok) == (1 if run.status == "cancelled" else 0), (r, run.status, outcomes)
            assert sum(1 for o in outcomes if o["role"] == "work" and o.get("ok")) <= 1
            if run.status == "completed":
                assert run.output == crash_jobs.expected_output(n)
            ended.add(str(run.status.value))
        assert "cancelled" in ended


class TestDeleteRacesTrigger:
    def test_a_delete_never_frees_the_key_of_the_run_that_replaced_it(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """delete_run of a keyed run races a trigger of the same key, which creates a new
        run once the old one is gone: the delete never frees the new run's key, so a later
        trigger of the key returns the new run and the key holds exactly one run."""
        root, work = tmp_path / "root", tmp_path / "work"
        work.mkdir()
        d = crash_jobs.make(str(root), fsync=False)
        steps = d.get_job("steps")
        assert steps is not None
        old = steps.trigger(crash_jobs.Tag(steps=0), idempotency_key="key").id
        d.process_until_idle()
        deleter = zygote.spawn("apps.crash_jobs:delete_paused", root=str(root), workdir=str(work), run_id=old)
        trigger = zygote.spawn(
            "apps.crash_jobs:trigger_after_rename", root=str(root), workdir=str(work), key="key"
        )
        assert zygote.wait(deleter) == 0, zygote.stderr()
        assert zygote.wait(trigger) == 0, zygote.stderr()
        assert (work / "triggered").read_text() == "created"
        again = steps.trigger(crash_jobs.Tag(tag="third", steps=0), idempotency_key="key")
        runs = [r for r in d.get_runs() if r.idempotency_key == "key"]
        assert len(runs) == 1, [(r.id, r.input) for r in runs]
        assert again.disposition == "idempotent"


class TestSameKeyNeverOverlaps:
    @pytest.mark.parametrize("hosts", [False, True], ids=["one-host", "two-hosts"])
    def test_two_worker_processes_never_run_two_runs_of_one_key_at_once(
        self, tmp_path: Path, zygote: Zygote, hosts: bool
    ) -> None:
        """Two worker processes (on one host, or posing as two), each executing two of four
        jobs that share 3 concurrency keys (12 runs): in the shared interval log, the runs
        of one key never overlap, and every run completes."""
        root, work = tmp_path / "root", tmp_path / "work"
        work.mkdir()
        d = crash_jobs.make(str(root), fsync=False)
        for n in range(12):
            keyed = d.get_job(f"keyed-{n // 3}")
            assert keyed is not None
            keyed.trigger(crash_jobs.KeyIn(key=f"k{n % 3}", n=n), concurrency_key=f"k{n % 3}")
        pids = [
            zygote.spawn(
                "apps.crash_jobs:keyed_worker",
                group="workers",
                root=str(root),
                workdir=str(work),
                who=who,
                expect=12,
                host=f"host-{who}" if hosts else None,
                job_names=names,
            )
            for who, names in (("w1", ["keyed-0", "keyed-2"]), ("w2", ["keyed-1", "keyed-3"]))
        ]
        zygote.release("workers")
        for pid in pids:
            assert zygote.wait(pid) == 0, zygote.stderr()
        runs = d.get_runs(job_name=[f"keyed-{j}" for j in range(4)])
        assert len(runs) == 12
        assert {r.status for r in runs} == {"completed"}
        lines = (work / "intervals.log").read_text().splitlines()
        open_by_key: dict[str, str] = {}
        for line in lines:
            kind, key, number, who = line.split()
            if kind == "start":
                assert key not in open_by_key, (
                    f"{who} started run {number} of {key} while "
                    f"{open_by_key.get(key)} was running:\n" + "\n".join(lines)
                )
                open_by_key[key] = f"run {number} on {who}"
            else:
                assert open_by_key.pop(key) == f"run {number} on {who}"
        assert len(lines) == 24
        assert not open_by_key


class TestLeaseRenewal:
    def test_a_live_owner_renewing_its_lease_is_never_robbed_by_another_host(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """Worker A holds a run (lease 2 s, renewed every 0.2 s) through a step lasting
        about 1.5 leases while worker B, posing as another host, keeps trying to claim it:
        B never claims, and A completes the run in generation 1."""
        root, work = tmp_path / "root", tmp_path / "work"
        work.mkdir()
        d = crash_jobs.make(str(root), fsync=False)
        run_id = d.get_job("slow").trigger(crash_jobs.Tag()).id  # type: ignore[union-attr]
        a = zygote.spawn("apps.crash_jobs:hold_lease", root=str(root), workdir=str(work), who="A", lease=2.0)
        poll((work / "inside-A").exists, what="A inside its step")
        b = zygote.spawn(
            "apps.crash_jobs:try_to_steal",
            root=str(root),
            workdir=str(work),
            who="B",
            host="other-host",
            lease=2.0,
        )
        journal = next(Path(root, "runs").glob(f"*/*/{run_id}/j.1"))
        beats: set[int] = set()

        def heartbeats() -> bool:
            beats.add(journal.stat().st_mtime_ns)
            return len(beats) >= 15  # a renewal every 0.2 s: about 1.5 lease durations

        try:
            poll(heartbeats, timeout=60, what="15 heartbeats of A")
        finally:
            (work / "stop").write_text("1")
            (work / "go").write_text("1")
        assert zygote.wait(b) == 0, zygote.stderr()
        assert zygote.wait(a) == 0, zygote.stderr()
        assert (work / "claimed-B").read_text() == "0"
        run = d.get_run(run_id)
        assert run is not None
        assert (run.status, run.output, run.lease_generation) == ("completed", "A", 1)


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


class TestLeaseFencing:
    @pytest.mark.parametrize("phase", ["in", "commit", "end"])
    def test_stale_owner_paused_past_its_lease_cannot_change_the_run(
        self, tmp_path: Path, zygote: Zygote, phase: str
    ) -> None:
        """Worker A (lease 0.5 s) is SIGSTOPped inside a step body, between the fence check
        and the checkpoint write, or just before publishing the run's end; worker B on
        another host claims the run once A's lease expired and finishes it. After SIGCONT,
        A changes nothing: the output is B's, no checkpoint A wrote after B's claim
        appears, and A's step raises LeaseLostError (or its completion is refused)."""
        root, work = tmp_path / "root", tmp_path / "work"
        work.mkdir()
        d = crash_jobs.make(str(root), fsync=False)
        handle = d.get_job("fence")
        assert handle is not None
        run_id = handle.trigger(crash_jobs.FenceIn(steps=4, stop_step=1, stop_phase=phase)).id
        a = zygote.spawn(
            "apps.crash_jobs:fence_worker",
            root=str(root),
            workdir=str(work),
            who="A",
            host=None,
            run_id=run_id,
            lease=0.5,
        )
        try:
            poll(lambda: _stopped(a), what="A stops itself")
        except AssertionError:
            raise AssertionError(zygote.stderr()) from None
        b = zygote.spawn(
            "apps.crash_jobs:fence_worker",
            root=str(root),
            workdir=str(work),
            who="B",
            host="other-host",
            run_id=run_id,
            lease=0.5,
        )
        assert zygote.wait(b) == 0, zygote.stderr()
        run = d.get_run(run_id)
        assert run is not None
        assert run.status == "completed", run
        assert run.lease_generation == 2
        os.kill(a, signal.SIGCONT)
        assert zygote.wait(a) == 0, zygote.stderr()

        run = d.get_run(run_id)
        assert run is not None
        assert run.status == "completed"
        assert run.lease_generation == 2
        assert run.output is not None
        assert run.output["by"] == "B"
        a_done = 1 if phase in ("in", "commit") else 4  # A's steps acknowledged before B claimed
        expected = [f"A-{k}" if k < a_done else f"B-{k}" for k in range(4)]
        assert run.output["values"] == expected
        steps = [s for s in d.get_steps(run_id) if s.status == "completed"]
        assert [(s.name, s.output, s.generation) for s in steps] == [
            (f"s{k}", expected[k], 1 if k < a_done else 2) for k in range(4)
        ]
        raised = (work / "raised.log").read_text().splitlines() if (work / "raised.log").exists() else []
        errors = json.loads((work / "errors-A.json").read_text())
        if phase == "in":  # the fenced step's value is not checkpointed; it or the next raises
            assert raised in (["A s1 LeaseLostError"], ["A s2 LeaseLostError"]), raised
        elif phase == "commit":  # its checkpoint write landed past the cut: ignored
            assert raised == ["A s2 LeaseLostError"]
        else:
            assert raised == []
            assert any("Lease lost" in e for e in errors), errors

    def test_a_paused_owner_nobody_claims_over_completes_the_run(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """K6 control: worker A (lease 0.5 s) stops itself inside a step and stays stopped
        well past its lease, and no other worker looks for runs meanwhile. After SIGCONT A
        completes the run in generation 1 with every step its own: an expired owner that
        nobody took over may finish (a worker that looks for runs takes it over: see
        tests/reliability/test_rel_stalled_owners.py)."""
        root, work = tmp_path / "root", tmp_path / "work"
        work.mkdir()
        d = crash_jobs.make(str(root), fsync=False)
        handle = d.get_job("fence")
        assert handle is not None
        run_id = handle.trigger(crash_jobs.FenceIn(steps=3, stop_step=1, stop_phase="in")).id
        a = zygote.spawn(
            "apps.crash_jobs:fence_worker",
            root=str(root),
            workdir=str(work),
            who="A",
            host=None,
            run_id=run_id,
            lease=0.5,
        )
        try:

            def stopped() -> bool:
                with open(f"/proc/{a}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] == "T"

            poll(stopped, what="A stopped itself")
            state = runtime_of(d).store.load(run_id)
            assert state is not None
            poll(lambda: time.time() > runtime_of(d).store.lease_expiry(state) + 0.5, what="lease expired")
            assert d.get_run(run_id).lease_generation == 1  # type: ignore[union-attr]
        finally:
            os.kill(a, signal.SIGCONT)
        assert zygote.wait(a) == 0, zygote.stderr()
        run = d.get_run(run_id)
        assert run is not None
        assert (run.status, run.lease_generation) == ("completed", 1)
        assert run.output == {"values": ["A-0", "A-1", "A-2"], "by": "A"}
        assert json.loads((work / "errors-A.json").read_text()) == []
