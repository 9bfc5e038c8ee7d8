"""Skews this process's wall clock by ``SCHEDULER_TEST_CLOCK_SKEW_S`` seconds (the clock-skew fault test).

On ``PYTHONPATH`` it is imported at interpreter start-up, before any module reads the clock: ``time.time``,
``time.time_ns``, ``datetime.now``/``utcnow``/``today`` and ``date.today`` are offset. The monotonic clock is
left alone (a skewed wall clock does not change how fast time passes). Values made elsewhere (database
drivers) stay real ``datetime`` instances, and ``isinstance`` accepts both.
"""

from __future__ import annotations

import datetime as _datetime
import os
import time as _time

_SKEW_S = float(os.environ.get("SCHEDULER_TEST_CLOCK_SKEW_S", "0") or 0)

if _SKEW_S:
    _real_time, _real_time_ns = _time.time, _time.time_ns
    _RealDatetime, _RealDate = _datetime.datetime, _datetime.date
    _OFFSET = _datetime.timedelta(seconds=_SKEW_S)

    def _time_skewed() -> float:
        return _real_time() + _SKEW_S

    def _time_ns_skewed() -> int:
        return _real_time_ns() + int(_SKEW_S * 1e9)

    class _AcceptReal(type):
        def __instancecheck__(cls, instance: object) -> bool:
            return isinstance(instance, _RealDatetime)

        def __subclasscheck__(cls, subclass: type) -> bool:
            return issubclass(subclass, _RealDatetime)

    class _SkewedDatetime(_RealDatetime, metaclass=_AcceptReal):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def]
            return _RealDatetime.now(tz) + _OFFSET

        @classmethod
        def utcnow(cls):  # type: ignore[no-untyped-def]
            return _RealDatetime.now(_datetime.UTC).replace(tzinfo=None) + _OFFSET

        @classmethod
        def today(cls):  # type: ignore[no-untyped-def]
            return _RealDatetime.now() + _OFFSET

    class _AcceptRealDate(type):
        def __instancecheck__(cls, instance: object) -> bool:
            return isinstance(instance, _RealDate)

        def __subclasscheck__(cls, subclass: type) -> bool:
            return issubclass(subclass, _RealDate)

    class _SkewedDate(_RealDate, metaclass=_AcceptRealDate):
        @classmethod
        def today(cls):  # type: ignore[no-untyped-def]
            return (_RealDatetime.now() + _OFFSET).date()

    _time.time = _time_skewed
    _time.time_ns = _time_ns_skewed
    _datetime.datetime = _SkewedDatetime  # type: ignore[misc]
    _datetime.date = _SkewedDate  # type: ignore[misc]
