"""The run index: filters, sorting, keyed diffs, counts and throughput, without any UI."""

from __future__ import annotations

from dataclasses import replace

import pytest
from monitor_fakes import NOW, ago, sample

from durably import RunStatus
from durably_monitor._index import RunFilter, RunIndex, SortKey
from durably_monitor._model import row_from_run


@pytest.fixture
def index() -> RunIndex:
    idx = RunIndex()
    idx.replace_all((row_from_run(r) for r in sample().runs.values()), NOW)
    return idx


def ids(index: RunIndex) -> list[str]:
    return [index.id_at(i)[-2:] for i in range(len(index))]


class TestFilter:
    def test_parse_reads_tokens_and_free_text(self) -> None:
        """status:, job: and label: tokens become filters; the rest is the text search."""
        f = RunFilter.parse("status:failed,cancelled job:sync-users label:org=acme boom now")
        assert f.statuses == {RunStatus.FAILED, RunStatus.CANCELLED}
        assert f.job == "sync-users"
        assert f.label == ("org", "acme")
        assert f.text == "boom now"

    def test_parse_keeps_the_base_filters(self) -> None:
        """Typing free text keeps the status filter chosen with a key."""
        base = RunFilter(frozenset({RunStatus.FAILED}))
        assert RunFilter.parse("globex", base).statuses == {RunStatus.FAILED}

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("", ["A6", "A5", "A4", "A3", "A2", "A1"]),
            ("status:failed", ["A2"]),
            ("status:running", ["A4"]),
            ("status:leased", ["A4"]),  # the API's word for the same status
            ("job:send-report", ["A5", "A3"]),
            ("label:tenant", ["A6", "A4"]),
            ("label:tenant=t1", ["A4"]),
            ("read-only", ["A2"]),
            ("0000a1", ["A1"]),
        ],
    )
    def test_filters_select_runs(self, index: RunIndex, query: str, expected: list[str]) -> None:
        """Each kind of filter shows exactly the matching runs, newest first."""
        index.set_filter(RunFilter.parse(query), NOW)
        assert ids(index) == expected


class TestDiffs:
    def test_upsert_inserts_in_order_and_counts(self, index: RunIndex) -> None:
        """A new run lands at its sorted place and the status counts follow."""
        row = replace(index.rows[index.id_at(0)], id="01JDQ0000000000000000000A7", status=RunStatus.PENDING)
        assert index.apply([row]) == {row.id}
        assert ids(index)[0] == "A7"
        assert index.counts[RunStatus.PENDING] == 2

    def test_status_change_moves_between_counts(self, index: RunIndex) -> None:
        """A running run that completes leaves the running count for the completed one."""
        running = index.rows["01JDQ0000000000000000000A4"]
        index.apply([replace(running, status=RunStatus.COMPLETED, completed_at=NOW)])
        assert index.counts[RunStatus.LEASED] == 0
        assert index.counts[RunStatus.COMPLETED] == 3

    def test_unchanged_rows_are_not_reported(self, index: RunIndex) -> None:
        """Re-reading a run that did not change is a no-op."""
        assert index.apply([index.rows["01JDQ0000000000000000000A1"]]) == set()

    def test_removal(self, index: RunIndex) -> None:
        """A deleted run disappears from the view and the counts."""
        index.apply([], ["01JDQ0000000000000000000A2"])
        assert "A2" not in ids(index)
        assert index.counts[RunStatus.FAILED] == 0

    def test_filtered_out_rows_stay_hidden(self, index: RunIndex) -> None:
        """A change to a run the filter hides keeps it hidden but indexed."""
        index.set_filter(RunFilter(frozenset({RunStatus.FAILED})), NOW)
        running = index.rows["01JDQ0000000000000000000A4"]
        index.apply([replace(running, progress_current=99.0)])
        assert ids(index) == ["A2"]
        assert index.position_of(running.id) is None


class TestSortAndThroughput:
    @pytest.mark.parametrize(
        ("key", "descending", "expected"),
        [
            (SortKey.CREATED, False, ["A1", "A2", "A3", "A4", "A5", "A6"]),
            (SortKey.JOB, False, ["A4", "A6", "A3", "A5", "A1", "A2"]),
            (SortKey.STATUS, True, ["A4", "A5", "A2", "A3", "A6", "A1"]),
            (SortKey.DURATION, True, ["A4", "A6", "A3", "A2", "A1", "A5"]),
        ],
    )
    def test_sort(self, index: RunIndex, key: SortKey, descending: bool, expected: list[str]) -> None:
        """Every sort key orders the runs, ties broken by creation."""
        index.set_sort(key, descending, NOW)
        assert ids(index) == expected

    def test_throughput_counts_finished_runs_per_minute(self, index: RunIndex) -> None:
        """The sparkline series has one bucket per minute, oldest first."""
        series = index.throughput(NOW, minutes=30)
        assert len(series) == 30
        assert sum(series) == 4
        assert series[-2] == 1  # A6 finished 5 s ago, in the previous minute
        assert index.throughput(ago(minutes=60), minutes=5) == [0.0] * 5


def test_bulk_diff_matches_row_by_row() -> None:
    """A diff over the bulk threshold leaves the same view and counts as small diffs do."""
    from durably_monitor._index import BULK_THRESHOLD  # noqa: PLC0415

    base = row_from_run(next(iter(sample().runs.values())))
    rows = [
        replace(base, id=f"01JDQ{i:021d}", status=list(RunStatus)[i % 5]) for i in range(BULK_THRESHOLD + 50)
    ]
    one, bulk = RunIndex(), RunIndex()
    for row in rows:
        one.apply([row])
    bulk.apply(rows)
    assert [one.id_at(i) for i in range(len(one))] == [bulk.id_at(i) for i in range(len(bulk))]
    assert one.counts == bulk.counts
