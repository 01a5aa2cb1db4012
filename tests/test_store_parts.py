"""The store's parts one at a time, below the engine: the change feed, key bindings, the
journal reader, claims and the run lifecycle (each on a real root in a temp directory)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest

from durably import ConflictError, StoreError
from durably import _entries as entries
from durably import _locks as locks
from durably import _records as records
from durably._framing import frame
from durably._ids import new_id
from durably._keys import KeyTaken
from durably._layout import job_hash, key_hash, state_name
from durably._queue import QueueEntry
from durably._records import RunRecord
from durably._store import FileStore


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    s = FileStore(str(tmp_path / "root"), fsync=False)
    s.ensure_ready()
    return s


def record(job: str = "job", *, idem: str | None = None, conc: str | None = None) -> RunRecord:
    return RunRecord(
        id=new_id(),
        job_name=job,
        input={"n": 1},
        labels={},
        idempotency_key=idem,
        concurrency_key=conc,
        created_at=records.now_iso(),
    )


def entry_of(rec: RunRecord) -> QueueEntry:
    return QueueEntry(rec.id, job_hash(rec.job_name), key_hash(rec.concurrency_key))


class TestChangeFeed:
    def test_a_cursor_sees_only_what_was_appended_after_it(self, store: FileStore) -> None:
        """changes(None) gives the end of the feed; later calls give new ids, once each."""
        store.notify("before")
        ids, cursor = store.changes(None)
        assert ids == []
        store.notify("a")
        store.notify("b")
        store.notify("a")
        ids, cursor = store.changes(cursor)
        assert ids == ["a", "b"]
        assert store.changes(cursor)[0] == []

    def test_step_traffic_is_throttled_per_run(self, store: FileStore) -> None:
        """With a throttle, a run's second notice within it is not written."""
        _, cursor = store.changes(None)
        store.feed.notify("r", throttle=60.0)
        store.feed.notify("r", throttle=60.0)
        data = b"".join(Path(store.layout.feed, n).read_bytes() for n in os.listdir(store.layout.feed))
        assert data.count(b"r\n") == 1
        assert store.changes(cursor)[0] == ["r"]

    def test_a_cursor_older_than_the_feed_asks_for_a_reload(self, store: FileStore) -> None:
        """A cursor naming a feed file that is gone (pruned or rotated) gives None."""
        store.notify("x")
        assert store.changes("2000010100.log:5")[0] is None
        assert store.changes("garbage")[0] is None


class TestKeyBindings:
    def test_an_idempotency_key_binds_one_run(self, store: FileStore) -> None:
        """The second trigger of a key finds the first run, created once."""
        first = record(idem="k")
        _, how = store.create_run(first, coalesce=False)
        assert how == "created"
        again, how = store.create_run(record(idem="k"), coalesce=False)
        assert (again.run_id, how) == (first.id, "idempotent")
        assert store.keys.bound_run(record(idem="k")) is not None

    def test_a_pending_run_holds_its_concurrency_key(self, store: FileStore) -> None:
        """Without coalesce a second pending run of the key conflicts; with it, it coalesces."""
        first = record(conc="c")
        store.create_run(first, coalesce=False)
        with pytest.raises(ConflictError, match="concurrency key"):
            store.create_run(record(conc="c"), coalesce=False)
        state, how = store.create_run(record(conc="c"), coalesce=True)
        assert (state.run_id, how) == (first.id, "coalesced")

    def test_a_slot_published_between_check_and_bind_is_never_overwritten(self, store: FileStore) -> None:
        """bind() of a slot another trigger published first raises KeyTaken and leaves
        the other binding in place (one link() decides)."""
        rec = record(conc="c")
        _, head = store.keys.pending_run(rec, coalesce=False)
        winner = record(conc="c")
        store.keys.bind(winner, head)
        with pytest.raises(KeyTaken):
            store.keys.bind(rec, head)
        slot = Path(store.layout.pending_chain("job", "c"), str(head + 1))
        assert records.key_run(orjson.loads(slot.read_bytes())) == winner.id

    def test_a_deleted_key_record_is_recovered_from_its_copy(self, store: FileStore) -> None:
        """A key record deleted by hand is recovered from the copy beside the key's lock:
        the next trigger of the key is idempotent, and the record is back."""
        first = record(idem="k")
        store.create_run(first, coalesce=False)
        path = Path(store.layout.idempotency_key("job", "k"))
        path.unlink()
        state, how = store.create_run(record(idem="k"), coalesce=False)
        assert (state.run_id, how) == (first.id, "idempotent")
        assert records.key_run(orjson.loads(path.read_bytes())) == first.id

    def test_a_damaged_key_record_is_never_replaced_by_a_second_run(self, store: FileStore) -> None:
        """A damaged key record with no usable copy makes the trigger fail, naming the
        file; with its copy, it is repaired and the trigger is idempotent."""
        first = record(idem="k")
        store.create_run(first, coalesce=False)
        path = Path(store.layout.idempotency_key("job", "k"))
        path.write_bytes(b"\x00garbage")
        state, how = store.create_run(record(idem="k"), coalesce=False)
        assert (state.run_id, how) == (first.id, "idempotent")
        path.write_bytes(b"\x00garbage")
        Path(store.layout.idempotency_lock("job", "k")).write_bytes(b"")
        with pytest.raises(StoreError, match=path.name):
            store.create_run(record(idem="k"), coalesce=False)
        assert [r for r in store.run_ids()] == [first.id]

    def test_a_key_naming_a_run_that_never_appeared_is_replaced(self, store: FileStore) -> None:
        """A key file whose run was never written (its trigger died) is stale: after the
        grace it is removed and the next trigger creates the run."""
        dead = record(idem="k")
        lock = store.layout.idempotency_lock("job", "k")
        locks.lock(lock, root=store.root)  # as a trigger does
        try:
            store.keys.bind(dead, -1)
        finally:
            locks.unlock(lock)
        path = store.layout.idempotency_key("job", "k")
        old = time.time() - 3600
        os.utime(path, (old, old))
        state, how = store.create_run(record(idem="k"), coalesce=False)
        assert how == "created"
        assert state.run_id != dead.id


class TestJournalReader:
    def _claimed(self, store: FileStore) -> tuple[RunRecord, str]:
        rec = record()
        store.create_run(rec, coalesce=False)
        lease = store.try_claim(entry_of(rec), "me", 30.0, set())
        assert lease is not None
        lease.append(entries.step_completed("a", 0, "t0", "t1", 1), sync=False)
        lease.release()
        return rec, os.path.join(store.layout.run_dir(rec.id), "j.1")

    def test_a_torn_tail_reads_as_not_written(self, store: FileStore) -> None:
        """Bytes after the last valid line (a crash mid-append) are not entries."""
        rec, path = self._claimed(store)
        with open(path, "ab") as f:
            f.write(frame(entries.step_completed("b", 1, "t0", "t1", 2))[:-7])
        state = store.load(rec.id)
        assert state is not None
        names = [e.name for _, e in store.journal(state).entries if isinstance(e, entries.StepEnded)]
        assert names == ["a"]
        first_line = frame(entries.step_completed("a", 0, "t0", "t1", 1))
        assert store.journals.valid_length(rec.id, 1) == len(first_line)

    def test_bytes_past_a_cut_are_ignored(self, store: FileStore) -> None:
        """Once a later state fixes a journal's cut, what a stale owner appends after it
        never reads."""
        rec, path = self._claimed(store)
        state = store.load(rec.id)
        assert state is not None
        store.end(state, 1, records.ending("cancelled"))
        with open(path, "ab") as f:
            f.write(frame(entries.step_completed("late", 1, "t0", "t1", 2)))
        ended = store.load(rec.id)
        assert ended is not None
        # Only step entries were written: each has a name (a progress or log entry would not).
        assert [e.name for _, e in store.journal(ended).entries] == ["a"]  # type: ignore[union-attr]

    def test_an_ended_run_reads_the_same_after_compaction(self, store: FileStore) -> None:
        """compact() merges the journals into one file that reads as they did."""
        rec, _ = self._claimed(store)
        state = store.load(rec.id)
        assert state is not None
        ended = store.end(state, 1, records.ending("completed", output=None))
        assert ended is not None
        before = store.journal(ended).entries
        store.compact(ended, keep_outputs=True)
        assert not os.path.exists(os.path.join(store.layout.run_dir(rec.id), "j.1"))
        assert store.journal(ended).entries == before


class TestClaims:
    def test_one_claimer_wins_and_the_owner_is_fenced_by_a_cancel(self, store: FileStore) -> None:
        """A claimed run is not claimable while its owner lives; a cancel fences the owner."""
        rec = record()
        store.create_run(rec, coalesce=False)
        lease = store.try_claim(entry_of(rec), "a", 30.0, set())
        assert lease is not None
        assert lease.gen == 1
        assert store.try_claim(entry_of(rec), "b", 30.0, set()) is None
        assert not lease.fenced()
        store.cancel(rec.id)
        assert lease.fenced()
        fence = lease.fence()
        assert isinstance(fence, records.EndState)
        assert fence.kind == "cancelled"
        lease.release()
        lease.release()  # idempotent

    def test_a_released_claim_is_taken_over_with_the_next_generation(self, store: FileStore) -> None:
        """On one host, a run whose owner released its lock (as a dead process does) is
        claimable at once, by the next generation, with the old journal's cut."""
        rec = record()
        store.create_run(rec, coalesce=False)
        first = store.try_claim(entry_of(rec), "a", 30.0, set())
        assert first is not None
        first.append(entries.step_started("s", 0, records.now_iso()), sync=False)
        first.release()
        second = store.try_claim(entry_of(rec), "b", 30.0, set())
        assert second is not None
        assert second.gen == 2
        assert second.state.cuts["1"] == os.path.getsize(os.path.join(store.layout.run_dir(rec.id), "j.1"))
        assert first.fenced()
        assert os.path.exists(os.path.join(store.layout.run_dir(rec.id), state_name(2)))
        second.release()

    def test_a_claimer_that_read_a_stale_state_leaves_no_journal_in_an_ended_run(
        self, store: FileStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Across hosts no lock orders two claimers: one reads the run pending, the other
        claims it, finishes and compacts it, then the first tries generation 1. It loses,
        and the empty j.1 its attempt created is removed (doctor would read it as a
        damaged journal of the ended run)."""
        rec = record()
        store.create_run(rec, coalesce=False)
        stale = store.load(rec.id)
        assert stale is not None
        winner = store.try_claim(entry_of(rec), "a", 30.0, set())
        assert winner is not None
        winner.append(entries.step_started("s", 0, records.now_iso()), sync=False)
        ended = store.end(winner.state, 1, records.ending("completed", output=None))
        assert ended is not None
        winner.release()
        store.compact(ended, keep_outputs=True)
        run_dir = store.layout.run_dir(rec.id)
        assert not os.path.exists(os.path.join(run_dir, "j.1"))
        monkeypatch.setattr(store.claims.runs, "load", lambda run_id: stale)
        assert store.claims._claim_locked(rec.id, 1, "b", 30.0, None) is None
        assert sorted(os.listdir(run_dir)) == ["journal.jsonl", "lock", "run.json", "s.1", "s.2"]

    def test_a_busy_concurrency_key_blocks_its_other_runs(self, store: FileStore) -> None:
        """While a run of a key executes, other runs of the key (any job) are skipped and
        the key is reported blocked; runs without the key are not."""
        a, b, free = record("j1", conc="k"), record("j2", conc="k"), record("j3")
        for rec in (a, b, free):
            store.create_run(rec, coalesce=False)
        lease = store.try_claim(entry_of(a), "w", 30.0, set())
        assert lease is not None
        blocked: set[str] = set()
        assert store.try_claim(entry_of(b), "w", 30.0, blocked) is None
        assert blocked == {key_hash("k")}
        other = store.try_claim(entry_of(free), "w", 30.0, blocked)
        assert other is not None
        other.release()
        lease.release()

    def test_a_keyed_claims_execution_slot_is_its_state_file(self, store: FileStore) -> None:
        """The slot a keyed claim publishes in the key's execution chain is a second name
        of its state file: one file, which reads as the slot and as the claim."""
        rec = record(conc="k")
        store.create_run(rec, coalesce=False)
        lease = store.try_claim(entry_of(rec), "w", 30.0, set())
        assert lease is not None
        chain_dir = Path(store.layout.exec_chain(key_hash("k")))
        (slot,) = chain_dir.iterdir()
        state_file = Path(store.layout.run_dir(rec.id), state_name(lease.state.head_n))
        assert os.path.samefile(slot, state_file)
        parsed = records.parse_exec_slot(orjson.loads(slot.read_bytes()))
        assert parsed == records.ExecSlot(run=rec.id, gen=1, host=locks.HOST, lease=30.0)
        assert lease.state.claim is not None
        assert lease.state.claim.owner == "w"
        assert os.listdir(store.layout.tmp) == []
        lease.release()

    def test_the_next_claim_of_a_key_reads_its_chain_only_when_another_process_moved_it(
        self, store: FileStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A process remembers the execution slot it published: its next claim of the key
        reads neither the chain nor the slot. Another process (a second store on the root:
        another cache) that claimed a run of the key since makes the remembered slot stale;
        the claim then fails at its ``link()`` without taking the key, and the claim after
        it reads the chain and finds the key busy until that run ended."""
        from durably import _chain  # noqa: PLC0415

        heads: list[str] = []
        real_head = _chain.head
        exec_chain = store.layout.exec_chain(key_hash("k"))

        def head(c: str) -> tuple[int, dict[str, object] | None]:
            heads.append(c)
            return real_head(c)

        monkeypatch.setattr(_chain, "head", head)

        def run_to_end(s: FileStore, rec: RunRecord) -> None:
            lease = s.try_claim(entry_of(rec), "w", 30.0, set())
            assert lease is not None
            assert s.end(lease.state, lease.gen, records.ending("completed", owner="w")) is not None
            lease.release()

        other = FileStore(store.root, fsync=False)
        a1, a2, a3, b1 = (record(f"j{i}", conc="k") for i in range(4))
        for rec in (a1, a2, a3, b1):
            store.create_run(rec, coalesce=False)
        run_to_end(store, a1)
        run_to_end(store, a2)
        assert heads.count(exec_chain) == 1  # the second claim of the key read nothing of it
        here = locks.HOST
        monkeypatch.setattr(locks, "HOST", "elsewhere")  # the other store poses as another host
        held = other.try_claim(entry_of(b1), "o", 30.0, set())  # reads the chain: a2 ended
        assert held is not None
        assert held._key is not None
        locks.unlock(held._key.lock, held._key.slot)  # its locks are on its host
        locks.unlock(os.path.join(store.layout.run_dir(b1.id), "lock"), held.gen)
        monkeypatch.setattr(locks, "HOST", here)
        assert heads.count(exec_chain) == 2
        blocked: set[str] = set()
        assert store.try_claim(entry_of(a3), "w", 30.0, blocked) is None  # the stale slot: link lost
        assert (blocked, heads.count(exec_chain)) == (set(), 2)  # judged free from memory, then lost
        head_n, data = real_head(exec_chain)
        assert records.key_run(data) == b1.id
        assert store.try_claim(entry_of(a3), "w", 30.0, blocked) is None  # read again: busy
        assert (blocked, heads.count(exec_chain)) == ({key_hash("k")}, 3)
        assert other.end(held.state, held.gen, records.ending("completed", owner="o")) is not None
        held.release()
        lease = store.try_claim(entry_of(a3), "w", 30.0, set())
        assert lease is not None
        assert real_head(exec_chain)[0] == head_n + 1
        lease.release()

    def test_the_lease_runs_from_the_last_heartbeat(self, store: FileStore) -> None:
        """lease_expiry is the journal's mtime (the heartbeat) plus the lease."""
        rec = record()
        store.create_run(rec, coalesce=False)
        lease = store.try_claim(entry_of(rec), "a", 7.0, set())
        assert lease is not None
        journal = os.path.join(store.layout.run_dir(rec.id), "j.1")
        os.utime(journal, (2_000_000_000, 2_000_000_000))
        assert store.lease_expiry(lease.state) == pytest.approx(2_000_000_007)
        lease.release()


class TestLifecycle:
    def test_the_first_end_wins(self, store: FileStore) -> None:
        """Two writers ending a run from the same state: one link() decides, the other
        learns it (None), and the run keeps the first end."""
        rec = record()
        state, _ = store.create_run(rec, coalesce=False)
        assert store.end(state, 0, records.ending("cancelled")) is not None
        assert store.end(state, 0, records.ending("failed", error="late")) is None
        loaded = store.load(rec.id)
        assert loaded is not None
        assert loaded.status == "cancelled"
        assert not any(n.startswith(rec.id) for n in os.listdir(store.layout.queue))

    def test_a_deleted_run_frees_its_idempotency_key(self, store: FileStore) -> None:
        """delete() removes the run's directory and its key, so the key binds a new run."""
        rec = record(idem="k")
        state, _ = store.create_run(rec, coalesce=False)
        ended = store.end(state, 0, records.ending("cancelled"))
        assert ended is not None
        store.delete(ended)
        assert store.load(rec.id) is None
        _, how = store.create_run(record(idem="k"), coalesce=False)
        assert how == "created"


class TestQueueListing:
    def test_the_kept_listing_always_matches_the_directory(self, store: FileStore) -> None:
        """Across random changes to queue/ (markers of several keys, no key, foreign
        files; few changes or many at once), each pass lists exactly the markers there,
        oldest first."""
        import random  # noqa: PLC0415

        rng = random.Random(13)
        queue_dir = Path(store.layout.queue)
        present: set[str] = set()
        for step in range(60):
            for _ in range(rng.choice([1, 2, 5, 100])):
                if present and rng.random() < 0.45:
                    name = rng.choice(sorted(present))
                    (queue_dir / name).unlink()
                    present.discard(name)
                else:
                    rec = record(rng.choice(["job", "other"]), conc=rng.choice([None, "k1", "k2", "k3"]))
                    name = store.queue.name(rec)
                    (queue_dir / name).touch()
                    present.add(name)
            if step % 7 == 0:
                (queue_dir / f"not-a-marker-{step}").touch()

            listed = list(store.queue.entries())

            assert [e.run_id for e in listed] == sorted(name.split(".")[0] for name in present)
            assert {f"{e.run_id}.{e.job_hash}.{e.key_hash}" for e in listed} == present

    def test_a_blocked_key_or_queue_is_left_out_at_its_first_run(self, store: FileStore) -> None:
        """Once the pass marks a key (or a job's queue on it) blocked, the listing yields
        none of its later runs; runs of other keys and without a key still come, in order."""
        recs = [record(conc=c) for c in ("busy", None, "busy", "free", "busy", None, "free")]
        for rec in recs:
            Path(store.layout.queue, store.queue.name(rec)).touch()
        blocked: set[str] = set()
        seen = []
        for entry in store.queue.entries(blocked):
            seen.append(entry.run_id)
            if entry.key_hash == key_hash("busy"):
                blocked.add(entry.queue)

        assert seen == [r.id for r in recs if r is not recs[2] and r is not recs[4]]
