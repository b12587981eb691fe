"""``llm-judge``: a language model judges each response with a versioned template.

The judge model is a :class:`~safemix.generate.texts.TextModel`, the stack every model-as-a-tool uses: a local
Hugging Face causal LM (greedy decoding, batches sorted by length, the generation backend's KV cache), or any
OpenAI-compatible endpoint (``base_url``; the key comes from the variable ``api_key_env`` names,
``OPENAI_API_KEY`` by default, and is never logged or written; ``concurrency`` requests in flight; a local server
such as vLLM accepts any non-empty key). Llama Guard 3 through the local backend also gives ``value`` =
P(unsafe) from the first answer token. WildGuard gives a refusal label and writes its two harm answers next to it
(``request_harmful``, ``response_harmful``). A reply that does not parse, or a request that keeps failing, is
unscored with the reason; a label is never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from safemix.errors import InputError
from safemix.generate.texts import Chat, RawText, TextModel, ToolInput, ToolModelConfig, ToolReply
from safemix.models.resolve import model_fingerprint
from safemix.scoring.base import Judgement, ScorerSettings, check_pairs
from safemix.scoring.harmfulness import resolve_device
from safemix.scoring.templates import (
    TEMPLATES,
    JudgeTemplate,
    ReplyParser,
    TemplateName,
    UnparsedReply,
)

_REPLY_CHARS = 120
#: Llama Guard's labels, whose first-token probabilities give P(unsafe) on the local backend.
_GUARD_CHOICES = ("safe", "unsafe")
#: Files of a Hugging Face snapshot that transformers never loads (original checkpoints, other runtimes' weights).
_UNUSED_SNAPSHOT_FILES = ["original/*", "*.pth", "*.gguf", "*.onnx", "*.msgpack", "*.h5"]


class LLMJudgeSettings(ScorerSettings):
    """The judge model, its template and backend."""

    template: TemplateName = "xstest"
    model: str = Field(description="local model directory or HF id; with base_url, the endpoint's model name")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint; unset: run the model locally")
    revision: str | None = Field(default=None, description="local model: the HF revision (commit, branch or tag) to run")
    max_new_tokens: int | None = Field(default=None, ge=1, description="default: the template's")
    batch_size: int = Field(default=8, ge=1)
    device: str = "auto"
    api_key_env: str = Field(default="OPENAI_API_KEY", description="base_url: variable holding the key; '' for none")
    concurrency: int = Field(default=8, ge=1, description="base_url: requests in flight")
    max_retries: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=120.0, gt=0)

    runtime_only: ClassVar[set[str]] = {"batch_size", "device", "api_key_env", "concurrency", "max_retries", "backoff_s",
                                        "timeout_s"}


def reply_judgement(template: ReplyParser, reply: str, p_unsafe: float | None = None) -> Judgement:
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
        model = settings.model if settings.base_url else model_fingerprint(settings.model, "listing", settings.revision)
        self.fingerprint = {"template": self.template.version, "model": model}
        self.model = TextModel(judge_model_config(settings, self.max_new_tokens), self.name)
        self._choices = _GUARD_CHOICES if self.template.name == "llama-guard-3" else ()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Judgement]:
        """One judgement per pair, in order."""
        check_pairs(prompts, responses)
        replies = self.model.answer([judge_input(self.template, p, r) for p, r in zip(prompts, responses)], self._choices)
        # Every line names its template (unscored ones too), so metrics can keep the templates apart.
        return [replace(j, extra={**j.extra, "template": self.template.name}) for j in map(self._judgement, replies)]

    def _judgement(self, reply: ToolReply) -> Judgement:
        if reply.text is None:
            return Judgement.unscored(f"judge {reply.failure}")
        p_unsafe = reply.choice_probabilities["unsafe"] if reply.choice_probabilities else None
        return reply_judgement(self.template, reply.text, p_unsafe)


def judge_input(template: JudgeTemplate, prompt: str, response: str) -> ToolInput:
    """What the judge model reads for one pair: raw text, a two-turn conversation, or one user message."""
    if template.kind == "raw":
        return RawText(template.render(prompt, response))
    if template.kind == "conversation":
        return Chat((("user", prompt), ("assistant", response)))
    return Chat.user(template.render(prompt, response))


def judge_model_config(settings: LLMJudgeSettings, max_new_tokens: int) -> ToolModelConfig:
    """The judge's settings as a tool model: the endpoint, or the local model (at ``revision``) on its device."""
    common: dict[str, Any] = {"max_new_tokens": max_new_tokens, "max_retries": settings.max_retries,
                              "backoff_s": settings.backoff_s, "timeout_s": settings.timeout_s}
    if settings.base_url:
        return ToolModelConfig(backend="openai", model=settings.model, base_url=settings.base_url,
                               api_key_env=settings.api_key_env, concurrency=settings.concurrency, **common)
    # TextModel.answer formats chat turns with the model's own chat template (and says so when there is none);
    # the generator's template only serves TextModel.complete, which the judge never calls.
    return ToolModelConfig(backend="hf", model=_local_model(settings), template="alpaca", batch_size=settings.batch_size,
                           device=resolve_device(settings.device), **common)


def _local_model(settings: LLMJudgeSettings) -> str:
    """``model``, or for a Hugging Face id with a ``revision``, the local snapshot of that revision."""
    if settings.revision is None or Path(settings.model).expanduser().is_dir():
        return settings.model
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(settings.model, revision=settings.revision, ignore_patterns=_UNUSED_SNAPSHOT_FILES)
    except (OSError, ValueError) as err:
        raise InputError(f"llm-judge: cannot load model {settings.model!r} at revision {settings.revision!r} ({err})") from None
