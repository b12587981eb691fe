"""Prompt templates shared by training and generation.

Training text is ``template.prompt(instruction, input) + output + eos``; generation feeds
``template.prompt(instruction, input)``. Both tokenize the prompt text with
``tokenizer(text, add_special_tokens=template.add_special_tokens)``: a chat template already writes its special
tokens (a BOS among them, for some models), so adding them again would double them. The template a model was trained with is recorded next to its adapter
(``safemix_adapter.json``) so generation uses the same one. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from safemix.errors import InputError

TemplateName = Literal["alpaca", "chat"]
TEMPLATE_NAMES: tuple[TemplateName, ...] = ("alpaca", "chat")

# The paper's template (Alpaca-LoRA's ``templates/alpaca.json``; the data mirror holds a copy in
# ``safety-tuned-llamas/configs/alpaca.json`` and a unit test compares the strings with it).
ALPACA_TEMPLATE: dict[str, str] = {
    "description": "Template used by Alpaca-LoRA.",
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    "prompt_no_input": (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
    "response_split": "### Response:",
}


class PromptTemplate(Protocol):
    """Turns an instruction (and optional input) into the text that precedes the model's answer."""

    @property
    def name(self) -> str:
        """The template's name (``alpaca``, ``chat``)."""
        ...

    @property
    def add_special_tokens(self) -> bool:
        """Whether the tokenizer adds its special tokens to the prompt text."""
        ...

    def prompt(self, instruction: str, input: str = "") -> str:
        """Return the text up to where the model's answer starts."""
        ...


@dataclass(frozen=True)
class AlpacaTemplate:
    """The paper's Alpaca template: ``prompt_input`` when there is an input, ``prompt_no_input`` otherwise."""

    name: str = "alpaca"
    add_special_tokens: bool = True

    def prompt(self, instruction: str, input: str = "") -> str:
        """Return the Alpaca prompt, ending with ``### Response:\\n``."""
        if input:
            return ALPACA_TEMPLATE["prompt_input"].format(instruction=instruction, input=input)
        return ALPACA_TEMPLATE["prompt_no_input"].format(instruction=instruction)


@dataclass(frozen=True)
class ChatTemplate:
    """The tokenizer's own chat template, one user turn, with the generation prompt appended.

    The input, when present, follows the instruction after a blank line in the same user message.
    """

    tokenizer: Any
    name: str = "chat"
    add_special_tokens: bool = False

    def prompt(self, instruction: str, input: str = "") -> str:
        """Return the rendered chat up to the start of the assistant's turn."""
        content = f"{instruction}\n\n{input}" if input else instruction
        rendered: str = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        return rendered


def get_template(name: TemplateName, tokenizer: Any = None) -> PromptTemplate:
    """Return the template called ``name``.

    Args:
        name: ``"alpaca"`` (the paper's template, for base models) or ``"chat"`` (the tokenizer's chat template).
        tokenizer: needed for ``"chat"``; must carry a ``chat_template``.

    Raises:
        InputError: an unknown name, or ``"chat"`` without a tokenizer that has a chat template.
    """
    if name == "alpaca":
        return AlpacaTemplate()
    if name == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            owner = getattr(tokenizer, "name_or_path", None) or "the tokenizer"
            raise InputError(f"template 'chat': {owner} has no chat_template; use --template alpaca")
        return ChatTemplate(tokenizer)
    raise InputError(f"template {name!r}: unknown, expected one of {', '.join(TEMPLATE_NAMES)}")
