"""Static typing of the public API (docs/api.md): mypy infers its generics and flags misuse."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from apps.children import REPO_ROOT, TESTS_DIR, child_env

TYPING_DIR = TESTS_DIR / "typing"
ERROR_LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


@pytest.fixture(scope="module")
def good(mypy_cache: Path) -> tuple[int, dict[int, list[str]]]:
    """mypy's verdict on tests/typing/check_types.py."""
    return run_mypy(TYPING_DIR / "check_types.py", mypy_cache)


@pytest.fixture(scope="module")
def bad(mypy_cache: Path) -> tuple[int, dict[int, list[str]]]:
    """mypy's verdict on tests/typing/bad_types.py."""
    return run_mypy(TYPING_DIR / "bad_types.py", mypy_cache)


def run_mypy(path: Path, cache: Path) -> tuple[int, dict[int, list[str]]]:
    """Run `mypy --strict` on one file; return its exit code and errors by line."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(cache),
            "--config-file",
            str(REPO_ROOT / "pyproject.toml"),
            "--show-error-codes",
            "--no-pretty",
            str(path),
        ],
        cwd=str(REPO_ROOT),
        env=child_env(MYPYPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        check=False,
    )
    errors: dict[int, list[str]] = {}
    for line in proc.stdout.splitlines():
        match = ERROR_LINE.match(line)
        if match and Path(match["path"]).name == path.name:
            errors.setdefault(int(match["line"]), []).append(match["message"])
    return proc.returncode, errors


def expected_groups(path: Path) -> dict[str, set[int]]:
    """The `# E: <id>` markers of a file: id -> the lines where that error may appear."""
    groups: dict[str, set[int]] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        match = re.search(r"# E: (?P<id>[\w-]+)", text)
        if match:
            groups.setdefault(match["id"], set()).add(number)
    return groups


class TestTyping:
    def test_correct_usage_type_checks(self, good: tuple[int, dict[int, list[str]]]) -> None:
        """The users' view of the API (tests/typing/check_types.py) passes `mypy --strict`."""
        code, errors = good

        assert errors == {}
        assert code == 0

    def test_async_job_usage_type_checks(self, mypy_cache: Path) -> None:
        """An async job awaiting `step.run` with sync and async `fn` passes `mypy --strict`."""
        code, errors = run_mypy(TYPING_DIR / "check_async_steps.py", mypy_cache)

        assert errors == {}
        assert code == 0

    @pytest.mark.parametrize(
        "group",
        sorted(expected_groups(TYPING_DIR / "bad_types.py")),
    )
    def test_misuse_is_flagged(self, bad: tuple[int, dict[int, list[str]]], group: str) -> None:
        """mypy reports an error at each marked misuse (wrong input model, wrong return...)."""
        _, errors = bad
        lines = expected_groups(TYPING_DIR / "bad_types.py")[group]

        assert lines & set(errors), f"no mypy error on lines {sorted(lines)}: {errors}"

    def test_no_errors_outside_the_marked_lines(self, bad: tuple[int, dict[int, list[str]]]) -> None:
        """Only the marked misuses are errors: the rest of bad_types.py is well typed."""
        code, errors = bad
        marked = set().union(*expected_groups(TYPING_DIR / "bad_types.py").values())

        assert {line: msgs for line, msgs in errors.items() if line not in marked} == {}
        assert code == 1
