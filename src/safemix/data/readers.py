"""Readers that turn data files into validated records, naming the file and record of any problem.

Supported shapes:
- Alpaca JSON or JSONL: ``instruction``, ``input`` (optional), ``output`` (or its alias ``response``);
- the paper's evaluation JSON: ``{"instructions": [...], "inputs": [...]?, "tags": [...]?}``;
- XSTest CSV: ``id, prompt, type, label, ...``;
- any JSONL, JSON list or CSV with a column mapping (``{"instruction": "question", ...}``);
- a Hugging Face ``datasets`` id (needs network unless the dataset is in the local HF cache).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safemix.errors import InputError, input_error
from safemix.records import Instruction, Prompt, PromptCategory

Format = Literal["auto", "alpaca", "eval-json", "xstest-csv", "jsonl", "csv", "json"]

#: Field -> the columns that may hold it, first match wins. Alpaca files name the answer ``output`` or ``response``.
ALPACA_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "instruction": ("instruction",),
    "input": ("input",),
    "output": ("output", "response"),
}
_XSTEST_CATEGORY: Mapping[str, PromptCategory] = {"safe": "safe", "unsafe": "harmful"}


@dataclass(frozen=True)
class Row:
    """One raw record and where it stands in its file (``record 3``, ``line 4``, ``row 5``)."""

    where: str
    values: Mapping[str, Any]


def read_text(path: Path) -> str:
    """Read a UTF-8 file (a BOM is allowed); empty files and undecodable bytes are input errors."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise input_error(path, "file not found") from None
    except IsADirectoryError:
        raise input_error(path, "is a directory, expected a file") from None
    if not data.strip():
        raise input_error(path, "file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise input_error(path, f"not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})", f"line {line}") from None


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise input_error(path, f"invalid JSON: {err.msg}", f"line {err.lineno}, column {err.colno}") from None


def read_rows(path: Path, fmt: Format = "auto") -> list[Row]:
    """Read a JSON list of objects, a JSONL file or a CSV file into rows, keeping each row's location."""
    kind = _container(path, fmt)
    text = read_text(path)
    if kind == "csv":
        return _csv_rows(path, text)
    if kind == "jsonl":
        return _jsonl_rows(path, text)
    value = _parse_json(path, text)
    if not isinstance(value, list):
        raise input_error(path, f"expected a JSON list of records, got a JSON {_json_type(value)}")
    if not value:
        raise input_error(path, "holds no records")
    rows = []
    for index, item in enumerate(value):
        where = f"record {index}"
        if not isinstance(item, dict):
            raise input_error(path, f"expected a JSON object, got {_json_type(item)}", where)
        rows.append(Row(where, item))
    return rows


def _container(path: Path, fmt: Format) -> Literal["csv", "jsonl", "json"]:
    if fmt in ("csv", "xstest-csv"):
        return "csv"
    if fmt in ("jsonl", "json"):
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".csv", ".jsonl", ".json"):
        return suffix[1:]  # type: ignore[return-value]
    raise input_error(path, f"cannot tell the format from the extension {suffix!r}; name it (json, jsonl or csv)")


def _jsonl_rows(path: Path, text: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise input_error(path, f"invalid JSON: {err.msg} (column {err.colno})", where) from None
        if not isinstance(item, dict):
            raise input_error(path, f"expected a JSON object, got {_json_type(item)}", where)
        rows.append(Row(where, item))
    if not rows:
        raise input_error(path, "holds no records")
    return rows


def _csv_rows(path: Path, text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise input_error(path, "has no header row")
    rows = []
    try:
        for record in reader:
            rows.append(Row(f"row {reader.line_num}", {k: v for k, v in record.items() if k is not None}))
    except csv.Error as err:
        raise input_error(path, f"invalid CSV: {err}", f"line {reader.line_num}") from None
    if not rows:
        raise input_error(path, "holds a header but no records")
    return rows


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _field(
    path: Path, row: Row, field: str, columns: tuple[str, ...], *, required: bool, allow_empty: bool = False
) -> str:
    """Return one string field of a row, or raise an input error naming the file, row, field and problem."""
    column = next((name for name in columns if name in row.values), None)
    value = row.values.get(column) if column is not None else None
    shown = column or columns[0]
    if value is None:
        if required:
            raise input_error(path, f"field {shown!r} is missing", row.where)
        return ""
    if not isinstance(value, str):
        raise input_error(path, f"field {shown!r} must be a string, got {_json_type(value)}", row.where)
    if required and not allow_empty and not value.strip():
        raise input_error(path, f"field {shown!r} is empty", row.where)
    return value


def _mapping(columns: Mapping[str, str] | None, defaults: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Merge a user column mapping (field -> column) over the defaults (field -> candidate columns)."""
    merged = dict(defaults)
    for field, column in (columns or {}).items():
        if field not in defaults:
            raise InputError(f"unknown field {field!r} in the column mapping; known fields: {', '.join(defaults)}")
        merged[field] = (column,)
    return merged


def instructions_from_rows(path: Path, rows: list[Row], columns: Mapping[str, str] | None = None) -> list[Instruction]:
    """Validate rows as instruction examples, using Alpaca column names unless ``columns`` maps them."""
    mapping = _mapping(columns, ALPACA_COLUMNS)
    return [
        Instruction(
            instruction=_field(path, row, "instruction", mapping["instruction"], required=True),
            input=_field(path, row, "input", mapping["input"], required=False),
            output=_field(path, row, "output", mapping["output"], required=True),
        )
        for row in rows
    ]


def read_instructions(path: str | Path, fmt: Format = "auto", columns: Mapping[str, str] | None = None) -> list[Instruction]:
    """Read an Alpaca-style JSON/JSONL file, or any JSONL/JSON/CSV with ``columns``, into instruction examples.

    Args:
        path: the file.
        fmt: ``alpaca``, ``jsonl``, ``json``, ``csv`` or ``auto`` (by extension).
        columns: optional mapping of ``instruction``/``input``/``output`` to the file's column names.

    Raises:
        InputError: the file is missing, empty, not UTF-8, not parseable, or a record lacks a field.
    """
    path = Path(path)
    container: Format = "auto" if fmt == "alpaca" else fmt
    return instructions_from_rows(path, read_rows(path, container), columns)


def read_eval_json(path: str | Path, suite: str, category: PromptCategory | None = None) -> list[Prompt]:
    """Read the paper's evaluation JSON: parallel lists ``instructions``, optional ``inputs`` and ``tags``."""
    path = Path(path)
    value = _parse_json(path, read_text(path))
    if not isinstance(value, dict):
        raise input_error(path, f"expected a JSON object with an 'instructions' list, got {_json_type(value)}")
    instructions = value.get("instructions")
    if not isinstance(instructions, list) or not instructions:
        raise input_error(path, "needs a non-empty list", "key 'instructions'")
    inputs = _parallel_list(path, value, "inputs", len(instructions))
    tags = _parallel_list(path, value, "tags", len(instructions))
    prompts = []
    for index, instruction in enumerate(instructions):
        if not isinstance(instruction, str) or not instruction.strip():
            raise input_error(path, "must be a non-empty string", f"instructions[{index}]")
        meta = {"tag": tags[index]} if tags else {}
        prompts.append(
            Prompt(id=f"{suite}-{index}", suite=suite, category=category, prompt=instruction,
                   input=inputs[index] if inputs else "", meta=meta)
        )
    return prompts


def _parallel_list(path: Path, value: dict[str, Any], key: str, length: int) -> list[str]:
    items = value.get(key) or []
    if not isinstance(items, list) or (items and len(items) != length):
        raise input_error(path, f"must be a list of {length} strings (one per instruction) or empty", f"key {key!r}")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise input_error(path, f"must be a string, got {_json_type(item)}", f"{key}[{index}]")
    return items


def read_xstest_csv(path: str | Path, suite: str = "xstest") -> list[Prompt]:
    """Read XSTest's prompt CSV (``id, prompt, type, label, ...``); label ``unsafe`` becomes category ``harmful``."""
    path = Path(path)
    prompts = []
    for row in read_rows(path, "csv"):
        label = _field(path, row, "label", ("label",), required=True)
        if label not in _XSTEST_CATEGORY:
            raise input_error(path, f"field 'label' must be 'safe' or 'unsafe', got {label!r}", row.where)
        meta = {key: str(value) for key, value in row.values.items() if key in ("type", "focus", "note") and value}
        prompts.append(
            Prompt(
                id=f"{suite}-{_field(path, row, 'id', ('id',), required=True)}",
                suite=suite,
                category=_XSTEST_CATEGORY[label],
                prompt=_field(path, row, "prompt", ("prompt",), required=True),
                meta=meta,
            )
        )
    return prompts


def read_prompt_rows(
    path: str | Path,
    suite: str,
    columns: Mapping[str, str],
    fmt: Format = "auto",
    category: PromptCategory | None = None,
) -> list[Prompt]:
    """Read prompts from any JSONL/JSON/CSV: ``columns`` maps ``prompt`` (and optionally ``id``) to columns."""
    path = Path(path)
    mapping = _mapping(columns, {"prompt": ("prompt",), "id": ()})
    prompts = []
    for index, row in enumerate(read_rows(path, fmt)):
        row_id = _field(path, row, "id", mapping["id"], required=False) if mapping["id"] else ""
        prompts.append(
            Prompt(
                id=f"{suite}-{row_id or index}",
                suite=suite,
                category=category,
                prompt=_field(path, row, "prompt", mapping["prompt"], required=True),
            )
        )
    return prompts


def read_hf_instructions(
    dataset_id: str, revision: str | None = None, split: str = "train", columns: Mapping[str, str] | None = None
) -> list[Instruction]:
    """Read instruction examples from a Hugging Face dataset id (network, or the local HF cache)."""
    from datasets import load_dataset  # heavy import, only when asked for

    label = f"hf:{dataset_id}"
    try:
        dataset = load_dataset(dataset_id, revision=revision, split=split)
    except Exception as err:  # datasets raises many types for offline / missing / gated
        raise input_error(label, f"cannot load the Hugging Face dataset ({type(err).__name__}: {err})") from None
    rows = [Row(f"record {index}", item) for index, item in enumerate(dataset)]
    return instructions_from_rows(Path(label), rows, columns)
