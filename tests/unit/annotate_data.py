"""Small generations files for the annotation tests, and a way to see (as the test, never the page) who wrote what."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from safemix.annotate.store import Study

HOSTILE = "<script>alert('xss')</script><img src=x onerror=\"alert(1)\"> & </div><b>not bold</b>"


def write_generations(path: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    """Write Generation lines (id, suite, category, prompt, response) to ``path``; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for prompt_id, suite, category, prompt, response in rows:
            handle.write(json.dumps({"id": prompt_id, "suite": suite, "category": category, "prompt": prompt,
                                     "response": response, "finish_reason": "stop", "n_new_tokens": 3}) + "\n")
    return path


def two_models(root: Path, n_harmful: int = 6, n_safe: int = 4) -> list[Path]:
    """Directories ``root/m1`` and ``root/m2``, each with ``harm.jsonl`` and ``safe.jsonl``, same prompts."""
    dirs = []
    for model in ("m1", "m2"):
        for suite, category, n in (("harm", "harmful", n_harmful), ("safe", "safe", n_safe)):
            rows = [(f"{suite}-{i}", suite, category, f"{suite} prompt {i}", f"{model} answers {suite} {i}")
                    for i in range(n)]
            write_generations(root / model / f"{suite}.jsonl", rows)
        dirs.append(root / model)
    return dirs


def slot_of(study: Study, item_id: str, model: str) -> int:
    """The slot (0 = A) in which ``model``'s answer to ``item_id`` is shown."""
    with sqlite3.connect(study.path) as conn:
        row = conn.execute("SELECT a.slot FROM answers a JOIN models m ON m.model = a.model "
                           "WHERE a.item_id = ? AND m.name = ?", (item_id, model)).fetchone()
    return int(row[0])
