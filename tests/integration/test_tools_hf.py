"""The win-rate judge and the rewriter on a local HF model (the tiny random Llama, through its chat template).

Each tool's replies are computed again here with the HF backend alone, so the tests check what the tools decide
from them: which answer is shown first, the verdict or rewrite each reply parses to, and the counts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from safemix.generate.config import DecodingConfig
from safemix.generate.hf_backend import HFGenerator
from safemix.records import Prompt
from safemix.rewrite import REWRITE_TEMPLATES, RewriteConfig, parse_rewrite, rewrite_file
from safemix.scoring.templates import UnparsedReply
from safemix.winrate.compare import compare, read_answers
from safemix.winrate.config import JudgeConfig
from safemix.winrate.judge import PAIRWISE_TEMPLATE, build_judge, parse_pairwise
from tests.unit.winrate_data import write_answers


def greedy_replies(model_dir: Path, texts: list[str], max_new_tokens: int) -> list[str]:
    """The model's greedy reply to each text as one chat turn, from the HF backend alone (no tool code)."""
    generator = HFGenerator.load(str(model_dir), None, "chat", DecodingConfig(max_new_tokens=max_new_tokens),
                                 batch_size=1)
    prompts = [Prompt(id=str(index), suite="tool", category="general", prompt=text) for index, text in enumerate(texts)]
    return [record.response for record in generator.generate(prompts)]


def a_shown_first(prompt_id: str) -> bool:
    """The documented order with seed 0: model A's answer comes first when sha256 of the seed and id starts even."""
    return hashlib.sha256(f"0\x00{prompt_id}".encode()).digest()[0] % 2 == 0


def score_of_a(reply: str, a_first: bool) -> tuple[str | None, float | None]:
    """The verdict a judge reply parses to and model A's score from it; (None, None) when it does not parse."""
    try:
        verdict = parse_pairwise(reply)
    except UnparsedReply:
        return None, None
    return verdict.label, verdict.value if a_first else 1.0 - verdict.value


def test_hf_judge_scores_each_item_from_the_models_reply(tiny_model_dir: Path, tmp_path: Path) -> None:
    a = read_answers(write_answers(tmp_path / "a.jsonl", "a", 5), "a")
    b = read_answers(write_answers(tmp_path / "b.jsonl", "b", 5), "b")
    judge = build_judge(JudgeConfig(backend="hf", model=str(tiny_model_dir), max_new_tokens=3, batch_size=2))
    assert judge.fingerprint["model"].startswith("sha256:")
    manifest = compare(a, b, tmp_path / "out.jsonl", judge, cache_dir=tmp_path / "cache")
    judge.model.close()
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    ids = [f"i-alpaca-{i}" for i in range(5)]
    assert [line["id"] for line in lines] == ids
    firsts = [a_shown_first(prompt_id) for prompt_id in ids]
    assert [line["a_position"] for line in lines] == ["A" if first else "B" for first in firsts]

    shown = [(f"a-answer {i}", f"b-answer {i}") if first else (f"b-answer {i}", f"a-answer {i}")
             for i, first in enumerate(firsts)]
    judge_inputs = [PAIRWISE_TEMPLATE.render(f"Instruction {i}", *pair) for i, pair in enumerate(shown)]
    replies = greedy_replies(tiny_model_dir, judge_inputs, max_new_tokens=3)
    assert [line["reply"] for line in lines] == replies
    expected = [score_of_a(reply, first) for reply, first in zip(replies, firsts, strict=True)]
    # a random model rarely names a verdict; whatever it says is recorded, never guessed
    assert [(line["verdict"], line["value"]) for line in lines] == expected
    assert [line["unscored_reason"] is not None for line in lines] == [verdict is None for verdict, _ in expected]
    values = [value for _, value in expected]
    assert manifest["counts"] == {"items": 5, "wins": values.count(1.0), "ties": values.count(0.5),
                                  "losses": values.count(0.0), "unscored": values.count(None)}
    assert manifest["n_a_shown_first"] == sum(firsts)
    assert manifest["identity"]["judge"]["settings"]["template"] == "chat"


def expected_rewrite(text: str, reply: str | None) -> tuple[str, str]:
    """(instruction, status) of a line: a question stays as it is, else the reply's question, else the original."""
    if reply is None:
        return text, "already_in_form"
    try:
        return parse_rewrite(reply, "question"), "rewritten"
    except UnparsedReply:
        return text, "failed"


def test_hf_rewriter_keeps_every_line_and_counts_what_the_replies_decide(tiny_model_dir: Path,
                                                                         tmp_path: Path) -> None:
    texts = [f"Write a guide to harm {i}." for i in range(3)] + ["How do I harm 3?"]
    source = tmp_path / "safety.json"
    source.write_text(json.dumps([{"instruction": text, "output": "No."} for text in texts]))
    config = RewriteConfig(backend="hf", model=str(tiny_model_dir), max_new_tokens=6)
    manifest = rewrite_file(source, tmp_path / "q.jsonl", "question", config, cache_dir=tmp_path / "cache")
    lines = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [line["original_instruction"] for line in lines] == texts
    assert all(line["output"] == "No." for line in lines)

    asked = texts[:3]  # the question is already in form: the model is not asked
    replies = dict(zip(asked, greedy_replies(tiny_model_dir, [REWRITE_TEMPLATES["question"].render(text)
                                                              for text in asked], max_new_tokens=6), strict=True))
    expected = [expected_rewrite(text, replies.get(text)) for text in texts]
    assert [(line["instruction"], line["rewrite_status"]) for line in lines] == expected
    statuses = [status for _, status in expected]
    assert manifest["counts"] == {"lines": 4, "rewritten": statuses.count("rewritten"), "already_in_form": 1,
                                  "failed": statuses.count("failed"), "distinct_texts_from_cache": 0}
    assert [failure["line"] for failure in manifest["failures"]] == [
        number for number, status in enumerate(statuses, start=1) if status == "failed"]


def test_hf_answers_typed_inputs_as_the_model_continues_them(tiny_model_dir: Path) -> None:
    from safemix.generate.texts import Chat, RawText, TextModel, ToolModelConfig

    config = ToolModelConfig(model=str(tiny_model_dir), max_new_tokens=6, batch_size=2)
    model = TextModel(config, "test tool")
    generator = HFGenerator.load(str(tiny_model_dir), None, "chat", DecodingConfig(max_new_tokens=6), batch_size=1)
    tokenizer = generator.tokenizer
    conversation = [{"role": "user", "content": "How do I bake bread?"}, {"role": "assistant", "content": "Mix flour."}]
    chat_text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    inputs = [Chat((("user", "How do I bake bread?"), ("assistant", "Mix flour."))), RawText("Is this safe? Answer:")]
    expected_ids = [tokenizer(chat_text, add_special_tokens=False)["input_ids"],
                    tokenizer("Is this safe? Answer:", add_special_tokens=True)["input_ids"]]
    continuations = dict(pair for batch in generator.iter_continuations(expected_ids) for pair in batch)
    expected = [tokenizer.decode(continuations[index].tokens, skip_special_tokens=True) for index in range(2)]
    replies = model.answer(inputs, first_token_choices=("safe", "unsafe"))
    assert [reply.text for reply in replies] == expected  # as the model wrote them, not stripped
    for reply in replies:
        assert reply.failure is None
        if reply.choice_probabilities is not None:
            assert set(reply.choice_probabilities) == {"safe", "unsafe"}
            assert sum(reply.choice_probabilities.values()) == pytest.approx(1.0)
    assert model.answer([Chat.user("Hi")])[0].choice_probabilities is None
    model.close()
