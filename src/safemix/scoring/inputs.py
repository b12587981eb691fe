"""Reading what to score: a generations directory or file, or any JSONL / JSON / CSV with named columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safemix.data.readers import Row, read_rows
from safemix.errors import input_error
from safemix.files import sha256_file
from safemix.run_files import DIRECTORY_MANIFEST, GenerationManifest, read_manifest_if_present

#: Fields copied from an input row into its score line, so metrics can group by them.
GROUP_FIELDS: tuple[str, ...] = ("suite", "category")


@dataclass(frozen=True)
class Columns:
    """Which input columns hold the id, prompt and response; ``id=None`` numbers the rows instead."""

    prompt: str = "prompt"
    response: str = "response"
    id: str | None = "id"
    id_given: bool = False


@dataclass(frozen=True)
class ScoreInput:
    """One (prompt, response) to judge, its id, and the fields copied into its score line."""

    id: str
    prompt: str
    response: str
    fields: dict[str, str] = field(default_factory=dict)


def input_files(path: Path) -> list[Path]:
    """A file is itself; a directory means every ``*.jsonl`` in it (a generations directory), sorted."""
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if p.is_file())
        if not files:
            raise input_error(path, "directory holds no *.jsonl files to score")
        return files
    if not path.exists():
        raise input_error(path, "file not found")
    return [path]


def _text(path: Path, row: Row, column: str, option: str) -> str:
    if column not in row.values:
        raise input_error(path, f"column {column!r} is missing (choose another with {option})", row.where)
    value = row.values[column]
    if not isinstance(value, str):
        raise input_error(path, f"column {column!r} must be text, got {type(value).__name__}", row.where)
    return value


def _row_id(path: Path, row: Row, index: int, columns: Columns) -> str:
    if columns.id is not None and (columns.id in row.values or columns.id_given):
        value = row.values.get(columns.id)
        if value is None:
            raise input_error(path, f"column {columns.id!r} is missing (choose another with --id-column)", row.where)
        return str(value)
    return f"{path.stem}-{index}"


def read_score_inputs(path: Path, columns: Columns, prompts_path: Path | None = None) -> list[ScoreInput]:
    """Read every (id, prompt, response) to score from ``path`` (a file or a generations directory).

    Args:
        path: a generations directory, or a JSONL / JSON / CSV file.
        columns: the column names; a missing column is an input error naming the file and row.
        prompts_path: optional file whose ``columns.prompt`` rows pair, by position, with the responses in
            ``path`` (for response files without a prompt column); the counts must match.

    Raises:
        InputError: a missing file or column, mismatched counts, or an id that occurs twice.
    """
    items: list[ScoreInput] = []
    for file in input_files(path):
        rows = read_rows(file)
        prompts = _paired_prompts(prompts_path, columns, len(rows), file) if prompts_path else None
        for index, row in enumerate(rows):
            prompt = prompts[index] if prompts is not None else _text(file, row, columns.prompt, "--prompt-column")
            fields = {name: str(row.values[name]) for name in GROUP_FIELDS if row.values.get(name) is not None}
            items.append(ScoreInput(_row_id(file, row, index, columns), prompt,
                                    _text(file, row, columns.response, "--response-column"), fields))
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise input_error(path, f"id {item.id!r} occurs more than once; ids must be unique (choose --id-column)")
        seen.add(item.id)
    return items


def _paired_prompts(prompts_path: Path, columns: Columns, n_responses: int, responses_file: Path) -> list[str]:
    rows = read_rows(prompts_path)
    if len(rows) != n_responses:
        raise input_error(prompts_path, f"holds {len(rows)} prompts but {responses_file} holds {n_responses} responses")
    return [_text(prompts_path, row, columns.prompt, "--prompt-column") for row in rows]


def generations_model_name(path: Path) -> str:
    """Name the model that wrote the responses, from the generations manifest written by ``safemix generate``.

    ``settings.model.name``, plus ``+<adapter path>`` when an adapter was loaded; without such a manifest, the
    name of the input's folder.
    """
    folder = path if path.is_dir() else path.parent
    manifest = read_manifest_if_present(folder / DIRECTORY_MANIFEST, GenerationManifest)
    name = manifest.model_name() if manifest is not None else None
    return name or folder.resolve().name


def input_checksums(path: Path, prompts_path: Path | None) -> dict[str, str]:
    """sha256 of every file read, for the manifest, keyed by the file's name within the input (never its location,
    so a moved or copied run directory holds the same judgements); the prompts file as ``prompts/<name>``."""
    base = path if path.is_dir() else path.parent
    checksums = {file.relative_to(base).as_posix(): sha256_file(file) for file in input_files(path)}
    if prompts_path:
        checksums[f"prompts/{prompts_path.name}"] = sha256_file(prompts_path)
    return checksums

