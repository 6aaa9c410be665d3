"""Config dataclasses check their own fields: each value has its annotated type.

A run config is read from TOML or YAML, where ``dim = "32"`` is a string and
``n_layers = true`` a boolean. Python would carry either into the model and fail
far from the file (or, worse, not fail: ``True`` is the integer 1). Each config
dataclass calls :func:`check_fields` first thing in ``__post_init__``, so a
wrong value is refused where it is written, with the table and key in the
message::

    model.dim must be a whole number, got '32' (a string)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from lifelong.errors import ConfigError

_KIND = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string",
         dict: "a table (key = value pairs)", list: "a list", tuple: "a list"}


def check_fields(obj: Any, table: str) -> None:
    """ConfigError naming ``table.key`` for the first field whose value does not
    have the field's annotated type. ``int`` refuses booleans and fractions;
    ``float`` takes whole numbers but refuses NaN and infinities."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        expected = hints.get(f.name, Any)
        if not _matches(value, expected):
            raise ConfigError(f"{table}.{f.name} must be {_describe(expected)}, got {value!r} ({_kind(value)})",
                              hint=f"set {table}.{f.name} to {_describe(expected)}")


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if tp is str:
        return isinstance(value, str)
    if origin is dict or tp is dict:
        key_type = (typing.get_args(tp) or (Any,))[0]
        return isinstance(value, dict) and all(_matches(k, key_type) for k in value)
    if origin in (list, tuple) or tp in (list, tuple):
        return isinstance(value, (list, tuple))
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a type this checker does not know: the dataclass checks it itself


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(parts) + (" (or left out)" if type(None) in typing.get_args(tp) else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return _KIND.get(origin or tp, getattr(tp, "__name__", str(tp)))


_NOUN = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a table",
         list: "a list", tuple: "a list", type(None): "nothing"}


def _kind(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    return _NOUN.get(type(value), type(value).__name__)
