"""The paper's data through the CLI: 900 general + K safety examples, nested, byte-identical on rebuild."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def _build(out: Path, data_dir: Path, seed: str = "0") -> None:
    result = run_cli(
        "data", "build", "--general", "llamafactory-alpaca-en-demo", "--safety", "paper-safety",
        "--n-general", "900", "--n-safety", "0,100,300,500", "--seed", seed, "--data-dir", str(data_dir), "--out", str(out),
    )
    assert result.returncode == 0, result.stderr


def _ids(path: Path, category: str) -> set[str]:
    return {row["id"] for row in map(json.loads, path.read_text().splitlines()) if row["category"] == category}


def test_paper_mixtures_counts_nesting_and_rebuild(tmp_path: Path, data_dir: Path) -> None:
    _build(tmp_path / "a", data_dir)
    _build(tmp_path / "b", data_dir)
    files = [f"mixture-{k}.jsonl" for k in (0, 100, 300, 500)]
    for k, name in zip((0, 100, 300, 500), files):
        assert len((tmp_path / "a" / name).read_text().splitlines()) == 900 + k
        assert len(_ids(tmp_path / "a" / name, "safety")) == k
    safety = [_ids(tmp_path / "a" / name, "safety") for name in files]
    assert safety[0] < safety[1] < safety[2] < safety[3]
    general = [_ids(tmp_path / "a" / name, "general") for name in files]
    assert general[0] == general[1] == general[2] == general[3]
    for name in [*files, "manifest.json", "config.yaml"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["sources"]["general"]["records_read"] == 999
    assert manifest["sources"]["general"]["duplicates_removed"] == 14
    assert manifest["sources"]["safety"]["duplicates_removed"] == 4
    assert manifest["contamination_guard"]["suites_unavailable"] == []
    assert manifest["contamination_guard"]["suites_checked"]["i-malicious-instructions"] == 100

    _build(tmp_path / "c", data_dir, seed="1")
    assert _ids(tmp_path / "c" / "mixture-100.jsonl", "safety") != safety[1]
