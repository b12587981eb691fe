"""The offline capability tasks: lm-eval task YAMLs shipped in the package, pointed at the data dir's JSONL files.

The shipped YAMLs (``safemix/capability/tasks/<task>.yaml``) define each task the way lm-eval's built-in task
does (prompt, choices, metrics) but over the LLM Foundry JSONL layout of ``capability-benchmarks/``. They name no
file: before a run, :func:`write_local_task` adds the resolved data file (and a datasets cache) and writes the
complete YAML into the output directory, which lm-eval then loads with ``TaskManager(include_path=...)``. The
written YAML records exactly what ran. No torch, no lm-eval here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from safemix.capability.config import TASK_SOURCES
from safemix.data.catalog import cache_dir, fetch, get_source, local_path, offline
from safemix.data.readers import read_rows
from safemix.errors import input_error
from safemix.files import sha256_text, write_text_atomic

# The (text, list) fields each local task reads from a JSONL line; ``gold`` indexes the list field.
_MULTIPLE_CHOICE = ("query", "choices")
_SCHEMA = ("continuation", "context_options")
TASK_FIELDS: dict[str, tuple[str, str]] = dict.fromkeys(TASK_SOURCES, _MULTIPLE_CHOICE) | {"winogrande": _SCHEMA}


def shipped_task_text(task: str) -> str:
    """The YAML text of a shipped task definition."""
    return resources.files("safemix.capability").joinpath("tasks", f"{task}.yaml").read_text(encoding="utf-8")


def task_definition_sha256(task: str) -> str:
    """The sha256 of a shipped task definition: a changed prompt or metric makes earlier results stale."""
    return sha256_text(shipped_task_text(task))


def local_data_file(task: str, data_dir: Path | None) -> Path:
    """The verified JSONL file of a local task: from the data dir or the cache, else downloaded when allowed.

    Raises:
        InputError: the file is absent and downloads are off (the message names the file and the fetch command),
            or its sha256 differs from the catalog's.
    """
    source = get_source(TASK_SOURCES[task])
    found = local_path(source, data_dir)
    if found is not None:
        return found
    if offline():
        expected = (data_dir if data_dir is not None else cache_dir()) / source.mirror_path
        raise input_error(expected, f"missing: capability task {task!r} reads it; run 'safemix data fetch "
                                    f"{source.name}' online (or set capability.source: harness)")
    return fetch(source)


def check_local_file(task: str, path: Path, limit: int | None) -> int:
    """Check the rows a task will read (the first ``limit``, or all) and return the file's row count.

    Raises:
        InputError: naming the file and line of a row without the task's fields or with a ``gold`` out of range.
    """
    rows = read_rows(path, "jsonl")
    text_field, list_field = TASK_FIELDS[task]
    for row in rows[:limit]:
        for field in (text_field, list_field, "gold"):
            if field not in row.values:
                raise input_error(path, f"field {field!r} is missing (task {task!r})", row.where)
        options, gold = row.values[list_field], row.values["gold"]
        if not isinstance(options, list) or len(options) < 2:
            raise input_error(path, f"field {list_field!r} must be a list of at least 2 strings", row.where)
        if not isinstance(gold, int) or not 0 <= gold < len(options):
            raise input_error(path, f"field 'gold' must be an index into {list_field!r} (0..{len(options) - 1})",
                              row.where)
    return len(rows)


def local_task_config(task: str, data_file: Path, datasets_cache: Path) -> dict[str, Any]:
    """The complete task config: the shipped definition plus the data file as its ``test`` split."""
    config: dict[str, Any] = yaml.safe_load(shipped_task_text(task))
    config["dataset_kwargs"] = {"data_files": {"test": str(data_file)}, "cache_dir": str(datasets_cache)}
    return config


def write_local_task(task: str, data_file: Path, datasets_cache: Path, tasks_dir: Path) -> Path:
    """Write ``tasks_dir/<task>.yaml`` for lm-eval's ``TaskManager(include_path=tasks_dir)``; return its path."""
    path = tasks_dir / f"{task}.yaml"
    text = yaml.safe_dump(local_task_config(task, data_file, datasets_cache), sort_keys=False, allow_unicode=True)
    write_text_atomic(path, f"# written by safemix from safemix/capability/tasks/{task}.yaml\n{text}")
    return path
