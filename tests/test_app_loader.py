"""`APP` (`module:attribute`): one loader and one set of messages for `durably worker`,
the other subcommands and the monitor."""

from __future__ import annotations

import pytest

from durably import Durably
from durably._app_loader import AppError, load_app
from durably_monitor._backend import open_source


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("apps.missing:durably", "no module named 'apps.missing'"),
        ("apps.broken:durably", "RuntimeError: this module is broken on purpose"),
        ("apps.cli_app:nothing", "has no attribute 'nothing'"),
        ("apps.cli_app:not_durably", "is a dict, not a Durably instance"),
        ("apps.cli_app", "module:attribute"),
    ],
)
def test_the_monitor_reports_a_bad_app_as_the_cli_does(app: str, message: str) -> None:
    """An APP that cannot be loaded is one line in the monitor too (no traceback), with
    the words the CLI uses."""
    with pytest.raises(AppError, match=message):
        load_app(app)
    with pytest.raises(SystemExit, match=f"^durably monitor: .*{message}"):
        open_source(None, app)


def test_an_error_while_importing_names_its_file_and_line() -> None:
    """An exception raised while importing APP says where: the file and line of its last frames."""
    with pytest.raises(AppError) as info:
        load_app("apps.broken:durably")
    message = str(info.value)
    assert "RuntimeError: this module is broken on purpose" in message
    assert "apps/broken.py:3 in <module>" in message
    assert "\n" not in message


def test_an_app_is_the_instance_it_names() -> None:
    """APP gives the very instance its module created."""
    from apps import cli_app  # noqa: PLC0415

    loaded = load_app("apps.cli_app:durably")

    assert isinstance(loaded, Durably)
    assert loaded is cli_app.durably
