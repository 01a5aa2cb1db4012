"""Fixtures for the monitor tests (helpers live in monitor_helpers)."""

from __future__ import annotations

import os

os.environ["TEXTUAL_ANIMATIONS"] = "none"

import pytest
from monitor_fakes import FakeDurably, sample
from textual.widgets import Input


@pytest.fixture(autouse=True)
def _no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text cursor's blink timer is the commonest snapshot flake."""
    monkeypatch.setattr(Input, "_toggle_cursor", lambda _self: None)


@pytest.fixture
def fake() -> FakeDurably:
    """Fixed sample data (one run of every status)."""
    return sample()
