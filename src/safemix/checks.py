"""Small value checks shared by the config models (no imports from the rest of safemix)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def distinct(values: Sequence[T]) -> Sequence[T]:
    """Return ``values`` unchanged if no value repeats; else raise ValueError naming the first repeated one.

    For pydantic field validators: the error becomes ``<dotted.path>: values must be distinct ('x' repeats)``.
    """
    seen: set[T] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"values must be distinct ({value!r} repeats)")
        seen.add(value)
    return values
