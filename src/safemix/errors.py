"""Errors that the CLI turns into one line and an exit code."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input or usage: the CLI prints the message on one line and exits with code 2.

    The message names the file (and the record, line or key) and the problem, for example
    ``data/train.jsonl: line 3: field 'output' is missing``.
    """


def input_error(path: str | Path, problem: str, where: str | None = None) -> InputError:
    """Build an :class:`InputError` that names ``path``, optionally a ``where`` (record, line, key), and the problem."""
    location = f"{path}: {where}: " if where else f"{path}: "
    return InputError(location + problem)
