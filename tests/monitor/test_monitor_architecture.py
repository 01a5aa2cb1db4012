"""How the monitor package is put together: an acyclic module graph, one typed door to durably."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

from monitor_fakes import FakeDurably, FakeRun, schedules_sample
from monitor_helpers import make_app, settle
from textual.pilot import Pilot

from durably import RunStatus
from durably_monitor._backend import DurablyReader
from durably_monitor._dialogs import ConfirmScreen
from durably_monitor._runlist import RunList

PACKAGE = Path(__file__).resolve().parents[2] / "monitor"
FAILED = "01JDQ0000000000000000000A2"
RUNNING = "01JDQ0000000000000000000A4"
DONE = "01JDQ0000000000000000000A6"
WAITS = "01JDQ0000000000000000000A9"


def local_imports(tree: ast.Module) -> set[str]:
    """The package's own modules that a module imports (anywhere in it, TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    return {
        path.stem: local_imports(ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.glob("*.py"))
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in `graph` as a path of module names, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            cycle = visit(target, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in graph:
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


class TestModuleGraph:
    def test_the_import_graph_is_acyclic(self) -> None:
        """No module of monitor/ imports, directly or not, a module that imports it back."""
        graph = import_graph()
        assert "_app" in graph["__init__"]  # the walk sees the package's imports
        assert find_cycle(graph) is None, find_cycle(graph)

    def test_screens_do_not_import_the_app(self) -> None:
        """Screens and the palette get what they need in their constructor or send messages."""
        graph = import_graph()
        for module in ("_runs_screen", "_detail", "_commands", "_dialogs", "_runlist", "_state"):
            assert "_app" not in graph[module], module

    def test_no_function_level_imports(self) -> None:
        """Every import of the package sits at module level (none hidden in a function)."""
        for path in sorted(PACKAGE.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    inner = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
                    assert not inner, f"{path.name}: import inside {node.name}()"

    def test_the_cycle_finder_finds_cycles(self) -> None:
        """The check above would catch a cycle (a three-module loop)."""
        assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
        assert find_cycle({"a": {"b"}, "b": set()}) is None


class Recorder:
    """Wraps a durably read API and records the name of every attribute the monitor uses."""

    def __init__(self, inner: FakeDurably) -> None:
        self.inner = inner
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.used.add(name)
        return getattr(self.inner, name)


def protocol_methods() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(DurablyReader, inspect.isfunction)
        if not name.startswith("_")
    }


async def press_through_everything(pilot: Pilot[Any], fake: FakeDurably) -> None:
    app = pilot.app
    await settle(pilot)
    run_list = app.screen.query_one(RunList)
    assert run_list.select(FAILED)
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("r", "y")  # retrigger from the detail screen
    await settle(pilot)
    await pilot.press("escape")
    assert app.screen.query_one(RunList).select(FAILED)
    await pilot.press("R", "y")  # resume
    await settle(pilot)
    assert app.screen.query_one(RunList).select(RUNNING)
    await pilot.press("c", "y")
    await settle(pilot)
    assert app.screen.query_one(RunList).select(DONE)
    await pilot.press("d")
    assert isinstance(app.screen, ConfirmScreen)
    await pilot.press("y")
    await settle(pilot)
    fake.put(FakeRun(WAITS, "approve", RunStatus.WAITING, waiting_for="signal approval"))
    app.poll()  # type: ignore[attr-defined]
    await settle(pilot)
    assert app.screen.query_one(RunList).select(WAITS)
    await pilot.press("n")  # send a signal: the form (name filled in), enter, then confirm
    await settle(pilot)
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("y")
    await settle(pilot)
    await pilot.press("w")  # the workers view
    await settle(pilot)
    await pilot.press("escape")
    await pilot.press("S")  # the schedules view: pause one, resume the paused one
    await settle(pilot)
    await pilot.press("p", "y")
    await settle(pilot)
    await pilot.press("G", "p", "y")
    await settle(pilot)
    await pilot.press("escape")
    fake.feed_broken = True  # the feed cannot say: a full reload
    app.poll()  # type: ignore[attr-defined]
    await settle(pilot)


class TestDurablyReader:
    def test_the_protocol_lists_what_the_monitor_calls(self) -> None:
        """`DurablyReader` names the fifteen methods of SPEC's Durably the monitor uses."""
        assert protocol_methods() == {
            "get_runs",
            "get_run",
            "get_steps",
            "get_logs",
            "get_workers",
            "get_schedules",
            "changes",
            "is_read_only",
            "cancel",
            "delete_run",
            "retrigger",
            "resume",
            "signal",
            "pause_schedule",
            "resume_schedule",
        }

    async def test_the_monitor_uses_nothing_else(self) -> None:
        """Listing, a detail, a poll, a reload, the five actions, the workers view and the
        schedules view (pausing and resuming one) touch only the protocol."""
        fake = schedules_sample()
        recorder = Recorder(fake)
        app = make_app(recorder)  # type: ignore[arg-type]
        async with app.run_test(size=(120, 40)) as pilot:
            await press_through_everything(pilot, fake)
        assert [name for name, _ in fake.calls] == [
            "retrigger",
            "resume",
            "cancel",
            "delete",
            "signal",
            "pause_schedule",
            "resume_schedule",
        ]
        assert recorder.used == protocol_methods()
