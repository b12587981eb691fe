"""The win-rate judge over an OpenAI-compatible endpoint: the scoring tests' local HTTP server answers verdicts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.winrate.compare import compare, read_answers
from safemix.winrate.config import JudgeConfig
from safemix.winrate.judge import build_judge
from tests.conftest import serving
from tests.unit.fake_openai import FakeOpenAI
from tests.unit.winrate_data import write_answers

SECRET = "sk-test-winrate-DO-NOT-LEAK-77"


def judge_reply(text: str) -> str:
    """Prefers model a's answer wherever it is shown, except for 'Instruction 3', where it rambles."""
    if "Instruction 3\n" in text:
        return "Both answers are fine, really."
    return "A" if re.search(r"### Answer A:\na-answer", text) else "B"


@pytest.fixture()
def server() -> Iterator[FakeOpenAI]:
    with serving(FakeOpenAI()) as fake:
        fake.reply_for = judge_reply
        yield fake


def test_endpoint_judge(server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    a = read_answers(write_answers(tmp_path / "a.jsonl", "a", 8), "model-a")
    b = read_answers(write_answers(tmp_path / "b.jsonl", "b", 8), "model-b")
    judge = build_judge(JudgeConfig(backend="openai", model="judge-1", base_url=server.base_url, concurrency=2))
    manifest = compare(a, b, tmp_path / "out.jsonl", judge, cache_dir=tmp_path / "cache")
    assert manifest["counts"] == {"items": 8, "wins": 7, "ties": 0, "losses": 0, "unscored": 1}
    assert manifest["win_rate"]["estimate"] == 1.0
    assert server.auth == {f"Bearer {SECRET}"}
    assert {(r["path"], r["model"], r["max_tokens"], r["temperature"]) for r in server.requests} == {
        ("/v1/chat/completions", "judge-1", 16, 0.0)}
    assert len(server.requests) == 8
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines[3]["value"] is None and "Both answers are fine" in lines[3]["unscored_reason"]
    for path in (tmp_path / "out.jsonl", tmp_path / "out.manifest.json", tmp_path / "cache" / "scores.sqlite"):
        assert SECRET.encode() not in path.read_bytes()
    compare(a, b, tmp_path / "out.jsonl", judge, cache_dir=tmp_path / "cache")
    assert len(server.requests) == 9  # the rerun asks again only the reply that did not parse
    judge.model.close()


def test_endpoint_judge_without_a_key_fails_before_any_request(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InputError, match=r"^win-rate judge: environment variable OPENAI_API_KEY is not set"):
        build_judge(JudgeConfig(backend="openai", model="judge-1", base_url=server.base_url))
    assert server.requests == []
