"""Prompt templates: the paper's Alpaca strings, the chat template, and the errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safemix.errors import InputError
from safemix.prompts import ALPACA_TEMPLATE, get_template


def test_alpaca_strings_equal_the_papers_file(data_dir: Path) -> None:
    papers = json.loads((data_dir / "safety-tuned-llamas" / "configs" / "alpaca.json").read_text(encoding="utf-8"))
    for key in ("prompt_input", "prompt_no_input", "response_split"):
        assert ALPACA_TEMPLATE[key] == papers[key], key


def test_alpaca_prompt_with_and_without_input() -> None:
    template = get_template("alpaca")
    assert (template.name, template.add_special_tokens) == ("alpaca", True)
    no_input = template.prompt("Name a colour.")
    assert no_input.endswith("### Instruction:\nName a colour.\n\n### Response:\n")
    assert "### Input:" not in no_input
    with_input = template.prompt("Translate.", "le chat")
    assert with_input.endswith("### Instruction:\nTranslate.\n\n### Input:\nle chat\n\n### Response:\n")
    assert with_input.startswith("Below is an instruction that describes a task, paired with an input")


class FakeTokenizer:
    """Renders messages the way a ChatML chat template would, and records the call."""

    chat_template = "chatml"
    name_or_path = "fake"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        self.calls.append(kwargs)
        turns = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return turns + ("<|assistant|>" if kwargs.get("add_generation_prompt") else "")


def test_chat_template_renders_one_user_turn_with_generation_prompt() -> None:
    tokenizer = FakeTokenizer()
    template = get_template("chat", tokenizer)
    assert (template.name, template.add_special_tokens) == ("chat", False)  # the chat template writes its own
    assert template.prompt("Summarise.", "Some text.") == "<|user|>Summarise.\n\nSome text.<|end|><|assistant|>"
    assert template.prompt("Hi") == "<|user|>Hi<|end|><|assistant|>"
    assert tokenizer.calls[0] == {"tokenize": False, "add_generation_prompt": True}


def test_chat_template_needs_a_tokenizer_with_a_chat_template() -> None:
    with pytest.raises(InputError, match="no chat_template; use --template alpaca"):
        get_template("chat")
    tokenizer = FakeTokenizer()
    tokenizer.chat_template = None  # type: ignore[assignment]
    with pytest.raises(InputError, match="^template 'chat': fake has no chat_template"):
        get_template("chat", tokenizer)


def test_unknown_template_name() -> None:
    with pytest.raises(InputError, match="unknown, expected one of alpaca, chat"):
        get_template("vicuna")  # type: ignore[arg-type]
