"""The keys a config model accepts at a place in the file, for "did you mean ...?".

pydantic says a key is unknown but not which keys would have been right; this walks the
model along the error's location (through optionals, unions, lists and mappings) to the
models that could sit there and returns their keys as the file spells them (aliases).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel


def did_you_mean(model: Any, loc: Sequence[str | int]) -> str:
    """`` (did you mean X?)`` for the unknown key at the end of ``loc``, or ''."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], sorted(known_keys(model, loc[:-1])), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def known_keys(model: Any, loc: Sequence[str | int]) -> set[str]:
    """Every key a model that may sit at ``loc`` accepts."""
    nodes: list[Any] = [model]
    for part in loc:
        nodes = [inner for node in nodes for inner in _step(node, part)]
    return {key for node in nodes for cls in _models(node) for key in _keys(cls)}


def _step(node: Any, part: str | int) -> Iterator[Any]:
    """What sits at ``part`` inside ``node``: a field of a model, an item of a list, a value
    of a mapping."""
    for tp in _flat(node):
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            for name, info in tp.model_fields.items():
                if part in (name, info.alias):
                    yield info.annotation
        origin = get_origin(tp)
        if origin in (list, tuple, Sequence) and isinstance(part, int):
            yield from get_args(tp)[:1]
        elif origin is dict and isinstance(part, str):
            yield from get_args(tp)[1:2]


def _flat(tp: Any) -> Iterator[Any]:
    """``tp`` without ``Annotated``, ``Optional`` and unions: each type it may be."""
    origin = get_origin(tp)
    if origin is Annotated:
        yield from _flat(get_args(tp)[0])
    elif origin in (Union, types.UnionType):
        for arg in get_args(tp):
            yield from _flat(arg)
    else:
        yield tp


def _models(tp: Any) -> Iterator[type[BaseModel]]:
    for flat in _flat(tp):
        if isinstance(flat, type) and issubclass(flat, BaseModel):
            yield flat


def _keys(cls: type[BaseModel]) -> Iterator[str]:
    for name, info in cls.model_fields.items():
        yield info.alias or name
