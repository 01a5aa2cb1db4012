"""Value fidelity: how step values, inputs and outputs become JSON and come back.

A step's value is serialised and parsed back *on first execution too*, so the value a
job sees the first time and on every replay is the same, of the same type. The type
comes from ``returns=``, else the function's return annotation, else the value must be
plain JSON data (dict with str keys, list, str, int within 64 bits, finite float, bool,
None). orjson turns NaN into null and tuples into lists and refuses big ints, so a value
that does not survive the round trip is refused before anything is written.
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Callable
from typing import Any

import orjson
import pydantic
import pydantic_core

from ._errors import ValidationError

MAX_VALUE_BYTES = 64 * 1024 * 1024
"""Largest value (serialised) a step, input or output may hold."""

_PLAIN = object()
_MAX_DEPTH = 254
"""Deepest nesting orjson writes; deeper values are refused (and not walked further)."""


def safe_detail(exc: BaseException) -> str:
    """Why a value was refused, naming fields and types but never quoting the value.

    pydantic's own messages include ``input_value=...``: the value, which may be a
    secret (a token a step returned); error messages, tracebacks and logs must not
    carry it. orjson's messages name types only.
    """
    if isinstance(exc, pydantic.ValidationError):
        parts = []
        for err in exc.errors(include_url=False, include_context=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"])
            parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
        return "; ".join(parts)
    if isinstance(exc, pydantic_core.PydanticSerializationError):
        return "it does not serialise as its declared type"
    return str(exc)


def _describe(value: object, path: str = "value", depth: int = 0) -> str | None:
    """Name the first part of ``value`` that is not plain JSON data, or None."""
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            return f"{path} is an int beyond 64 bits"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is the float {value!r}"
    if isinstance(value, list | dict):
        if depth >= _MAX_DEPTH:
            return f"{path} is nested more than {_MAX_DEPTH} levels deep"
        return _describe_items(value, path, depth + 1)
    return f"{path} is of type {type(value).__name__}"


def _describe_items(value: list[Any] | dict[Any, Any], path: str, depth: int) -> str | None:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(value, dict) and not isinstance(key, str):
            return f"{path} has a key of type {type(key).__name__}"
        found = _describe(item, f"{path}[{key!r}]", depth)
        if found:
            return found
    return None


class Codec:
    """Encode values of one type to JSON bytes and decode them back."""

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.adapter: pydantic.TypeAdapter[Any] | None = None if tp is _PLAIN else pydantic.TypeAdapter(tp)

    @property
    def type_name(self) -> str:
        """A readable name of the type, for messages."""
        if self.adapter is None:
            return "plain JSON data"
        return getattr(self.tp, "__name__", None) or repr(self.tp)

    def encode(self, value: Any, what: str) -> tuple[bytes, Any]:
        """Serialise ``value``; return its JSON bytes and the value parsed back from them.

        Raises:
            ValidationError: the value cannot be stored faithfully; the message names
                ``what`` (e.g. ``step 'fetch'``) and the offending type.
        """
        try:
            if self.adapter is None:
                data = orjson.dumps(value)
            else:
                value = self.adapter.validate_python(value)
                data = orjson.dumps(self.adapter.dump_python(value, mode="json", warnings="error"))
        except (TypeError, ValueError, orjson.JSONEncodeError, pydantic.PydanticUserError) as exc:
            # No chained cause: pydantic's would print the value in every traceback.
            raise ValidationError(self._refusal(value, what, exc)) from None
        if len(data) > MAX_VALUE_BYTES:
            raise ValidationError(
                f"{what}: value of type {type(value).__name__} is {len(data)} bytes "
                f"serialised; the limit is {MAX_VALUE_BYTES}"
            )
        back = self.decode(orjson.loads(data), what)
        if back != value:
            raise ValidationError(self._refusal(value, what, None))
        return data, back

    def decode(self, data: Any, what: str) -> Any:
        """Turn stored JSON data back into a value of this codec's type."""
        if self.adapter is None:
            return data
        try:
            return self.adapter.validate_python(data)
        except pydantic.ValidationError as exc:
            raise ValidationError(
                f"{what}: stored value no longer matches {self.type_name}: {safe_detail(exc)}"
            ) from None

    def _refusal(self, value: Any, what: str, exc: BaseException | None) -> str:
        kind = type(value).__name__
        if self.adapter is None:
            found = _describe(value)
            detail = found or "it does not survive a JSON round trip"
            # a declared type helps only a value of a type JSON lacks (a datetime, a tuple,
            # a model, non-string keys); no type stores NaN, a 65-bit int or deep nesting
            helps = found is not None and (" is of type " in found or " has a key of type " in found)
            hint = " (declare its type with returns=... or a return annotation)" if helps else ""
            return f"{what}: cannot store a value of type {kind}: {detail}{hint}"
        reason = f": {safe_detail(exc)}" if exc is not None else ": it does not survive a JSON round trip"
        return f"{what}: cannot store a value of type {kind} as {self.type_name}{reason}"


@functools.lru_cache(maxsize=512)
def _codec_cached(tp: Any) -> Codec:
    return Codec(tp)


def codec_for(tp: Any) -> Codec:
    """The codec of a type; ``None``, ``Any`` and ``object`` mean plain JSON data."""
    if tp is None or tp is Any or tp is object:
        tp = _PLAIN
    try:
        return _codec_cached(tp)
    except TypeError:  # unhashable type expression
        return Codec(tp)


def return_type(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn``, or None when it has none (lambdas, partials)."""
    annotations = getattr(fn, "__annotations__", None)
    if not annotations or "return" not in annotations:
        return None  # the common case (a lambda): no typing.get_type_hints call
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations mean "no type"
        return None
    if "return" not in hints:
        return None
    tp = hints["return"]
    return type(None) if tp is None else tp
