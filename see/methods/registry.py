"""Method name -> class, filled by the `register` decorator (as lm-eval does for tasks).

Import `get_method` from `see.methods`: importing that package registers every method."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from see.methods.base import CompressedEmbedding

METHODS: dict[str, type[CompressedEmbedding]] = {}


def register(name: str):
    def wrap(cls):
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def get_method(name: str) -> type[CompressedEmbedding]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered methods: {sorted(METHODS)}")
    return METHODS[name]
