"""Export a study's live judgements, unblinded (model names shown), as CSV and JSONL.

Two tables, each written both ways: ``answers`` (one row per annotator, item and answer: the labels and note) and
``preferences`` (one row per annotator, item and pair of models: ``preferred`` is a model name or ``tie``).
Retracted (undone) judgements are left out. The JSONL lines hold exactly the CSV's columns. ``manifest.json``
names the study, its inputs' fingerprint (model names and file sha256s), the counts and the versions.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from safemix.annotate.store import AnswerRow, PreferenceRow, Study
from safemix.files import atomic_writer, write_json_atomic, write_jsonl_atomic
from safemix.versions import package_versions


def export_study(study: Study, out_dir: Path) -> list[Path]:
    """Write ``answers`` and ``preferences`` as CSV and JSONL, and ``manifest.json``, into ``out_dir``."""
    written = []
    counts = {}
    for stem, row_type, rows in (("answers", AnswerRow, study.answer_rows()),
                                 ("preferences", PreferenceRow, study.preference_rows())):
        records = [asdict(row) for row in rows]
        written.append(_write_csv(out_dir / f"{stem}.csv", [f.name for f in fields(row_type)], records))
        write_jsonl_atomic(out_dir / f"{stem}.jsonl", records)
        written.append(out_dir / f"{stem}.jsonl")
        counts[stem] = len(records)
    metadata = study.metadata()
    write_json_atomic(out_dir / "manifest.json", {
        "study": metadata["name"], "fingerprint": metadata["fingerprint"], "n_items": study.n_items(),
        "annotators": study.annotators(), "rows": counts, "versions": package_versions(("flask",))})
    written.append(out_dir / "manifest.json")
    return written


def _write_csv(path: Path, columns: list[str], records: Sequence[dict[str, Any]]) -> Path:
    with atomic_writer(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    return path
