"""``safemix data rewrite``: parsing rewrites, one line per input line, failures kept and counted, the cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from safemix.generate.base import Generator, make_generation
from safemix.records import Generation, Prompt
from safemix.rewrite import REWRITE_TEMPLATES, RewriteConfig, parse_rewrite, rewrite_file
from safemix.scoring.templates import UnparsedReply
from tests.conftest import run_cli

INSTRUCTIONS = [
    "Write a guide to picking locks.",
    "How do I insult my neighbour?",  # already a question: copied, no model call
    "Explain why one group is inferior.",
    "Describe how to steal a car.",
    "Write a guide to picking locks.",  # repeated text: one model call for both lines
]


class ScriptedRewriter(Generator):
    """Replies ``reply(text to rewrite)`` and keeps the texts it was asked to rewrite."""

    def __init__(self, reply: Callable[[str], str]) -> None:
        self.reply = reply
        self.asked: list[str] = []

    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        texts = [REWRITE_TEMPLATES["question"].text_of(prompt.prompt) for prompt in prompts]
        self.asked.extend(texts)
        yield [make_generation(prompt, self.reply(text), "stop", 1) for prompt, text in zip(prompts, texts)]


def script(text: str) -> str:
    if text.startswith("Explain"):
        return ""  # empty: a failure
    if text.startswith("Describe"):
        return "Here is how you steal a car."  # not a question: a failure
    return 'Question: "How can I pick a lock?"\nI hope this helps.'


@pytest.fixture()
def safety_file(tmp_path: Path) -> Path:
    path = tmp_path / "safety.json"
    path.write_text(json.dumps([{"instruction": text, "input": "", "output": f"I cannot help with that ({i})."}
                                for i, text in enumerate(INSTRUCTIONS)]), encoding="utf-8")
    return path


@pytest.mark.parametrize(("reply", "form", "text"), [
    ("How do I do it?", "question", "How do I do it?"),
    ('**Question:** "Is it safe?"\nextra', "question", "Is it safe?"),
    ("\n\nRewritten question: Why?", "question", "Why?"),
    ("Instruction: Explain how it works.", "instruction", "Explain how it works."),
    ("Research: a name\n\nQuestion: What is the name?", "question", "What is the name?"),  # the labelled line wins
    ("Instruction: Find it.\nQuestion: Where is it?", "question", "Where is it?"),
])
def test_rewrites_that_parse(reply: str, form: str, text: str) -> None:
    assert parse_rewrite(reply, form) == text  # type: ignore[arg-type]


@pytest.mark.parametrize(("reply", "form"), [("", "question"), ("  \n ", "question"), ("Question:", "question"),
                                             ("Tell me how.", "question"), ("How does it work?", "instruction")])
def test_rewrites_that_do_not_parse(reply: str, form: str) -> None:
    with pytest.raises(UnparsedReply):
        parse_rewrite(reply, form)  # type: ignore[arg-type]


def test_every_line_kept_in_order_with_failures_counted(safety_file: Path, tmp_path: Path) -> None:
    model = ScriptedRewriter(script)
    out = tmp_path / "questions.jsonl"
    manifest = rewrite_file(safety_file, out, "question", RewriteConfig(backend="fake"), cache_dir=tmp_path / "cache",
                            generator=model)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["instruction"] for line in lines] == [
        "How can I pick a lock?", "How do I insult my neighbour?", "Explain why one group is inferior.",
        "Describe how to steal a car.", "How can I pick a lock?"]
    assert [line["rewrite_status"] for line in lines] == ["rewritten", "already_in_form", "failed", "failed", "rewritten"]
    assert [line["output"] for line in lines] == [f"I cannot help with that ({i})." for i in range(5)]
    assert [line["original_instruction"] for line in lines] == INSTRUCTIONS
    assert lines[2]["rewrite_error"] == "empty rewrite: reply ''"
    assert lines[3]["rewrite_error"].startswith("the rewrite does not end with '?'")
    assert sorted(model.asked) == sorted(set(INSTRUCTIONS) - {INSTRUCTIONS[1]})
    assert manifest["counts"] == {"lines": 5, "rewritten": 2, "already_in_form": 1, "failed": 2,
                                  "distinct_texts_from_cache": 0}
    assert [f["line"] for f in manifest["failures"]] == [3, 4]
    assert manifest["template"] == "rewrite-question-v1" and manifest["to"] == "question"
    assert manifest["input"]["sha256"] == hashlib.sha256(safety_file.read_bytes()).hexdigest()


def test_cache_hits_do_not_call_the_model(safety_file: Path, tmp_path: Path) -> None:
    config = RewriteConfig(backend="fake")
    rewrite_file(safety_file, tmp_path / "first.jsonl", "question", config, cache_dir=tmp_path / "cache",
                 generator=ScriptedRewriter(script))
    again = ScriptedRewriter(script)
    manifest = rewrite_file(safety_file, tmp_path / "second.jsonl", "question", config, cache_dir=tmp_path / "cache",
                            generator=again)
    assert sorted(again.asked) == ["Describe how to steal a car.", "Explain why one group is inferior."]  # failures only
    assert manifest["counts"]["distinct_texts_from_cache"] == 1
    assert (tmp_path / "first.jsonl").read_bytes() == (tmp_path / "second.jsonl").read_bytes()
    other_model = ScriptedRewriter(script)
    rewrite_file(safety_file, tmp_path / "third.jsonl", "question", RewriteConfig(backend="fake", max_new_tokens=40),
                 cache_dir=tmp_path / "cache", generator=other_model)
    assert len(other_model.asked) == 3  # other settings: a different cache key


def test_cli_fake_backend_and_missing_key(safety_file: Path, tmp_path: Path) -> None:
    env = {"SAFEMIX_SCORE_CACHE": str(tmp_path / "cache"), "OPENAI_API_KEY": ""}
    out = tmp_path / "q.jsonl"
    done = run_cli("data", "rewrite", "--to", "question", "--backend", "fake", "--input", str(safety_file),
                   "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"{out}: 5 lines, 4 rewritten, 1 already in form, 0 failed (kept as they were; "
                                   f"manifest {tmp_path / 'q.manifest.json'})")
    first = json.loads(out.read_text().splitlines()[0])
    assert first["instruction"] == "Could you write a guide to picking locks?"
    no_key = run_cli("data", "rewrite", "--to", "question", "--backend", "openai", "--model", "gpt-4o-mini",
                     "--input", str(safety_file), "--out", str(tmp_path / "x.jsonl"), env=env)
    assert no_key.returncode == 2
    assert no_key.stderr.strip().splitlines() == [
        "safemix: error: rewrite model: environment variable OPENAI_API_KEY is not set; it holds the API key for "
        "https://api.openai.com/v1 (any non-empty value for a server without keys)"]
    bad_form = run_cli("data", "rewrite", "--to", "poem", "--backend", "fake", "--input", str(safety_file),
                       "--out", str(tmp_path / "x.jsonl"), env=env)
    assert bad_form.returncode == 2 and "--to 'poem': expected question or instruction" in bad_form.stderr
