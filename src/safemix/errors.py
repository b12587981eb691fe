"""Errors that the CLI turns into one line and an exit code."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


class InputError(Exception):
    """Bad input or usage: the CLI prints the message on one line and exits with code 2.

    The message names the file (and the record, line or key) and the problem, for example
    ``data/train.jsonl: line 3: field 'output' is missing``.
    """


def input_error(path: str | Path, problem: str, where: str | None = None) -> InputError:
    """Build an :class:`InputError` that names ``path``, optionally a ``where`` (record, line, key), and the problem."""
    location = f"{path}: {where}: " if where else f"{path}: "
    return InputError(location + problem)


def validation_problems(err: ValidationError, within: str = "") -> list[str]:
    """One ``dotted.path: message`` line per problem of a pydantic validation error (the message alone for a
    problem with no path, such as invalid JSON; pydantic's ``Value error, `` prefix dropped). ``within`` is the
    dotted path of what was validated, put before each problem's own path."""
    lines = []
    for item in err.errors():
        path = ".".join([*filter(None, [within]), *(str(part) for part in item["loc"])])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return lines


def first_problem(err: ValidationError, within: str = "") -> str:
    """The first ``dotted.path: message`` of a validation error: what a one-line error message shows."""
    return validation_problems(err, within)[0]


def setting_problem(err: ValidationError) -> str:
    """The first problem of a settings model's validation error, as ``setting KEY: message`` (the message alone
    when it concerns the settings as a whole)."""
    return ("setting " if err.errors()[0]["loc"] else "") + first_problem(err)
