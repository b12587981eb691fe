"""``safemix generate``'s ``--suite`` flags as config entries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safemix.data.suites import looks_like_path
from safemix.errors import InputError


def suite_entries(suites: Sequence[str], category: str | None, columns: str | None) -> list[Any]:
    """Config entries for ``--suite`` values: names stay strings; files get ``--suite-category``/``--suite-columns``."""
    mapping = parse_columns(columns) if columns else {}
    return [text if not looks_like_path(text) else {"path": text, "category": category, "columns": mapping}
            for text in suites]


def parse_columns(text: str) -> dict[str, str]:
    """Parse ``--suite-columns prompt=question,id=qid`` into a mapping."""
    mapping = {}
    for part in text.split(","):
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise InputError(f"--suite-columns {text!r}: expected FIELD=COLUMN pairs, e.g. prompt=question,id=qid")
        mapping[field.strip()] = column.strip()
    return mapping
