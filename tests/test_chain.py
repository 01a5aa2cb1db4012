"""Slot chains (durably/_chain.py): the compare-and-set behind concurrency keys across hosts."""

from __future__ import annotations

from pathlib import Path

import orjson

from durably import _chain as chain


def _body(n: int) -> bytes:
    return orjson.dumps({"v": 1, "run": f"run-{n}"})


def test_head_follows_publishes_and_old_slots_are_pruned(tmp_path: Path) -> None:
    """Each publish of head + 1 becomes the head; only the two slots below it are kept."""
    key, tmp = tmp_path / "key", tmp_path / "tmp"
    tmp.mkdir()
    assert chain.head(str(key)) == (-1, None)
    for n in range(6):
        assert chain.head(str(key))[0] == n - 1
        assert chain.publish(str(tmp_path), str(tmp), str(key), n, _body(n), sync=True)
        assert chain.head(str(key)) == (n, {"v": 1, "run": f"run-{n}"})
    assert sorted(p.name for p in key.iterdir()) == ["4", "5"]
    assert list(tmp.iterdir()) == []


def test_two_writers_that_read_one_head_one_wins(tmp_path: Path) -> None:
    """Of two writers that read head n, the second one's publish of n + 1 returns False
    and leaves the first one's binding."""
    key, tmp = tmp_path / "key", tmp_path / "tmp"
    tmp.mkdir()
    assert chain.publish(str(tmp_path), str(tmp), str(key), 0, _body(0), sync=False)
    n, _ = chain.head(str(key))
    assert chain.publish(str(tmp_path), str(tmp), str(key), n + 1, _body(1), sync=False)
    assert not chain.publish(str(tmp_path), str(tmp), str(key), n + 1, _body(2), sync=False)
    assert chain.head(str(key))[1] == {"v": 1, "run": "run-1"}


def test_a_writer_that_read_a_pruned_head_withdraws(tmp_path: Path) -> None:
    """A writer that read head 0 long ago publishes slot 1 after it was pruned (the head is
    now 4): the publish returns False, its slot is gone and the head is unchanged."""
    key, tmp = tmp_path / "key", tmp_path / "tmp"
    tmp.mkdir()
    stale_head = 0  # what the slow writer read before the others went on
    for n in range(5):
        assert chain.publish(str(tmp_path), str(tmp), str(key), n, _body(n), sync=False)
    assert not (key / "1").exists()  # pruned
    assert not chain.publish(str(tmp_path), str(tmp), str(key), stale_head + 1, _body(99), sync=False)
    assert sorted(p.name for p in key.iterdir()) == ["3", "4"]
    assert chain.head(str(key))[1] == {"v": 1, "run": "run-4"}


def test_names_that_are_not_slots_are_ignored(tmp_path: Path) -> None:
    """Stray names (a sync tool's conflict copy, a huge number) never become the head."""
    key, tmp = tmp_path / "key", tmp_path / "tmp"
    tmp.mkdir()
    assert chain.publish(str(tmp_path), str(tmp), str(key), 0, _body(0), sync=False)
    (key / "7 (conflicted copy)").write_bytes(_body(7))
    (key / ("9" * 30)).write_bytes(_body(9))
    assert chain.head(str(key)) == (0, {"v": 1, "run": "run-0"})
