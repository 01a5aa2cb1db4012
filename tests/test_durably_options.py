"""The `Durably` constructor, its options and job registration (docs/api.md: Durably)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import durably
from durably import ConflictError, Durably, Step, ValidationError, define_job


class Item(BaseModel):
    n: int


def _double(step: Step, payload: Item) -> int:
    return step.run("double", lambda: payload.n * 2)


ITEM_JOB = define_job(name="item", input=Item, output=int, run=_double)
OTHER_JOB = define_job(name="other", input=Item, run=lambda step, payload: None)

Factory = Callable[..., Durably]


class TestRoot:
    def test_default_root_is_dot_durably_in_the_working_directory(
        self, durably_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a root and without $DURABLY_ROOT, runs are stored under ./.durably."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("DURABLY_ROOT", raising=False)

        d = durably_factory(root_dir=None, jobs=[ITEM_JOB])
        d.jobs["item"].trigger(Item(n=1))

        assert (tmp_path / ".durably").is_dir()
        assert any((tmp_path / ".durably").iterdir())

    def test_durably_root_environment_variable_sets_the_default_root(
        self, durably_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a root, $DURABLY_ROOT names the root directory."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DURABLY_ROOT", str(tmp_path / "from-env"))

        d = durably_factory(root_dir=None, jobs=[ITEM_JOB])
        result = d.jobs["item"].trigger(Item(n=1))

        assert (tmp_path / "from-env").is_dir()
        assert not (tmp_path / ".durably").exists()
        other = durably_factory(root_dir=tmp_path / "from-env")
        assert other.get_run(result.id) is not None

    def test_root_may_be_a_string(self, durably_factory: Factory, tmp_path: Path) -> None:
        """The root may be given as a `str` as well as a path."""
        d = durably_factory(root_dir=str(tmp_path / "as-str"), jobs=[ITEM_JOB])
        result = d.jobs["item"].trigger(Item(n=2))

        assert d.get_run(result.id) is not None
        assert (tmp_path / "as-str").is_dir()


class TestRegistration:
    def test_register_returns_a_job_handle(self, d: Durably) -> None:
        """`register(defn)` returns a JobHandle for the definition."""
        handle = d.register(ITEM_JOB)

        assert isinstance(handle, durably.JobHandle)

    def test_registering_the_same_definition_again_returns_the_identical_handle(self, d: Durably) -> None:
        """Registering one definition object twice returns the very same handle."""
        assert d.register(ITEM_JOB) is d.register(ITEM_JOB)

    def test_jobs_option_registers_the_definitions(self, durably_factory: Factory) -> None:
        """`Durably(jobs=[...])` registers each definition; `register` then returns its handle."""
        d = durably_factory(jobs=[ITEM_JOB, OTHER_JOB])

        assert set(d.jobs) == {"item", "other"}
        assert d.register(ITEM_JOB) is d.jobs["item"]

    def test_jobs_option_with_two_definitions_of_one_name_conflicts(self, root: Path) -> None:
        """Two different definitions with one name in `jobs=` raise ConflictError."""
        twin = define_job(name="item", input=Item, output=int, run=_double)

        with pytest.raises(ConflictError):
            Durably(root, fsync=False, jobs=[ITEM_JOB, twin])

    def test_a_different_definition_under_a_registered_name_conflicts(self, d: Durably) -> None:
        """A different definition object under an already registered name raises ConflictError."""
        d.register(ITEM_JOB)
        twin = define_job(name="item", input=Item, output=int, run=_double)

        with pytest.raises(ConflictError):
            d.register(twin)
        assert d.get_job("item") is d.register(ITEM_JOB)

    def test_get_job_returns_the_handle_or_none(self, d: Durably) -> None:
        """`get_job(name)` returns the registered handle, or None for an unknown name."""
        handle = d.register(ITEM_JOB)

        assert d.get_job("item") is handle
        assert d.get_job("missing") is None

    def test_jobs_maps_names_to_handles(self, d: Durably) -> None:
        """`jobs` maps each registered job name to its handle."""
        item = d.register(ITEM_JOB)
        other = d.register(OTHER_JOB)

        assert dict(d.jobs) == {"item": item, "other": other}

    def test_registered_handles_trigger_independent_runs(self, d: Durably) -> None:
        """Handles of different jobs trigger runs with distinct ids and their own job names."""
        a = d.register(ITEM_JOB).trigger(Item(n=1))
        b = d.register(OTHER_JOB).trigger(Item(n=1))

        assert a.id != b.id
        assert (a.job_name, b.job_name) == ("item", "other")


class TestOptionValidation:
    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({"max_concurrent_runs": 0}, id="max_concurrent_runs=0"),
            pytest.param({"max_concurrent_runs": -1}, id="max_concurrent_runs=-1"),
            pytest.param({"max_concurrent_runs": 1001}, id="max_concurrent_runs=1001"),
            pytest.param({"max_concurrent_runs": 1.5}, id="max_concurrent_runs=1.5"),
            pytest.param({"polling_interval": 0}, id="polling_interval=0"),
            pytest.param({"polling_interval": -1.0}, id="polling_interval=-1"),
            pytest.param({"polling_interval": float("nan")}, id="polling_interval=nan"),
            pytest.param({"lease_duration": 0}, id="lease_duration=0"),
            pytest.param({"lease_duration": -5.0}, id="lease_duration=-5"),
            pytest.param({"lease_renew_interval": 0}, id="lease_renew_interval=0"),
            pytest.param({"lease_renew_interval": -1.0}, id="lease_renew_interval=-1"),
            pytest.param({"lease_duration": 5.0, "lease_renew_interval": 5.0}, id="renew==duration"),
            pytest.param({"lease_duration": 5.0, "lease_renew_interval": 10.0}, id="renew>duration"),
            pytest.param({"retain_runs": "30s"}, id="retain_runs=30s"),
            pytest.param({"retain_runs": "invalid"}, id="retain_runs=invalid"),
            pytest.param({"retain_runs": "d"}, id="retain_runs=d"),
            pytest.param({"retain_runs": "1.5d"}, id="retain_runs=1.5d"),
            pytest.param({"retain_runs": 30}, id="retain_runs=int"),
        ],
    )
    def test_bad_options_raise_validation_error(self, root: Path, options: dict[str, Any]) -> None:
        """Out-of-range or malformed constructor options raise ValidationError at construction."""
        with pytest.raises(ValidationError):
            Durably(root, fsync=False, **options)

    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({"max_concurrent_runs": 1}, id="max_concurrent_runs=1"),
            pytest.param({"max_concurrent_runs": 1000}, id="max_concurrent_runs=1000"),
            pytest.param({"polling_interval": 0.01}, id="polling_interval=0.01"),
            pytest.param({"lease_duration": 2.0, "lease_renew_interval": 1.0}, id="short-lease"),
            pytest.param({"retain_runs": timedelta(days=7)}, id="retain_runs=timedelta"),
            pytest.param({"retain_runs": "30d"}, id="retain_runs=30d"),
            pytest.param({"retain_runs": "12h"}, id="retain_runs=12h"),
            pytest.param({"retain_runs": "45m"}, id="retain_runs=45m"),
            pytest.param({"preserve_steps": True}, id="preserve_steps"),
        ],
    )
    def test_good_options_are_accepted(self, durably_factory: Factory, options: dict[str, Any]) -> None:
        """Options inside their documented ranges construct a working instance."""
        d = durably_factory(jobs=[ITEM_JOB], **options)
        result = d.jobs["item"].trigger(Item(n=3))

        assert d.process_until_idle() == 1
        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "completed"
        assert run.output == 6


class TestFsync:
    def test_fsync_true_instance_runs_jobs(self, durably_factory: Factory) -> None:
        """An instance with the default `fsync=True` triggers and completes runs."""
        d = durably_factory(jobs=[ITEM_JOB], fsync=True)
        result = d.jobs["item"].trigger(Item(n=4))
        d.process_until_idle()

        run = d.get_run(result.id)
        assert run is not None
        assert run.status == "completed"
        assert run.output == 8
