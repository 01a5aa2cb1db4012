"""The self-contained code in the README and the docs runs as printed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def python_blocks(relative: str) -> list[str]:
    text = (REPO / relative).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


def headings(relative: str) -> list[str]:
    text = (REPO / relative).read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"^(#+) ", text, re.M)


class FakeApi:
    def __init__(self, *user_ids: str) -> None:
        self.user_ids = user_ids

    def fetch_users(self, org_id: str) -> list[dict[str, str]]:
        return [{"id": user_id} for user_id in self.user_ids]


class FakeDb:
    def __init__(self) -> None:
        self.upserted: list[str] = []

    def upsert_user(self, user: dict[str, str]) -> None:
        if user["id"] == "broken":
            raise RuntimeError("cannot sync")
        self.upserted.append(user["id"])


@pytest.fixture
def in_tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run snippets in a temporary working directory with its own default root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DURABLY_ROOT", str(tmp_path / "root"))
    return tmp_path


def run_blocks(blocks: list[str], namespace: dict[str, Any]) -> dict[str, Any]:
    for i, block in enumerate(blocks):
        exec(compile(block, f"<block {i}>", "exec"), namespace)
    return namespace


class TestSnippets:
    def test_readme_at_a_glance_runs(self, in_tmp_root: Path) -> None:
        """The README's code triggers a run and processes it to completion."""
        db = FakeDb()
        ns = run_blocks(python_blocks("README.md"), {"api": FakeApi("u1", "u2"), "db": db})
        [run] = ns["durably"].get_runs()
        assert run.status == "completed"
        assert run.output == {"synced_count": 2}
        assert db.upserted == ["u1", "u2"]

    def test_getting_started_runs(self, in_tmp_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The first job of the getting-started page runs, in-process and with a worker."""
        run_blocks(python_blocks("docs/getting-started.md"), {"__name__": "__main__"})
        out = capsys.readouterr().out
        assert "completed greetings=['Hello, Ada!', 'Hello, Grace!']" in out
        assert "['Hello, Linus!']" in out

    def test_recovering_runs(self, in_tmp_root: Path) -> None:
        """The recovering page's run fails, resumes without fetching again, forks from a
        step, and its window query finds the failed run."""
        ns = run_blocks(python_blocks("docs/recovering.md"), {"__name__": "__main__"})
        assert ns["fetched"] == [2]
        assert [r.id for r in ns["recent_failures"]] == [ns["failed"].id]

    def test_schedules_page(self, in_tmp_root: Path) -> None:
        """The schedules page stores a schedule, pauses, resumes and deletes it, and its
        ManualClock test fires the latest tick."""
        ns = run_blocks(python_blocks("docs/schedules.md"), {"__name__": "__main__"})
        assert ns["durably"].get_schedules() == []  # unscheduled by the page
        assert [s.name for s in ns["d"].get_schedules()] == ["hourly"]

    @pytest.mark.parametrize("page", ["docs/api/define-job.md", "docs/ja/api/define-job.md"])
    def test_define_job_example_runs(self, in_tmp_root: Path, page: str) -> None:
        """The sync-users example of the define_job page records the failed user in errors."""
        blocks = python_blocks(page)
        [example] = [b for b in blocks if "sync_users_job" in b]
        ns = run_blocks([example], {"api": FakeApi("u1", "u2", "broken"), "db": FakeDb()})
        durably = ns["durably"]
        assert durably.process_until_idle() == 2
        outputs = [run.output for run in durably.get_runs()]
        assert len(outputs) == 2
        for output in outputs:
            assert output["synced_count"] == 2
            assert len(output["errors"]) == 1
            assert "broken" in output["errors"][0]

    def test_japanese_define_job_page_mirrors_the_english_one(self) -> None:
        """Both pages have the same sections and the same number of code blocks."""
        english, japanese = "docs/api/define-job.md", "docs/ja/api/define-job.md"
        assert headings(japanese) == headings(english)
        assert len(python_blocks(japanese)) == len(python_blocks(english))

    def test_api_reference_import_line_imports(self) -> None:
        """Every name the API reference imports exists in `durably`."""
        run_blocks(python_blocks("docs/api.md")[:1], {})
