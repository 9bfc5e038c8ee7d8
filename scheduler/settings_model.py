"""The declarative base of the settings object: typed class attributes with defaults, checked on construction.

:class:`scheduler.settings.Settings` is declared as it was on pydantic (``name: int = Field(100, ge=1,
description=...)``, ``@field_validator``) and validated like pydantic's lax mode for the types settings use:
``int``, ``float``, ``str``, ``Path``, ``Literal[...]``, ``X | None`` and ``dict[str, list[str]]``; text from
an environment variable is parsed (``" 5 "`` -> 5, ``"5.0"`` -> 5, ``"2.5"`` -> 2.5), anything else of the
wrong kind is refused with pydantic's wording (``Input should be greater than or equal to 1``). Why not
pydantic itself: importing it (with pydantic-core and annotated-types) cost every CLI call ~0.06 s, a sixth of
``scheduler:list``; this module imports nothing but the standard library.
"""

from __future__ import annotations

import operator
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar, dataclass_transform, get_args, get_origin

_MISSING: Any = object()  # no default (a required field)
NOT_INT = "Input should be a valid integer"
NOT_NUMBER = "Input should be a valid number"
_INT_TEXT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?")

T = TypeVar("T")


class SettingsValidationError(ValueError):
    """The first bad value: ``loc`` (the field, then keys and indexes inside it) and ``msg`` (pydantic's
    wording)."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc = loc
        self.msg = msg


@dataclass(frozen=True)
class FieldInfo:
    """One declared setting: its default (or factory), limits, description, and after the class is built its
    name, camelCase alias and resolved annotation."""

    default: Any = _MISSING
    default_factory: Callable[[], Any] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    description: str | None = None
    alias: str | None = None
    annotation: Any = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None

    def default_value(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default


def Field(  # pydantic's name, so declarations read (and merge) as they did
    default: Any = _MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    description: str | None = None,
) -> Any:
    """A setting's default and limits (a subset of pydantic's ``Field``, same names and meaning)."""
    return FieldInfo(
        default=default,
        default_factory=default_factory,
        ge=ge,
        gt=gt,
        le=le,
        lt=lt,
        min_length=min_length,
        max_length=max_length,
        pattern=pattern,
        description=description,
    )


def field_validator(*names: str) -> Callable[[T], T]:
    """Run the decorated classmethod on the named fields' values once their type is checked (as pydantic's
    ``field_validator``, mode "after"): it returns the value to keep or raises ``ValueError``."""

    def mark(method: T) -> T:
        method.__validates__ = names  # type: ignore[attr-defined]
        return method

    return mark


def to_camel(name: str) -> str:
    """``max_concurrent_tasks`` -> ``maxConcurrentTasks`` (the spec's YAML keys)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _coerce_int(value: Any, loc: tuple[str | int, ...]) -> int:
    if isinstance(value, int):
        return int(value)  # bool too, as pydantic's lax mode: True -> 1
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise SettingsValidationError(
            loc, "Input should be a valid integer, got a number with a fractional part"
        )
    if isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text):
            return int(text.partition(".")[0])
        raise SettingsValidationError(
            loc, "Input should be a valid integer, unable to parse string as an integer"
        )
    raise SettingsValidationError(loc, "Input should be a valid integer")


def _coerce_float(value: Any, loc: tuple[str | int, ...]) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
        raise SettingsValidationError(
            loc, "Input should be a valid number, unable to parse string as a number"
        )
    raise SettingsValidationError(loc, "Input should be a valid number")


def _coerce_str(value: Any, loc: tuple[str | int, ...]) -> str:
    if isinstance(value, str):
        return value
    raise SettingsValidationError(loc, "Input should be a valid string")


def _coerce_path(value: Any, loc: tuple[str | int, ...]) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    raise SettingsValidationError(loc, "Input is not a valid path for <class 'pathlib.Path'>")


def _coerce_bool(value: Any, loc: tuple[str | int, ...]) -> bool:
    """Pydantic's lax booleans: True/False, 1/0, and their usual words (an environment variable's text)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in ("1", "true", "yes", "on", "y", "t"):
        return True
    if text in ("0", "false", "no", "off", "n", "f"):
        return False
    raise SettingsValidationError(loc, "Input should be a valid boolean")


_SCALARS: dict[Any, Callable[[Any, tuple[str | int, ...]], Any]] = {
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    str: _coerce_str,
    Path: _coerce_path,
}


def coerce(annotation: Any, value: Any, loc: tuple[str | int, ...]) -> Any:
    """``value`` as ``annotation`` (the types a setting may have), or :class:`SettingsValidationError`."""
    if annotation in _SCALARS:
        return _SCALARS[annotation](value, loc)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        if value in args and any(type(value) is type(arg) for arg in args):
            return value
        choices = [repr(arg) for arg in args]
        joined = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise SettingsValidationError(loc, f"Input should be {joined}")
    if type(None) in args:  # X | None
        if value is None:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return coerce(inner, value, loc)
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsValidationError(loc, "Input should be a valid dictionary")
        key_type, value_type = args
        result = {}
        for key, item in value.items():
            result[coerce(key_type, key, (*loc, key, "[key]"))] = coerce(value_type, item, (*loc, key))
        return result
    if isinstance(annotation, type) and issubclass(annotation, SettingsModel):  # a nested model
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise SettingsValidationError(loc, "Input should be a valid dictionary")
        try:
            return annotation(**value)
        except SettingsValidationError as error:
            raise SettingsValidationError((*loc, *error.loc), error.msg) from None
    if origin is list:
        if not isinstance(value, list | tuple):
            raise SettingsValidationError(loc, "Input should be a valid list")
        return [coerce(args[0], item, (*loc, index)) for index, item in enumerate(value)]
    raise TypeError(f"{loc[0]}: settings of type {annotation!r} are not supported")


def check_limits(info: FieldInfo, value: Any, loc: tuple[str | int, ...]) -> None:
    """Pydantic's constraint errors for ``value`` (after coercion); None is not checked."""
    if value is None:
        return
    if isinstance(value, int | float):
        bounds = (  # pydantic's order: a NaN is reported as above the upper bound
            (info.le, operator.le, "less than or equal to"),
            (info.lt, operator.lt, "less than"),
            (info.ge, operator.ge, "greater than or equal to"),
            (info.gt, operator.gt, "greater than"),
        )
        for limit, holds, words in bounds:
            if limit is not None and not holds(value, limit):
                raise SettingsValidationError(loc, f"Input should be {words} {_number(limit)}")
    if isinstance(value, str):
        if info.min_length is not None and len(value) < info.min_length:
            plural = "" if info.min_length == 1 else "s"
            raise SettingsValidationError(
                loc, f"String should have at least {info.min_length} character{plural}"
            )
        if info.max_length is not None and len(value) > info.max_length:
            plural = "" if info.max_length == 1 else "s"
            raise SettingsValidationError(
                loc, f"String should have at most {info.max_length} character{plural}"
            )
        if info.pattern is not None and not re.search(info.pattern, value):
            raise SettingsValidationError(loc, f"String should match pattern '{info.pattern}'")


# Field is no field specifier here: mypy would then see only keyword defaults (ours are positional).
@dataclass_transform(kw_only_default=True, frozen_default=True)
class SettingsModel:
    """Base of a frozen settings class: keyword construction (by name or camelCase alias), every value
    coerced and checked in declaration order (the first bad one raises), unknown keys refused."""

    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _validators: ClassVar[dict[str, list[str]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls)
        fields: dict[str, FieldInfo] = {}
        for name in cls.__annotations__:
            if name.startswith("_") or get_origin(hints[name]) is ClassVar:
                continue
            declared = cls.__dict__.get(name, _MISSING)
            info = declared if isinstance(declared, FieldInfo) else FieldInfo(default=declared)
            fields[name] = FieldInfo(**{**info.__dict__, "alias": to_camel(name), "annotation": hints[name]})
            if name in cls.__dict__:
                delattr(cls, name)  # instances hold the values; the class keeps model_fields
        cls.model_fields = {**cls.model_fields, **fields}
        marks: dict[str, tuple[str, ...]] = {}  # attribute -> the fields it validates (a subclass overrides)
        for klass in reversed(cls.__mro__):
            for attribute, member in vars(klass).items():
                # The mark is on the classmethod object, or on its function when @classmethod came outermost.
                marked = getattr(member, "__validates__", None) or getattr(
                    getattr(member, "__func__", None), "__validates__", None
                )
                marks[attribute] = tuple(marked or ())
        validators: dict[str, list[str]] = {}
        for attribute, names in marks.items():
            for name in names:
                validators.setdefault(name, []).append(attribute)
        cls._validators = validators

    def __init__(self, **values: Any) -> None:
        by_alias = {info.alias: name for name, info in self.model_fields.items()}
        named = {by_alias.get(key, key): value for key, value in values.items()}
        for name, info in self.model_fields.items():
            if name in named:
                value = named.pop(name)
            elif info.required:
                raise SettingsValidationError((name,), "Field required")
            else:
                value = info.default_value()
            value = coerce(info.annotation, value, (name,))
            check_limits(info, value, (name,))
            for attribute in self._validators.get(name, ()):
                try:
                    value = getattr(self, attribute)(value)
                except ValueError as error:
                    raise SettingsValidationError((name,), f"Value error, {error}") from None
            object.__setattr__(self, name, value)
        for extra in named:
            raise SettingsValidationError((extra,), "Extra inputs are not permitted")

    @classmethod
    def model_validate(cls, values: dict[str, Any]) -> Self:
        return cls(**values)

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A copy with ``update`` applied (and validated, unlike pydantic's)."""
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**current, **(update or {})})

    def model_dump(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields}

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    def __hash__(self) -> int:
        return hash(tuple(self.model_dump().values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.model_dump().items())
        return f"{type(self).__name__}({fields})"
