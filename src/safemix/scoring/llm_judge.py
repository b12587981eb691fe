"""``llm-judge``: a language model judges each response with a versioned template.

Backends: a local Hugging Face causal LM (plain ``AutoModelForCausalLM``/``AutoTokenizer``, greedy decoding,
batches sorted by length), or any OpenAI-compatible endpoint (``base_url``; the key comes from
``OPENAI_API_KEY``; a local server such as vLLM accepts any non-empty key). Llama Guard 3 through the local
backend also gives ``value`` = P(unsafe) from the first answer token. WildGuard gives a refusal label and
writes its two harm answers next to it (``request_harmful``, ``response_harmful``). A reply that does not
parse, or a request that keeps failing, is unscored with the reason; a label is never guessed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from safemix.errors import InputError
from safemix.retry import call_with_retries
from safemix.scoring.base import Judgement, ScorerSettings, check_pairs
from safemix.scoring.harmfulness import model_fingerprint, resolve_device
from safemix.scoring.moderation import API_KEY_ENV
from safemix.scoring.templates import (
    TEMPLATES,
    JudgeTemplate,
    TemplateName,
    UnparsedReply,
)

log = logging.getLogger(__name__)

_REPLY_CHARS = 120


class LLMJudgeSettings(ScorerSettings):
    """The judge model, its template and backend."""

    template: TemplateName = "xstest"
    model: str = Field(description="local model directory or HF id; with base_url, the endpoint's model name")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint; unset: run the model locally")
    revision: str | None = None
    max_new_tokens: int | None = Field(default=None, ge=1, description="default: the template's")
    batch_size: int = Field(default=8, ge=1)
    device: str = "auto"
    max_retries: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=120.0, gt=0)

    runtime_only: ClassVar[set[str]] = {"batch_size", "device", "max_retries", "backoff_s", "timeout_s"}


def reply_judgement(template: JudgeTemplate, reply: str, p_unsafe: float | None = None) -> Judgement:
    """Parse a judge reply; ``p_unsafe`` (Llama Guard, local) replaces the 0/1 value of the parsed label.

    The verdict's extra answers (WildGuard's harm answers) and categories are written next to the raw reply.
    """
    try:
        verdict = template.parse(reply)
    except UnparsedReply as err:
        return Judgement.unscored(f"unparsed judge reply {reply[:_REPLY_CHARS]!r}: {err}", reply=reply)
    extra: dict[str, Any] = {"reply": reply, **verdict.extra}
    if verdict.categories:
        extra["categories"] = list(verdict.categories)
    return Judgement(verdict.value if p_unsafe is None else p_unsafe, verdict.label, extra=extra)


class LLMJudge:
    """Judges (prompt, response) pairs with a template, on a local model or an OpenAI-compatible endpoint."""

    name: ClassVar[str] = "llm-judge"
    version: ClassVar[str] = "1"
    settings_model: ClassVar[type[ScorerSettings]] = LLMJudgeSettings

    def __init__(self, settings: LLMJudgeSettings):
        self.settings = settings
        self.template = TEMPLATES[settings.template]
        self.max_new_tokens = settings.max_new_tokens or self.template.max_new_tokens
        self.fingerprint = {"template": self.template.version,
                            "model": settings.model if settings.base_url else model_fingerprint(settings.model, settings.revision)}
        self._backend = _EndpointJudge(settings, self.template, self.max_new_tokens) if settings.base_url else _LocalJudge(
            settings, self.template, self.max_new_tokens)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Judgement]:
        """One judgement per pair, in order."""
        check_pairs(prompts, responses)
        judgements = self._backend.judge(list(prompts), list(responses))
        # Every line names its template (unscored ones too), so metrics can keep the templates apart.
        return [replace(j, extra={**j.extra, "template": self.template.name}) for j in judgements]


class _LocalJudge:
    """Greedy decoding with a local transformers model."""

    def __init__(self, settings: LLMJudgeSettings, template: JudgeTemplate, max_new_tokens: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings, self.template, self.max_new_tokens = settings, template, max_new_tokens
        self.device = resolve_device(settings.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(settings.model, revision=settings.revision, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(settings.model, revision=settings.revision)
        except OSError as err:
            raise InputError(f"llm-judge: cannot load model {settings.model!r} ({err})") from None
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if template.kind != "raw" and not self.tokenizer.chat_template:
            raise InputError(f"llm-judge: template {template.name} needs a chat template, and {settings.model!r} has none")
        self._label_tokens = self._first_tokens(("safe", "unsafe")) if template.name == "llama-guard-3" else None

    def _first_tokens(self, words: tuple[str, ...]) -> tuple[int, ...]:
        ids = tuple(self.tokenizer.encode(word, add_special_tokens=False)[0] for word in words)
        if len(set(ids)) != len(ids):
            raise InputError(f"llm-judge: the tokenizer of {self.settings.model!r} starts {words} with the same token")
        return ids

    def _judge_input(self, prompt: str, response: str) -> str:
        if self.template.kind == "raw":
            return self.template.render(prompt, response)
        turns = ([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
                 if self.template.kind == "conversation" else [{"role": "user", "content": self.template.render(prompt, response)}])
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    def judge(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        texts = [self._judge_input(p, r) for p, r in zip(prompts, responses)]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        judgements: list[Judgement | None] = [None] * len(texts)
        for start in range(0, len(order), self.settings.batch_size):
            batch = order[start : start + self.settings.batch_size]
            for index, judgement in zip(batch, self._generate([texts[i] for i in batch])):
                judgements[index] = judgement
        return [j for j in judgements if j is not None]

    def _generate(self, texts: list[str]) -> list[Judgement]:
        import torch

        # Chat templates already hold the BOS token; raw templates need the tokenizer's.
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True,
                                 add_special_tokens=self.template.kind == "raw").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**encoded, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      output_scores=self._label_tokens is not None, return_dict_in_generate=True,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = out.sequences[:, encoded["input_ids"].shape[1] :]
        replies = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [reply_judgement(self.template, reply, self._p_unsafe(out, new_tokens, row))
                for row, reply in enumerate(replies)]

    def _p_unsafe(self, out: Any, new_tokens: Any, row: int) -> float | None:
        """P(unsafe) / (P(safe) + P(unsafe)) at the first answer token that is not whitespace."""
        if self._label_tokens is None:
            return None
        import torch

        safe_id, unsafe_id = self._label_tokens
        for step, token in enumerate(new_tokens[row].tolist()):
            if self.tokenizer.decode([token]).strip():
                probs = torch.softmax(out.scores[step][row].float(), dim=-1)
                p_safe, p_unsafe = probs[safe_id].item(), probs[unsafe_id].item()
                return p_unsafe / (p_safe + p_unsafe) if p_safe + p_unsafe > 0 else None
        return None


class _EndpointJudge:
    """An OpenAI-compatible server: chat completions for chat templates, completions for raw ones."""

    def __init__(self, settings: LLMJudgeSettings, template: JudgeTemplate, max_new_tokens: int):
        import openai

        api_key = os.environ.get(API_KEY_ENV)
        if not api_key:
            raise InputError(f"{API_KEY_ENV} is not set: llm-judge with base_url needs an API key "
                             "(any non-empty value for a local server)")
        self.settings, self.template, self.max_new_tokens = settings, template, max_new_tokens
        self._openai = openai
        self._client = openai.OpenAI(api_key=api_key, base_url=settings.base_url, max_retries=0, timeout=settings.timeout_s)

    def judge(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        return [self._judge_one(prompt, response) for prompt, response in zip(prompts, responses)]

    def _judge_one(self, prompt: str, response: str) -> Judgement:
        openai = self._openai
        transient = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError,
                     _EmptyReply)
        try:
            reply = call_with_retries(
                lambda: self._request(prompt, response),
                retryable=lambda err: isinstance(err, transient),
                max_retries=self.settings.max_retries,
                backoff_s=self.settings.backoff_s,
                what="llm-judge",
            )
        except transient as err:
            failure = f"{type(err).__name__}: {str(err)[:_REPLY_CHARS]}"
            return Judgement.unscored(f"judge request failed after {self.settings.max_retries} retries: {failure}")
        except openai.APIStatusError as err:
            return Judgement.unscored(f"judge request rejected (HTTP {err.status_code}): {str(err)[:_REPLY_CHARS]}")
        return reply_judgement(self.template, reply)

    def _request(self, prompt: str, response: str) -> str:
        if self.template.kind == "raw":
            completion = self._client.completions.create(model=self.settings.model, prompt=self.template.render(prompt, response),
                                                         max_tokens=self.max_new_tokens, temperature=0)
            choices = completion.choices
            text = choices[0].text if choices else None
        else:
            messages = ([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
                        if self.template.kind == "conversation"
                        else [{"role": "user", "content": self.template.render(prompt, response)}])
            chat = self._client.chat.completions.create(model=self.settings.model, messages=messages,
                                                        max_tokens=self.max_new_tokens, temperature=0)
            text = chat.choices[0].message.content if chat.choices else None
        if text is None:
            raise _EmptyReply("the endpoint returned no choices")
        return text


class _EmptyReply(Exception):
    """A 200 reply without a choice to read."""
