"""The win-rate judge and the rewriter on a local HF model (the tiny random Llama, through its chat template)."""

from __future__ import annotations

import json
from pathlib import Path

from safemix.data.rewrite import RewriteConfig, rewrite_file
from safemix.winrate.compare import compare, read_answers
from safemix.winrate.config import JudgeConfig
from safemix.winrate.judge import build_judge
from tests.unit.test_winrate import write_answers


def test_hf_judge_records_every_item(tiny_model_dir: Path, tmp_path: Path) -> None:
    a = read_answers(write_answers(tmp_path / "a.jsonl", "a", 5), "a")
    b = read_answers(write_answers(tmp_path / "b.jsonl", "b", 5), "b")
    judge = build_judge(JudgeConfig(backend="hf", model=str(tiny_model_dir), max_new_tokens=3, batch_size=2))
    assert judge.fingerprint["model"].startswith("sha256:")
    manifest = compare(a, b, tmp_path / "out.jsonl", judge, cache_dir=tmp_path / "cache")
    judge.model.close()
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"i-alpaca-{i}" for i in range(5)]
    for line in lines:  # a random model rarely names a verdict; whatever it says is recorded, never guessed
        assert (line["value"] is None) == (line["verdict"] is None) == (line["unscored_reason"] is not None)
        assert isinstance(line["reply"], str)
    counts = manifest["counts"]
    assert counts["wins"] + counts["ties"] + counts["losses"] + counts["unscored"] == 5
    assert manifest["identity"]["judge"]["settings"]["template"] == "chat"


def test_hf_rewriter_keeps_every_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "safety.json"
    source.write_text(json.dumps([{"instruction": f"Write a guide to harm {i}.", "output": "No."} for i in range(3)]))
    config = RewriteConfig(backend="hf", model=str(tiny_model_dir), max_new_tokens=6)
    manifest = rewrite_file(source, tmp_path / "q.jsonl", "question", config, cache_dir=tmp_path / "cache")
    lines = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [line["original_instruction"] for line in lines] == [f"Write a guide to harm {i}." for i in range(3)]
    assert manifest["counts"]["rewritten"] + manifest["counts"]["failed"] == 3
    assert all(line["output"] == "No." for line in lines)
