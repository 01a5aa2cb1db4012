"""The jobs an instance has registered, by name and by the hash queue markers carry."""

from __future__ import annotations

import dataclasses
import inspect
import threading
from typing import Any

from ._codec import Codec, codec_for
from ._errors import ConflictError
from ._job import JobDefinition
from ._layout import job_hash


@dataclasses.dataclass(frozen=True, eq=False)
class RegisteredJob:
    """A job definition with what executing and reading its runs needs."""

    definition: JobDefinition[Any, Any]
    input_codec: Codec
    output_codec: Codec
    hash: str
    is_async: bool

    @property
    def name(self) -> str:
        """The job's name."""
        return self.definition.name


class JobRegistry:
    """Registered jobs; safe to use from several threads."""

    def __init__(self) -> None:
        self._by_name: dict[str, RegisteredJob] = {}
        self._by_hash: dict[str, RegisteredJob] = {}
        self._lock = threading.Lock()

    def register(self, definition: JobDefinition[Any, Any]) -> tuple[RegisteredJob, bool]:
        """Register a definition; return its job and whether it is new (registering the
        same definition object again returns the same job).

        Raises:
            ConflictError: another definition is registered under this name.
        """
        with self._lock:
            existing = self._by_name.get(definition.name)
            if existing is not None:
                if existing.definition is definition:
                    return existing, False
                raise ConflictError(
                    f'Job "{definition.name}" is already registered with a different definition'
                )
            job = RegisteredJob(
                definition,
                codec_for(definition.input),
                codec_for(definition.output),
                job_hash(definition.name),
                inspect.iscoroutinefunction(definition.run),
            )
            self._by_name[definition.name] = job
            self._by_hash[job.hash] = job
            return job, True

    def get(self, name: str) -> RegisteredJob | None:
        """The job registered under ``name``, or None."""
        return self._by_name.get(name)

    def by_hash(self, hash16: str) -> RegisteredJob | None:
        """The job whose name hashes to ``hash16`` (as queue markers name it), or None."""
        return self._by_hash.get(hash16)

    def names(self) -> list[str]:
        """Names of the registered jobs, sorted."""
        return sorted(self._by_name)

    def __bool__(self) -> bool:
        return bool(self._by_hash)
