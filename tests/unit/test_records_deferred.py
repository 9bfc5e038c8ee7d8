"""scheduler.records defines the records of DEFERRED on first use: the same classes, looked up as before."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import scheduler.records as records
from scheduler.records import deferred


def test_every_deferred_name_is_a_record_of_the_deferred_module() -> None:
    defined = {
        name
        for name, value in vars(deferred).items()
        if isinstance(value, type) and value.__module__ == deferred.__name__
    }
    assert defined == records.DEFERRED
    for name in records.DEFERRED:
        record = getattr(records, name)
        assert record is getattr(deferred, name)
        assert dataclasses.is_dataclass(record)
        assert name in dir(records)


def test_a_deferred_record_imports_and_behaves_as_before() -> None:
    from scheduler.records import Dispatch, TickReport

    dispatch = Dispatch(7, "default", "test:echo", "nightly", timeout_s=2.0)
    assert dispatch == Dispatch(7, "default", "test:echo", "nightly", timeout_s=2.0)
    assert repr(dispatch) == (
        "Dispatch(execution_id=7, queue='default', command='test:echo', task_name='nightly', "
        "countdown_s=0.0, timeout_s=2.0)"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        dispatch.queue = "other"  # type: ignore[misc]
    assert not hasattr(dispatch, "__dict__")
    assert dataclasses.replace(TickReport(leader=True), due=3).due == 3


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Nonexistent"):
        records.Nonexistent  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError):
        exec("from scheduler.records import Nonexistent")


def test_importing_the_records_defines_no_deferred_one() -> None:
    script = (
        "import sys, scheduler.records as r; "
        "print('scheduler.records.deferred' in sys.modules, 'Dispatch' in vars(r)); "
        "r.Silence; print('scheduler.records.deferred' in sys.modules, 'Dispatch' in vars(r))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False", "True", "True"], done.stdout + done.stderr
