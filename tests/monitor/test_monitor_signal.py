"""Sending a signal from the monitor (`n`): a form with the waited-for name filled in, JSON
data checked before anything is sent, a confirmation, then `Durably.signal`; refusals and
durably's errors are said plainly."""

from __future__ import annotations

from typing import Any

from monitor_fakes import CHILD_DONE, SIGNAL, SLEEP, FakeDurably, waiting_sample
from monitor_helpers import make_app, notifications, palette, settle, text_of, wait_for
from textual.pilot import Pilot
from textual.widgets import Input, Static

from durably import RunStatus
from durably_monitor._dialogs import ConfirmScreen, SignalScreen
from durably_monitor._runlist import RunList
from durably_monitor._widgets import MonitorFooter


async def select(pilot: Pilot[Any], run_id: str) -> None:
    await settle(pilot)
    assert pilot.app.screen.query_one(RunList).select(run_id)


async def open_form(pilot: Pilot[Any], run_id: str) -> SignalScreen:
    await select(pilot, run_id)
    await pilot.press("n")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, SignalScreen)
    return screen


def footer(app: Any) -> str:
    """The keys the footer shows."""
    keys = app.screen.query_one(MonitorFooter).query_children("FooterKey")
    return "  ".join(text_of(k).strip() for k in keys if k.display)


def field(screen: SignalScreen, name: str) -> Input:
    return screen.query_one(f"#signal-{name}", Input)


class TestSend:
    async def test_the_name_is_filled_in_and_the_data_sent_after_a_yes(self) -> None:
        """`n` on a run waiting for `approval`: the form names it, the JSON typed is sent
        once the confirmation is answered yes, and the run's new state is read at once."""
        fake = waiting_sample()
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            told = notifications(app)
            form = await open_form(pilot, SIGNAL)
            assert field(form, "name").value == "approval"
            assert "It waits for signal 'approval'." in " ".join(text_of(s) for s in form.query(Static))
            assert field(form, "data").has_focus
            await pilot.press(*'{"by": "ana"}', "enter")
            await settle(pilot)
            confirm = app.screen
            assert isinstance(confirm, ConfirmScreen)
            assert "Send signal 'approval' to run" in confirm.question
            assert 'data: {"by": "ana"}' in confirm.question
            assert fake.signals == {}
            await pilot.press("y")
            await wait_for(pilot, lambda: fake.signals == {(SIGNAL, "approval"): {"by": "ana"}})
            await wait_for(pilot, lambda: any("Sent signal 'approval'" in t for t in told))
            run_list = app.screen.query_one(RunList)
            await wait_for(pilot, lambda: run_list.index.rows[SIGNAL].status is RunStatus.PENDING)

    async def test_empty_data_is_null(self) -> None:
        """Data left empty is sent as null."""
        fake = waiting_sample()
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_form(pilot, SIGNAL)
            await pilot.press("enter")
            await settle(pilot)
            assert "data: null" in app.screen.question  # type: ignore[attr-defined]
            await pilot.press("y")
            await wait_for(pilot, lambda: fake.signals == {(SIGNAL, "approval"): None})

    async def test_a_run_that_waits_for_no_signal_gets_an_empty_name(self) -> None:
        """A sleeping run can be sent a signal too (it is kept until the run waits for it):
        the form says so and asks for the name."""
        fake = waiting_sample()
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            form = await open_form(pilot, SLEEP)
            assert field(form, "name").value == ""
            assert field(form, "name").has_focus
            assert "waits for no signal now" in " ".join(text_of(s) for s in form.query(Static))
            await pilot.press(*"go", "enter", *"[1, 2]", "enter", "y")
            await wait_for(pilot, lambda: fake.signals == {(SLEEP, "go"): [1, 2]})

    async def test_the_palette_offers_it(self) -> None:
        """`Send signal` is in the command palette for an active run, not for a finished one."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(120, 40)) as pilot:
            await select(pilot, SIGNAL)
            assert "Send signal" in palette(app)
            await select(pilot, CHILD_DONE)
            assert "Send signal" not in palette(app)


class TestNotSent:
    async def test_bad_json_keeps_the_form_open_and_says_why(self) -> None:
        """Data that is not JSON is refused before anything is asked or sent."""
        fake = waiting_sample()
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            form = await open_form(pilot, SIGNAL)
            await pilot.press(*"{by: ana}", "enter")
            await settle(pilot)
            assert app.screen is form
            assert "The data is not JSON" in text_of(form.query_one("#signal-problem", Static))
            await pilot.press("escape")
            await settle(pilot)
            assert not isinstance(app.screen, SignalScreen | ConfirmScreen)
            assert fake.calls == []

    async def test_no_at_the_confirmation_sends_nothing(self) -> None:
        """`n` (or escape) at the confirmation: nothing is sent."""
        fake = waiting_sample()
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_form(pilot, SIGNAL)
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            await settle(pilot)
            assert fake.calls == []

    async def test_a_conflict_is_shown(self) -> None:
        """durably's ConflictError (the name was sent already) is shown with its message."""
        fake: FakeDurably = waiting_sample()
        fake.signals[(SIGNAL, "approval")] = {"by": "bob"}
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            told = notifications(app)
            await open_form(pilot, SIGNAL)
            await pilot.press("enter", "y")
            want = "Signal not sent (ConflictError): signal 'approval' was already sent"
            await wait_for(pilot, lambda: any(t.startswith(want) for t in told))
            assert fake.signals == {(SIGNAL, "approval"): {"by": "bob"}}

    async def test_a_finished_run_is_refused(self) -> None:
        """A finished run can no longer receive a signal: said at once, no form."""
        app = make_app(waiting_sample())
        async with app.run_test(size=(120, 40)) as pilot:
            told = notifications(app)
            await select(pilot, CHILD_DONE)
            await pilot.press("n")
            await settle(pilot)
            assert not isinstance(app.screen, SignalScreen)
            assert any("a signal can no longer reach it" in t for t in told)

    async def test_a_read_only_root_is_refused_with_a_message(self) -> None:
        """On a read-only root `n` explains why it cannot send, and how to send elsewhere."""
        fake = waiting_sample()
        fake.read_only = True
        app = make_app(fake)
        async with app.run_test(size=(120, 40)) as pilot:
            told = notifications(app)
            await select(pilot, SIGNAL)
            await pilot.press("n")
            await settle(pilot)
            assert not isinstance(app.screen, SignalScreen)
            assert any("a read-only root" in t and "durably signal RUN NAME" in t for t in told)
            assert "Send signal" not in palette(app)
            assert "n Signal" not in footer(app)
            assert fake.calls == []

    async def test_read_only_flag_is_refused_too(self) -> None:
        """`--read-only` on a writable root: the same refusal, naming the flag."""
        app = make_app(waiting_sample(), read_only=True)
        async with app.run_test(size=(120, 40)) as pilot:
            told = notifications(app)
            await select(pilot, SIGNAL)
            await pilot.press("n")
            await settle(pilot)
            assert not isinstance(app.screen, SignalScreen)
            assert any("(--read-only)" in t for t in told)
