"""``APP``: the ``module:attribute`` naming a ``Durably`` instance, as the CLI, the
``durably worker`` processes and the monitor import it (one set of rules for all)."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from ._durably import Durably


class AppError(Exception):
    """``APP`` cannot be loaded, or does not match the root it was given."""


def load_app(app: str, root: str | None = None) -> Durably:
    """Import ``module:attribute`` and return the ``Durably`` instance it names.

    When ``root`` is given it becomes ``$DURABLY_ROOT`` before the import, so an instance
    created with the default root serves it. The working directory is put first on
    ``sys.path`` (as uvicorn does), so a module next to where the command runs is found.

    Args:
        app: ``module:attribute`` (the attribute may be dotted).
        root: the root the instance must use, or None to accept any.

    Raises:
        AppError: the string is malformed, the import fails, the attribute is missing or
            not a ``Durably`` instance, or its root differs from ``root``.
    """
    module_name, sep, attr = app.partition(":")
    if not sep or not module_name or not attr:
        raise AppError(f"APP must be 'module:attribute' (e.g. myapp.jobs:durably), got {app!r}")
    if root is not None:
        os.environ["DURABLY_ROOT"] = os.path.abspath(root)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (
            exc.name
            and module_name.startswith(exc.name)
            and module_name.split(".")[0] == exc.name.split(".")[0]
        ):
            raise AppError(
                f"cannot import {module_name!r}: no module named {exc.name!r} (working directory {cwd})"
            ) from exc
        raise AppError(f"error while importing {module_name!r}: {one_line(exc)}{where(exc)}") from exc
    except Exception as exc:
        raise AppError(f"error while importing {module_name!r}: {one_line(exc)}{where(exc)}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Durably):
        raise AppError(f"{app} is a {type(obj).__name__}, not a Durably instance (durably.Durably)")
    if root is not None and not _same_path(obj.root, root):
        raise AppError(
            f"{app} uses root {obj.root}, but --root is {os.path.abspath(root)}; "
            "create it with Durably() (the default root) or pass the same root"
        )
    return obj


def _same_path(a: str, b: str) -> bool:
    return os.path.abspath(a) == os.path.abspath(b) or os.path.realpath(a) == os.path.realpath(b)


_IMPORTLIB = os.path.dirname(os.path.abspath(importlib.__file__ or "")) + os.sep


def where(exc: BaseException, frames: int = 3) -> str:
    """The last frames of ``exc``'s traceback outside the import machinery, as
    `` (at app.py:3 in <module> → helpers.py:10 in load)`` ('' when there are none)."""
    stack = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen")
        and os.path.abspath(f.filename) != os.path.abspath(__file__)
        and not os.path.abspath(f.filename).startswith(_IMPORTLIB)
    ]
    if not stack:
        return ""
    cwd = os.getcwd()

    def name(path: str) -> str:
        rel = os.path.relpath(path, cwd)
        return path if rel.startswith("..") else rel

    shown = " → ".join(f"{name(f.filename)}:{f.lineno} in {f.name}" for f in stack[-frames:])
    return f" (at {shown})"


def one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
