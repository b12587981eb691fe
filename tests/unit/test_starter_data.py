"""The starter data shipped for the offline quickstart: shapes, sizes, and no overlap between train and eval."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from safemix.data.mixture import normalise_text

SIZES = {"safety.jsonl": 300, "general.jsonl": 300, "eval_harmful.jsonl": 60, "eval_safe.jsonl": 60, "eval_general.jsonl": 40}


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("safemix.starter").joinpath(name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_sizes_and_fields(name: str) -> None:
    rows = _rows(name)
    assert len(rows) == SIZES[name]
    if name.startswith("eval_"):
        assert all(row["prompt"].strip() and row["id"].startswith("starter-") for row in rows)
        assert len({row["id"] for row in rows}) == len(rows)
    else:
        assert all(row["instruction"].strip() and row["output"].strip() and "input" in row for row in rows)


def test_no_evaluation_prompt_is_a_training_instruction() -> None:
    train = {normalise_text(r["instruction"]) for name in ("safety.jsonl", "general.jsonl") for r in _rows(name)}
    evaluation = [normalise_text(r["prompt"]) for name in SIZES if name.startswith("eval_") for r in _rows(name)]
    assert not train & set(evaluation)
    assert len(evaluation) == len(set(evaluation))
