"""Turning task arguments and results into JSON and back, naming the field that does not fit.

Arguments may be dataclasses, TypedDicts, pydantic models (when pydantic is installed) or
plain JSON values. Decoding checks what it can see: required fields present, no unknown
fields, and the basic types (str, int, float, bool, list, dict, nested dataclasses,
Optional) of each field, so a payload a producer got wrong fails naming the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union


class DecodeError(ValueError):
    """Arguments or a result that do not fit their type; ``field`` is the path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field `{field}`: {message}" if field else message)
        self.field = field
        self.message = message


def to_json(value: Any) -> Any:
    """A JSON-ready value for ``value``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def from_json(kind: Any, data: Any, path: str = "") -> Any:
    """``data`` as ``kind``; :class:`DecodeError` naming the field when it does not fit."""
    if kind is Any or kind is None or kind is typing.Any:
        return data
    validate = getattr(kind, "model_validate", None)
    if callable(validate):
        try:
            return validate(data)
        except Exception as err:  # pydantic's ValidationError names its fields
            raise DecodeError(path, str(err)) from err
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _dataclass(kind, data, path)
    if _is_typeddict(kind):
        return _typeddict(kind, data, path)
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return from_json(option, data, path)
            except DecodeError as err:
                errors.append(err.message)
        raise DecodeError(path, " or ".join(errors))
    if origin in (list, tuple):
        if not isinstance(data, list):
            raise DecodeError(path, f"expected a list, got {_name(data)}")
        (item,) = typing.get_args(kind)[:1] or (Any,)
        return [from_json(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
    if origin is dict or kind is dict:
        if not isinstance(data, dict):
            raise DecodeError(path, f"expected an object, got {_name(data)}")
        args = typing.get_args(kind)
        value = args[1] if len(args) == 2 else Any
        return {k: from_json(value, v, _join(path, k)) for k, v in data.items()}
    if kind is list:
        if not isinstance(data, list):
            raise DecodeError(path, f"expected a list, got {_name(data)}")
        return data
    if kind is bool:
        if not isinstance(data, bool):
            raise DecodeError(path, f"expected a boolean, got {_name(data)}")
        return data
    if kind is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise DecodeError(path, f"expected an integer, got {_name(data)}")
        return data
    if kind is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise DecodeError(path, f"expected a number, got {_name(data)}")
        return float(data)
    if kind is str:
        if not isinstance(data, str):
            raise DecodeError(path, f"expected a string, got {_name(data)}")
        return data
    return data


def _dataclass(kind: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise DecodeError(path, f"expected an object for {kind.__name__}, got {_name(data)}")
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DecodeError(_join(path, unknown[0]), f"unknown field for {kind.__name__}")
    values = {}
    for name, field in fields.items():
        if name not in data:
            has_default = (
                field.default is not dataclasses.MISSING
                or field.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise DecodeError(_join(path, name), "missing")
        values[name] = from_json(hints.get(name, Any), data[name], _join(path, name))
    return kind(**values)


def _typeddict(kind: Any, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise DecodeError(path, f"expected an object, got {_name(data)}")
    hints = typing.get_type_hints(kind)
    required = getattr(kind, "__required_keys__", frozenset(hints))
    for name in sorted(required):
        if name not in data:
            raise DecodeError(_join(path, name), "missing")
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise DecodeError(_join(path, unknown[0]), "unknown field")
    return {k: from_json(hints[k], v, _join(path, k)) for k, v in data.items()}


def _is_typeddict(kind: Any) -> bool:
    return typing.is_typeddict(kind)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _name(data: Any) -> str:
    if data is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(data), type(data).__name__)
