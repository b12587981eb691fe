"""Reading instruction examples through Hugging Face ``datasets`` (a local dataset folder: no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safemix.data.sources import SourceSpec, load_instructions
from safemix.errors import InputError


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def test_hf_source_reads_a_dataset_with_a_column_mapping(tmp_path: Path) -> None:
    folder = tmp_path / "my-dataset"
    folder.mkdir()
    rows = [{"question": f"Question {i}?", "answer": f"Answer {i}."} for i in range(3)]
    (folder / "train.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    spec = SourceSpec.model_validate({"hf": str(folder), "columns": {"instruction": "question", "output": "answer"}})
    loaded = load_instructions(spec, None)
    assert [(r.instruction, r.output) for r in loaded.records] == [(f"Question {i}?", f"Answer {i}.") for i in range(3)]
    assert loaded.file == f"hf:{folder}@default:train"


def test_unreachable_hf_dataset_is_one_clear_line() -> None:
    with pytest.raises(InputError, match=r"^hf:nobody/no-such-dataset: cannot load the Hugging Face dataset \(ConnectionError"):
        load_instructions(SourceSpec(hf="nobody/no-such-dataset"), None)
