"""The records: those of DEFERRED are defined on first use (the same classes, looked up as before), and the
JSON records' equality, hash and repr (defined once on their base) are what dataclass would generate."""

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


def _json_records() -> list[type]:
    found = [getattr(records, name) for name in (*dir(records), *records.DEFERRED)]
    return sorted(
        {
            r
            for r in found
            if isinstance(r, type) and issubclass(r, records._JsonRecord) and r is not records._JsonRecord
        },
        key=lambda r: r.__name__,
    )


def test_json_records_compare_hash_and_show_as_generated_dataclasses_do() -> None:
    checked = _json_records()
    assert {"Task", "ListedTask", "Execution", "NextRun", "Calendar", "Incident"} <= {
        r.__name__ for r in checked
    }
    for record in checked:
        names = [field.name for field in dataclasses.fields(record)]
        reference = dataclasses.make_dataclass(record.__name__, names, frozen=True)  # generated methods
        reference.__qualname__ = record.__qualname__
        values = {name: n for n, name in enumerate(names)}
        other = {**values, names[-1]: "changed"}
        one, same, different = record(**values), record(**values), record(**other)
        expected, expected_other = reference(**values), reference(**other)
        assert repr(one) == repr(expected)
        assert hash(one) == hash(expected) == hash(same)
        assert one == same
        assert (one != same) is False
        assert one != different and (one == different) == (expected == expected_other)
        assert one.__eq__(expected) is NotImplemented  # another class: never equal
        assert one != expected
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(one, names[0], 1)


def test_a_subclass_record_is_not_equal_to_its_base_and_unhashable_values_stay_unhashable() -> None:
    from scheduler.records import ListedTask, Task

    names = [field.name for field in dataclasses.fields(Task)]
    task = Task(**{name: n for n, name in enumerate(names)})
    listed = ListedTask(**{name: n for n, name in enumerate(names)}, last_outcome=None)
    assert task != listed and listed != task
    with pytest.raises(TypeError, match="unhashable"):
        hash(Task(**{name: n for n, name in enumerate(names)} | {"data": {}}))


def test_a_record_that_contains_itself_shows_as_dataclass_repr_does() -> None:
    from scheduler.records import LogLine

    names = [field.name for field in dataclasses.fields(LogLine)]
    box: list[object] = []
    line = LogLine(**{name: n for n, name in enumerate(names)} | {"message": box})  # type: ignore[arg-type]
    box.append(line)
    assert repr(line).endswith("message=[...])")
