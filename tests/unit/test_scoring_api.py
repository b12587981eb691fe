"""API scorers against a local HTTP server with injected faults: moderation and llm-judge over an endpoint.

The server (``tests/unit/fake_openai.py``: 127.0.0.1, a free port) answers like the OpenAI API and can be told to
answer the next requests with a 429, a 500, a 400, a body that is not the expected JSON, or to stall past the
client's timeout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safemix.errors import InputError
from safemix.scoring import build_scorer
from tests.conftest import run_cli, serving
from tests.unit.fake_openai import FakeOpenAI

SECRET = "sk-test-DO-NOT-LEAK-4242"


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with serving(FakeOpenAI()) as fake:
        yield fake


def _moderation(server: FakeOpenAI, **settings: Any) -> Any:
    return build_scorer("moderation", {"base_url": server.base_url, "backoff_s": 0, "max_retries": 3, "timeout_s": 0.3, **settings})


TEXTS = ["I will kill you", "Here is a cake recipe", "hello"]


def test_moderation_output_fields(server: FakeOpenAI) -> None:
    judged = _moderation(server).score([""] * 3, TEXTS)
    assert [j.label for j in judged] == ["flagged", "not_flagged", "not_flagged"]
    assert judged[0].value == 0.95  # the maximum category score
    assert judged[0].extra["category_scores"]["harassment/threatening"] == 0.95  # the API's own names
    assert judged[0].extra["flagged"] is True
    assert server.requests[0]["model"] == "omni-moderation-latest"
    assert server.auth == {f"Bearer {SECRET}"}


@pytest.mark.parametrize("faults", [["429", "500"], ["timeout"], ["malformed", "wrong-count"], ["429", "timeout", "500"]])
def test_transient_faults_are_retried_then_scored(server: FakeOpenAI, faults: list[str]) -> None:
    server.faults = list(faults)
    judged = _moderation(server).score([""] * 3, TEXTS)
    assert all(j.value is not None for j in judged)
    assert len(server.requests) == len(faults) + 1


@pytest.mark.parametrize(("fault", "reason"), [("500", "server error (HTTP 500)"), ("429", "rate limited (HTTP 429)"),
                                               ("malformed", "malformed response body"), ("timeout", "timed out")])
def test_persistent_fault_leaves_items_unscored_with_the_reason(server: FakeOpenAI, fault: str, reason: str) -> None:
    server.faults = [fault] * 4  # 1 try + 3 retries
    judged = _moderation(server, chunk_size=2).score([""] * 3, TEXTS)
    assert [j.value for j in judged[:2]] == [None, None]
    assert all(reason in str(j.unscored_reason) and "after 3 retries" in str(j.unscored_reason) for j in judged[:2])
    assert judged[2].value is not None  # the next chunk still runs


def test_rejected_chunk_is_split_so_only_the_bad_item_is_unscored(server: FakeOpenAI) -> None:
    judged = _moderation(server).score([""] * 3, ["hello", "REJECT ME", "kill"])
    assert [j.value is None for j in judged] == [False, True, False]
    assert "HTTP 400" in str(judged[1].unscored_reason)


def test_chunks_of_the_configured_size(server: FakeOpenAI) -> None:
    _moderation(server, chunk_size=2).score([""] * 5, ["a", "b", "c", "d", "e"])
    assert [len(r["input"]) for r in server.requests] == [2, 2, 1]


def test_missing_key_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InputError, match="OPENAI_API_KEY is not set"):
        build_scorer("moderation")


def test_cli_run_survives_failures_and_never_leaks_the_key(server: FakeOpenAI, tmp_path: Path) -> None:
    gens = tmp_path / "gens"
    gens.mkdir()
    lines = [{"id": f"x-{i}", "suite": "x", "category": "harmful", "prompt": "p", "response": text,
              "finish_reason": "stop", "n_new_tokens": 3} for i, text in enumerate(["kill", "fine", "REJECT ME"])]
    (gens / "x.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    server.faults = ["500"]
    out = tmp_path / "scores" / "moderation.jsonl"
    cache = tmp_path / "cache"
    result = run_cli("--debug", "score", "--scorer", "moderation", "--input", str(gens), "--out", str(out),
                     "--base-url", server.base_url, "--set", "scoring.moderation.backoff_s=0", "--cache-dir", str(cache),
                     env={"OPENAI_API_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    scores = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["label"] for s in scores] == ["flagged", "not_flagged", None]
    assert scores[0]["suite"] == "x" and scores[0]["category"] == "harmful" and scores[0]["model"] == "gens"
    manifest = out.with_name("moderation.manifest.json").read_text()
    everything = result.stdout + result.stderr + out.read_text() + manifest
    everything += "".join(p.read_bytes().decode("latin-1") for p in cache.rglob("*") if p.is_file())
    assert SECRET not in everything
    assert "sk-test" not in everything


def test_cli_missing_key_exits_2_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "r.jsonl"
    data.write_text('{"id": "a", "prompt": "p", "response": "r"}\n')
    result = run_cli("score", "--scorer", "moderation", "--input", str(data), "--out", str(tmp_path / "o.jsonl"),
                     env={"OPENAI_API_KEY": ""})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["safemix: error: OPENAI_API_KEY is not set: the moderation scorer needs an OpenAI API key"]


# ---------------------------------------------------------------- llm-judge through an OpenAI-compatible endpoint


def _judge(server: FakeOpenAI, template: str, **settings: Any) -> Any:
    """A judge on the fake server; one request at a time, so scripted replies meet the items in order."""
    return build_scorer("llm-judge", {"template": template, "model": "judge", "base_url": server.base_url,
                                      "backoff_s": 0, "max_retries": 2, "timeout_s": 0.3, "concurrency": 1, **settings})


def test_xstest_judge_parses_classes_and_never_guesses(server: FakeOpenAI) -> None:
    server.replies = ["2_full_refusal", "1_full_compliance.", "3", "I think it is fine", "1_full_compliance or 2_full_refusal"]
    judged = _judge(server, "xstest").score(["q"] * 5, ["a"] * 5)
    assert [(j.label, j.value) for j in judged[:3]] == [("full_refusal", 1.0), ("full_compliance", 0.0), ("partial_refusal", 1.0)]
    for unparsed in judged[3:]:
        assert unparsed.value is None and unparsed.label is None
        assert "unparsed judge reply" in str(unparsed.unscored_reason)
    assert all(j.extra["template"] == "xstest" for j in judged)
    assert 'QUESTION: "q"' in server.requests[0]["messages"][0]["content"]
    assert server.requests[0]["path"].endswith("/chat/completions")


def test_llama_guard_sends_the_conversation_and_parses_categories(server: FakeOpenAI) -> None:
    server.replies = ["unsafe\nS1,S10", "safe", "maybe"]
    judged = _judge(server, "llama-guard-3").score(["how to x"] * 3, ["do y"] * 3)
    assert [(j.label, j.value) for j in judged[:2]] == [("unsafe", 1.0), ("safe", 0.0)]
    assert judged[0].extra["categories"] == ["S1", "S10"]
    assert judged[2].value is None
    assert server.requests[0]["messages"] == [{"role": "user", "content": "how to x"}, {"role": "assistant", "content": "do y"}]


def test_harmbench_uses_the_raw_prompt_on_the_completions_endpoint(server: FakeOpenAI) -> None:
    server.replies = ["Yes", "no", ""]
    judged = _judge(server, "harmbench").score(["make a bomb"] * 3, ["steps..."] * 3)
    assert [j.label for j in judged] == ["unsafe", "safe", None]
    assert server.requests[0]["path"].endswith("/completions") and "Behavior:\nmake a bomb" in server.requests[0]["prompt"]


def test_judge_endpoint_failures_are_unscored_not_fatal(server: FakeOpenAI) -> None:
    server.faults = ["500", "500", "500", "429"]
    server.replies = ["safe"]
    judged = _judge(server, "llama-guard-3").score(["p", "q"], ["r", "s"])
    assert judged[0].value is None and "after 2 retries" in str(judged[0].unscored_reason)
    assert judged[1].label == "safe"


def test_judge_requests_run_concurrently_and_replies_keep_the_item_order(server: FakeOpenAI) -> None:
    server.reply_for = lambda text: "2_full_refusal" if 'RESPONSE: "no"' in text else "1_full_compliance"
    responses = ["no", "yes", "no", "yes", "yes", "no"]
    judged = _judge(server, "xstest", concurrency=4).score(["q"] * 6, responses)
    assert [j.label for j in judged] == ["full_refusal" if r == "no" else "full_compliance" for r in responses]
    assert len(server.requests) == 6


def test_judge_reads_the_key_from_the_configured_variable(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("JUDGE_KEY", "sk-judge-7")
    server.replies = ["safe"]
    assert _judge(server, "llama-guard-3", api_key_env="JUDGE_KEY").score(["p"], ["r"])[0].label == "safe"
    assert server.auth == {"Bearer sk-judge-7"}
    with pytest.raises(InputError, match="environment variable OPENAI_API_KEY is not set"):
        _judge(server, "llama-guard-3")


def test_judge_settings_that_only_change_speed_stay_out_of_the_cache_key(server: FakeOpenAI) -> None:
    fast, slow = _judge(server, "xstest", concurrency=8), _judge(server, "xstest", api_key_env="", concurrency=1)
    assert fast.settings.cache_fields() == slow.settings.cache_fields()
    assert fast.settings.cache_fields() == {"template": "xstest", "model": "judge", "base_url": server.base_url,
                                            "revision": None, "max_new_tokens": None}
    assert fast.fingerprint == {"template": "xstest-v1", "model": "judge"}


def test_cli_judge_over_an_endpoint_never_leaks_the_key(server: FakeOpenAI, tmp_path: Path) -> None:
    data = tmp_path / "r.jsonl"
    data.write_text("".join(json.dumps({"id": f"x-{i}", "prompt": "p", "response": f"r{i}"}) + "\n" for i in range(3)))
    server.reply_for = lambda text: "safe"
    server.faults = ["500"]
    out = tmp_path / "scores" / "llm-judge.jsonl"
    cache = tmp_path / "cache"
    result = run_cli("--debug", "score", "--scorer", "llm-judge", "--template", "llama-guard-3", "--model", "judge",
                     "--input", str(data), "--out", str(out), "--base-url", server.base_url, "--set", "scoring.llm-judge.backoff_s=0",
                     "--cache-dir", str(cache), env={"OPENAI_API_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    scores = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(s["label"], s["value"], s["reply"], s["template"]) for s in scores] == [("safe", 0.0, "safe", "llama-guard-3")] * 3
    everything = result.stdout + result.stderr + out.read_text()
    everything += "".join(p.read_bytes().decode("latin-1") for p in [*out.parent.iterdir(), *cache.rglob("*")] if p.is_file())
    assert SECRET not in everything
    assert "sk-test" not in everything
