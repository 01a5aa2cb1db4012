"""One test per invariant of docs/architecture.md ("Invariants and where they hold") that
can fail, with real processes and files.

Several invariants also have broader sweeps elsewhere: crash consistency in
test_crash.py, races and fencing between processes in test_races.py, names, formats and
permissions in test_bad_input.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import orjson
import pytest
from apps import crash_jobs, durability_trace
from apps.children import Zygote, poll
from helpers import tree

import durably
from durably import _entries as entries
from durably import _files as files
from durably import _records as records
from durably._durably import runtime_of
from durably._entries import StepEnded
from durably._layout import job_hash
from durably._queue import QueueEntry
from durably._records import now_iso

pytestmark = pytest.mark.slow


class TestAtomicVisibility:
    def test_reader_polling_during_commits_never_sees_a_half_written_record(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """Invariant 1: while another process commits 150 steps, a reader polling get_run,
        get_steps and the raw state files never gets an error, a wrong value, a
        completed-step count going backwards, or a state file that does not parse."""
        root, work = tmp_path / "root", tmp_path / "work"
        work.mkdir()
        d = crash_jobs.make(str(root), preserve_steps=True)
        run_id = d.get_job("steps").trigger(crash_jobs.Tag(steps=150)).id  # type: ignore[union-attr]
        writer = zygote.spawn(
            "apps.crash_jobs:crash_worker",
            group="writer",
            root=str(root),
            workdir=str(work),
            who="w",
            kill=None,
        )
        run_dir = next(Path(root, "runs").glob(f"*/*/{run_id}"))
        last_count, polls, seen_states = 0, 0, set()
        while True:
            polls += 1
            if polls == 2:
                zygote.release("writer")  # the reader is polling before the writer starts
            run = d.get_run(run_id)
            assert run is not None
            assert run.completed_step_count >= last_count
            last_count = run.completed_step_count
            for s in d.get_steps(run_id):
                if s.status == "completed" and run.status != "completed":
                    assert s.output == crash_jobs.value_of(int(s.name[5:])), s
            for p in run_dir.glob("s.*"):
                data = files.read_bytes(str(p))
                assert data is not None, p
                assert isinstance(orjson.loads(data), dict), p
                seen_states.add(p.name)
            if run.status == "completed":
                break
        assert zygote.wait(writer) == 0, zygote.stderr()
        assert d.get_run(run_id).output == crash_jobs.expected_output(150)  # type: ignore[union-attr]
        assert polls > 1
        assert seen_states >= {"s.1", "s.2"}


class TestReadAcrossCompaction:
    def test_steps_of_a_run_read_while_it_is_compacted_are_all_there(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """Invariant 1: a reader listing the steps of a run that just ended, while the
        worker compacts its journals into journal.jsonl, sees every completed step."""
        root, work = tmp_path / "root", tmp_path / "work"
        work.mkdir()
        d = crash_jobs.make(str(root), fsync=False)
        run_id = d.get_job("steps").trigger(crash_jobs.Tag(steps=3)).id  # type: ignore[union-attr]
        out = tmp_path / "steps.json"
        reader = zygote.spawn(
            "apps.crash_jobs:read_steps_across_compaction",
            root=str(root),
            workdir=str(work),
            run_id=run_id,
            out=str(out),
        )
        writer = zygote.spawn(
            "apps.crash_jobs:complete_then_pause_compaction", root=str(root), workdir=str(work)
        )
        assert zygote.wait(writer) == 0, zygote.stderr()
        assert zygote.wait(reader) == 0, zygote.stderr()
        assert (work / "reader-ready").exists()
        assert json.loads(out.read_text()) == ["step-00", "step-01", "step-02"]


class TestDurability:
    @pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "no-fsync-control"])
    def test_nothing_is_acknowledged_before_it_is_on_disk(
        self, tmp_path: Path, zygote: Zygote, fsync: bool
    ) -> None:
        """Invariant 2: in a traced trigger, claim, three steps, completion, cancel and
        retrigger, every write is fsynced and every new name's directory is fsynced before
        the call that made it returns. The control run with fsync=False must be caught by
        the same check."""
        result = tmp_path / "trace.json"
        zygote.check(
            "apps.durability_trace:trace_workload",
            root=str(tmp_path / "root"),
            result=str(result),
            fsync=fsync,
        )
        trace = json.loads(result.read_text())
        assert sum(1 for op, _ in trace if op == "ack") == 9, trace
        found = durability_trace.violations(trace, str(tmp_path / "root"))
        if fsync:
            assert found == []
        else:
            assert any("trigger" in v for v in found)
            assert any("step.run" in v for v in found)


class TestWriteOnce:
    def test_a_step_has_one_completed_record_even_after_kills_and_a_stale_owner(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """Invariant 3: after a run was killed inside steps twice and resumed, its journals
        (read with their cuts) hold exactly one completed record per step name."""
        root, work = tmp_path / "root", tmp_path / "work"
        work.mkdir()
        d = crash_jobs.make(str(root), preserve_steps=True)
        run_id = d.get_job("steps").trigger(crash_jobs.Tag(steps=5)).id  # type: ignore[union-attr]
        for who, kill in (
            ("a", {"k": 1, "phase": "commit", "j": 2}),
            ("b", {"k": 3, "phase": "in", "j": 0}),
            ("c", None),
        ):
            zygote.run("apps.crash_jobs:crash_worker", root=str(root), workdir=str(work), who=who, kill=kill)
        state = runtime_of(d).store.load(run_id)
        assert state is not None
        assert state.status == "completed"
        done = [
            e.name
            for _, e in runtime_of(d).store.journal(state).entries
            if isinstance(e, StepEnded) and e.status == "completed"
        ]
        assert sorted(done) == [f"step-{k:02d}" for k in range(5)]


class TestFencing:
    def test_writes_of_a_fenced_generation_never_become_the_run_state(self, tmp_path: Path) -> None:
        """Invariant 4: once a run's next state is published (here a cancel) the owner of
        the older generation can neither end the run nor add a checkpoint that readers
        see; its journal bytes past the cut are ignored."""
        d = crash_jobs.make(str(tmp_path / "root"), preserve_steps=True)
        run_id = d.get_job("steps").trigger(crash_jobs.Tag(steps=2)).id  # type: ignore[union-attr]
        store = runtime_of(d).store
        claim = store.try_claim(QueueEntry(run_id, job_hash("steps"), "-"), "stale-owner", 30.0, set())
        assert claim is not None
        assert claim.gen == 1
        claim.append(entries.step_completed("before", 0, now_iso(), now_iso(), 1), sync=True)
        d.cancel(run_id)
        claim.append(entries.step_completed("after", 1, now_iso(), now_iso(), 2), sync=True)
        assert claim.fenced()
        assert store.end(claim.state, claim.gen, records.ending("completed", output=3)) is None
        claim.release()
        run = d.get_run(run_id)
        assert run is not None
        assert run.status == "cancelled"
        assert run.output is None
        assert [s.name for s in d.get_steps(run_id) if s.status == "completed"] == ["before"]


class TestExactlyOneRunPerKey:
    def test_racing_processes_bind_one_run_to_a_key(self, tmp_path: Path, zygote: Zygote) -> None:
        """Invariant 5: eight processes released together on one idempotency key leave one
        run (test_races.py repeats this over rounds, hosts and concurrency keys)."""
        outs = [tmp_path / f"out-{i}.json" for i in range(8)]
        pids = [
            zygote.spawn(
                "apps.crash_jobs:race_trigger",
                group="g",
                root=str(tmp_path / "root"),
                out=str(o),
                idem="k",
                conc=None,
                coalesce=None,
                value=str(i),
            )
            for i, o in enumerate(outs)
        ]
        zygote.release("g")
        for pid in pids:
            assert zygote.wait(pid) == 0, zygote.stderr()
        ids = {json.loads(o.read_text()).get("id") for o in outs}
        assert len(ids) == 1
        assert None not in ids
        assert len(crash_jobs.make(str(tmp_path / "root")).get_runs()) == 1


class TestNothingStranded:
    def test_run_of_a_killed_worker_is_resumed_at_once_on_the_same_host(
        self, tmp_path: Path, zygote: Zygote, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Invariant 6: a worker holding a run with lease_duration=3600 forks a long-lived
        child inside a step and is SIGKILLed; another worker on the host claims the run at
        once (no lease wait: the child inherited no lock) and completes it."""
        root, work = tmp_path / "root", tmp_path / "work"
        work.mkdir()
        d = crash_jobs.make(str(root), lease_duration=3600.0)
        run_id = d.get_job("forker").trigger(crash_jobs.OrphanIn()).id  # type: ignore[union-attr]
        assert zygote.run("apps.crash_jobs:die_holding_run", root=str(root), workdir=str(work)) == -9
        grandchild = int((work / "grandchild").read_text())
        try:
            os.kill(grandchild, 0)  # still alive, holding every descriptor it inherited
            run = d.get_run(run_id)
            assert run is not None
            assert run.status == "leased"
            monkeypatch.setattr(crash_jobs, "WORKDIR", str(work))
            monkeypatch.setattr(crash_jobs, "WHO", "resumer")
            assert d.process_one() is True
            run = d.get_run(run_id)
            assert run is not None
            assert run.status == "completed"
            assert run.output == "resumer"
            assert run.lease_generation == 2
        finally:
            os.kill(grandchild, signal.SIGKILL)

    @pytest.mark.parametrize("key", ["idempotency", "concurrency"])
    def test_retried_trigger_requeues_a_run_whose_marker_a_power_loss_took(
        self, tmp_path: Path, key: str
    ) -> None:
        """Invariant 6: a power loss on a file system that orders metadata per directory can
        keep a trigger's run.json and lose its queue marker (see test_rel_powerloss.py,
        per-dir); the retried trigger finds the run through its key and queues it again, so
        a worker runs it."""
        d = crash_jobs.make(str(tmp_path / "root"))
        steps = d.get_job("steps")
        assert steps is not None
        keys = (
            {"idempotency_key": "k"} if key == "idempotency" else {"concurrency_key": "k", "coalesce": "skip"}
        )
        run_id = steps.trigger(crash_jobs.Tag(steps=1), **keys).id  # type: ignore[arg-type]
        for marker in (tmp_path / "root" / "queue").iterdir():
            marker.unlink()
        again = steps.trigger(crash_jobs.Tag(steps=1), **keys)  # type: ignore[arg-type]
        assert again.id == run_id
        assert again.disposition in ("idempotent", "coalesced")
        d.process_until_idle()
        run = d.get_run(run_id)
        assert run is not None
        assert run.status == "completed"


class TestReadersNeverBlockWriters:
    def test_a_reader_stopped_anywhere_never_blocks_a_worker_and_writes_nothing(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """Invariant 7: a reader process looping over every read API is SIGSTOPped at 30
        arbitrary moments while a worker triggers and executes runs: the worker always
        finishes. A read-only pass changes no file in the root."""
        root = tmp_path / "root"
        d = crash_jobs.make(str(root), fsync=False, preserve_steps=True)
        handle = d.get_job("steps")
        assert handle is not None
        handle.trigger(crash_jobs.Tag(steps=2), idempotency_key="k", concurrency_key="c")
        d.process_until_idle()
        stop = tmp_path / "stop"
        reader = zygote.spawn("apps.crash_jobs:read_forever", root=str(root), stop=str(stop))
        try:
            for i in range(30):
                os.kill(reader, signal.SIGSTOP)
                poll(lambda: _state(reader) == "T", what="reader stopped")
                handle.trigger(crash_jobs.Tag(steps=2), idempotency_key=f"k{i}", concurrency_key="c")
                assert d.process_until_idle() == 1
                os.kill(reader, signal.SIGCONT)
        finally:
            os.kill(reader, signal.SIGCONT)
            stop.write_text("1")
        assert zygote.wait(reader) == 0, zygote.stderr()
        before = tree(root)
        reader_only = crash_jobs.make(str(root))
        for run in reader_only.get_runs():
            reader_only.get_run(run.id)
            reader_only.get_steps(run.id)
            reader_only.get_logs(run.id)
            reader_only.wait_for_run(run.id, timeout=5)
        reader_only.changes(None)
        assert tree(root) == before


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


class TestVersionedFormat:
    def test_every_record_names_its_version_and_newer_ones_are_refused_untouched(
        self, tmp_path: Path
    ) -> None:
        """Invariant 8: run.json, state files, keys and format.json carry ``"v"``; a state
        file of a newer version makes the run unreadable with a clear error and is left
        byte-identical by readers and workers."""
        d = crash_jobs.make(str(tmp_path / "root"), fsync=False)
        handle = d.get_job("steps")
        assert handle is not None
        done = handle.trigger(crash_jobs.Tag(steps=1), idempotency_key="k", concurrency_key="c").id
        d.process_until_idle()
        pending = handle.trigger(crash_jobs.Tag(steps=1)).id
        for p in Path(d.root).rglob("*"):
            if p.is_file() and (p.suffix == ".json" or p.name.startswith("s.")):
                assert isinstance(orjson.loads(p.read_bytes()).get("v"), int), p
        run_dir = next(Path(d.root, "runs").glob(f"*/*/{pending}"))
        newer = b'{"v":2,"kind":"claim","gen":1,"host":"h","cut":{}}'
        (run_dir / "s.1").write_bytes(newer)
        with pytest.raises(durably.DurablyError, match="newer"):
            d.get_run(pending)
        assert [r.id for r in d.get_runs()] == [done]
        assert d.process_until_idle() == 0
        assert (run_dir / "s.1").read_bytes() == newer


class TestNamesAreData:
    @pytest.mark.parametrize("where", ["run-dir", "shard"])
    def test_a_symlink_planted_in_the_root_is_never_followed(self, tmp_path: Path, where: str) -> None:
        """Invariant 9: a run directory (or its shard directory) replaced by a symlink to a
        directory outside the root is refused: no worker or reader writes through it."""
        d = crash_jobs.make(str(tmp_path / "root"), fsync=False)
        run_id = d.get_job("steps").trigger(crash_jobs.Tag(steps=1)).id  # type: ignore[union-attr]
        run_dir = next(Path(d.root, "runs").glob(f"*/*/{run_id}"))
        moved = run_dir if where == "run-dir" else run_dir.parent
        outside = tmp_path / "outside"
        moved.rename(outside)
        moved.symlink_to(outside, target_is_directory=True)
        before = tree(outside)
        d.get_runs()
        with contextlib.suppress(durably.DurablyError):
            d.get_run(run_id)
        d.process_until_idle()
        assert tree(outside) == before, "durably wrote through a planted symlink"


class TestPrivateByDefault:
    def test_root_directories_and_files_are_private_under_a_permissive_umask(
        self, tmp_path: Path, zygote: Zygote
    ) -> None:
        """Invariant 10: under umask 002 every directory is 0700 and every file 0600
        (test_bad_input.py checks umasks 000, 077 and 022 the same way)."""
        root = tmp_path / "root"
        zygote.check("apps.crash_jobs:exercise_root", root=str(root), umask=0o002)
        modes = {p: (p.lstat().st_mode & 0o777) for p in [root, *root.rglob("*")]}
        assert {oct(m) for p, m in modes.items() if p.is_dir()} == {"0o700"}
        assert {oct(m) for p, m in modes.items() if not p.is_dir()} == {"0o600"}
