"""The generation output directory: ``<suite>.jsonl`` files appended batch by batch, and ``manifest.json``
(:class:`~safemix.run_files.GenerationManifest`).

While a suite runs, answers are appended in the order batches finish and flushed to disk, so ``kill -9`` loses
at most the batch in flight. A rerun reads what is there (dropping a torn last line), answers only the missing
ids, and rewrites the file atomically in suite order once every id is present, so a resumed run ends with the
same bytes as an uninterrupted one. A directory keeps the settings it was started with: a run with other
settings is refused unless ``--overwrite``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from safemix.data.readers import read_rows
from safemix.data.suites import Suite
from safemix.errors import InputError, first_problem, input_error
from safemix.files import write_jsonl_atomic
from safemix.records import Generation
from safemix.run_files import DIRECTORY_MANIFEST, GenerationManifest, read_manifest_if_present

log = logging.getLogger(__name__)

def suite_file(out_dir: Path, suite_name: str) -> Path:
    """The output file of one suite."""
    return out_dir / f"{suite_name}.jsonl"


#: Flattened settings that say where an input lives, not what it is.
LOCATION_KEYS = frozenset({"adapter.path"})


def open_run_dir(out_dir: Path, settings: dict[str, Any], suites: list[Suite], *,
                 overwrite: bool) -> GenerationManifest | None:
    """Check ``out_dir`` against this run and return the manifest to continue from (None for a fresh run).

    Args:
        out_dir: the output directory (created if missing).
        settings: what decides the answers (model, adapter, template, decoding); must match a previous run.
        suites: the suites of this run; a suite already in the directory must hold the same prompts.
        overwrite: delete a previous run's suite files and manifest instead of refusing them.

    Raises:
        InputError: the directory holds a run with other settings or other prompts, or suite files without a
            manifest, and ``overwrite`` is off.
    """
    manifest_path = out_dir / DIRECTORY_MANIFEST
    previous = read_manifest(out_dir)
    if overwrite:
        stale = set(previous.suites) if previous else set()
        for name in stale | {suite.name for suite in suites}:
            suite_file(out_dir, name).unlink(missing_ok=True)
        manifest_path.unlink(missing_ok=True)
        return None
    if previous is None:
        for suite in suites:
            if suite_file(out_dir, suite.name).exists():
                raise input_error(suite_file(out_dir, suite.name),
                                  f"exists but {manifest_path} does not; use --overwrite or another --out")
        return None
    difference = settings_difference(previous.settings, settings)
    if difference:
        raise input_error(out_dir, f"holds a run with other settings ({difference}); use --overwrite or another --out")
    for suite in suites:
        known = previous.suites.get(suite.name)
        if known is not None and known.prompts_sha256 != suite.sha256:
            raise input_error(out_dir, f"suite {suite.name!r} was generated from other prompts "
                                       "(its prompts_sha256 differs); use --overwrite or another --out")
    return previous


def read_manifest(out_dir: Path) -> GenerationManifest | None:
    """The manifest of the generation run in ``out_dir``, or None when there is none.

    Raises:
        InputError: ``manifest.json`` is not a generation manifest.
    """
    try:
        return read_manifest_if_present(out_dir / DIRECTORY_MANIFEST, GenerationManifest)
    except InputError as err:
        raise InputError(f"{err} (not a generation manifest); use --overwrite or another --out") from None


def settings_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Describe the first setting that differs (``decoding.num_beams: 1 -> 4``) and how many more; '' if none.

    Where a file lives (:data:`LOCATION_KEYS`) is recorded but is not a setting: the adapter counts by its sha256,
    so answers made in a run directory that was then moved or copied are still these answers.
    """
    old_flat, new_flat = _flatten(old), _flatten(new)
    changed = sorted(key for key in old_flat.keys() | new_flat.keys()
                     if key not in LOCATION_KEYS and old_flat.get(key) != new_flat.get(key))
    if not changed:
        return ""
    first = changed[0]
    more = f", and {len(changed) - 1} more" if len(changed) > 1 else ""
    return f"{first}: {old_flat.get(first)!r} -> {new_flat.get(first)!r}{more}"


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def read_done(path: Path, suite: Suite) -> dict[str, Generation]:
    """Read the answers already in a suite file, id -> record; a torn last line (from ``kill -9``) is cut off.

    Raises:
        InputError: a complete line that is not a valid record, an id twice, or an id not in the suite.
    """
    if not path.exists():
        return {}
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(data) - complete)
        with open(path, "r+b") as handle:
            handle.truncate(complete)
    suite_ids = {prompt.id for prompt in suite.prompts}
    done: dict[str, Generation] = {}
    for number, line in enumerate(data[:complete].decode("utf-8").splitlines(), start=1):
        try:
            record = Generation.model_validate_json(line)
        except ValidationError as err:
            raise input_error(path, f"not a generation record ({first_problem(err)}); use --overwrite",
                              f"line {number}") from None
        if record.id not in suite_ids:
            raise input_error(path, f"id {record.id!r} is not in suite {suite.name!r}; use --overwrite", f"line {number}")
        if record.id in done:
            raise input_error(path, f"id {record.id!r} appears twice; use --overwrite", f"line {number}")
        done[record.id] = record
    return done


def generation_line(record: Generation) -> str:
    """One JSONL line: the record's fields in declaration order."""
    return json.dumps(record.model_dump(mode="json"), ensure_ascii=False) + "\n"


def append_records(handle: IO[str], records: Iterable[Generation]) -> None:
    """Append records and push them to disk, so that a crash after this call keeps them."""
    handle.write("".join(generation_line(record) for record in records))
    handle.flush()
    os.fsync(handle.fileno())


def finalize_suite(path: Path, suite: Suite, done: dict[str, Generation]) -> None:
    """Rewrite a finished suite file atomically in suite order (resumed and uninterrupted runs give equal bytes)."""
    missing = [prompt.id for prompt in suite.prompts if prompt.id not in done]
    if missing:
        raise RuntimeError(f"{path}: {len(missing)} prompt(s) have no answer, first {missing[0]!r}")
    write_jsonl_atomic(path, (done[prompt.id].model_dump(mode="json") for prompt in suite.prompts))


def read_generations(path: Path) -> list[Generation]:
    """Read one generations file (``safemix generate`` records) in file order; prompt ids must be unique.

    Raises:
        InputError: the file is missing or unreadable, a line is not a generation record, or an id repeats.
    """
    records: list[Generation] = []
    seen: set[str] = set()
    for row in read_rows(path, "jsonl"):
        try:
            record = Generation.model_validate(dict(row.values))
        except ValidationError as err:
            raise input_error(path, f"not a generation record ({first_problem(err)})", row.where) from None
        if record.id in seen:
            raise input_error(path, f"prompt id {record.id!r} occurs more than once", row.where)
        seen.add(record.id)
        records.append(record)
    return records

