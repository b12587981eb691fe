"""A language model used as a tool (an LLM judge, a pairwise judge, a rewriter): inputs in, replies out, through
the generation backends.

Every input is answered with greedy decoding by one of the ordinary generation backends: ``hf`` (a local
transformers model with the fast KV cache), ``openai`` (an OpenAI-compatible server, ``concurrency`` requests in
flight, the key read from the variable ``api_key_env`` names and never written anywhere), or ``fake`` (a
model-free stand-in that the caller supplies). :meth:`TextModel.complete` answers plain texts, each one user turn
(``hf`` wraps it in the model's chat template or the Alpaca template). :meth:`TextModel.answer` takes typed
inputs: :class:`Chat` turns (``hf`` formats them with the model's chat template; ``openai`` sends them as chat
messages) or :class:`RawText` (fed as it is: ``hf`` adds the tokenizer's special tokens, ``openai`` uses the
completions endpoint); a request that fails is a reply with the reason, not an error. The backend is built on the
first call, so a run whose every reply is cached loads no model. No torch is imported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safemix.errors import InputError
from safemix.generate.base import Generator
from safemix.generate.config import DecodingOverrides, GenerateConfig, OpenAIConfig
from safemix.prompts import TemplateName
from safemix.records import Prompt

if TYPE_CHECKING:
    from safemix.generate.hf_backend import Continuation, HFGenerator
    from safemix.generate.openai_backend import OpenAIGenerator

ToolBackend = Literal["hf", "openai", "fake"]
FAKE_MODEL = "fake"


class ToolModelConfig(BaseModel):
    """Which model answers, on which backend, and how long its replies may be.

    Everything except the ``runtime_only`` fields changes the replies, so it goes into cache keys and manifests.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: ToolBackend = "hf"
    model: str | None = Field(default=None, description="model dir, built-in name or HF id; openai: the served model")
    base_url: str | None = Field(default=None, description="openai: the API root (default https://api.openai.com/v1)")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="openai: variable holding the key; '' for none")
    template: TemplateName = Field(default="chat", description="hf: chat (the model's chat template) or alpaca")
    max_new_tokens: int = Field(ge=1, description="longest reply in tokens; each tool sets its default")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(default=8, ge=1, description="hf: texts per forward pass")
    device: str = "cpu"
    concurrency: int = Field(default=8, ge=1, description="openai: requests in flight")
    max_retries: int = Field(default=6, ge=0, description="openai: retries of a request after 429, 5xx or a timeout")
    backoff_s: float = Field(default=1.0, ge=0, description="openai: first retry delay; doubles on every retry")
    timeout_s: float = Field(default=120.0, gt=0, description="openai: time allowed for one request")

    runtime_only: ClassVar[set[str]] = {"api_key_env", "batch_size", "device", "concurrency", "max_retries", "backoff_s",
                                        "timeout_s"}

    @model_validator(mode="after")
    def _model_unless_fake(self) -> ToolModelConfig:
        if self.model is None and self.backend != "fake":
            raise ValueError(f"model: required with backend {self.backend!r}")
        return self

    def cache_fields(self) -> dict[str, Any]:
        """The settings that change replies (cache keys and manifests use these)."""
        return self.model_dump(mode="json", exclude=self.runtime_only)

    def generate_config(self) -> GenerateConfig:
        """The same settings as a ``generate`` section, for the generation backends."""
        openai = OpenAIConfig(base_url=self.base_url or OpenAIConfig().base_url, api_key_env=self.api_key_env,
                              concurrency=self.concurrency, max_retries=self.max_retries, backoff_s=self.backoff_s,
                              timeout_s=self.timeout_s)
        return GenerateConfig(backend=self.backend, base_model=self.model or FAKE_MODEL,
                              template=self.template if self.backend == "hf" else None, preset="greedy",
                              decoding=DecodingOverrides(max_new_tokens=self.max_new_tokens), batch_size=self.batch_size,
                              dtype=self.dtype, device=self.device, openai=openai)


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Chat:
    """Chat turns, ``(role, content)`` each, that the model answers as the assistant."""

    turns: tuple[tuple[Role, str], ...]

    @classmethod
    def user(cls, text: str) -> Chat:
        """One user message."""
        return cls((("user", text),))


@dataclass(frozen=True)
class RawText:
    """Text the model continues as it is, without a chat template."""

    text: str


ToolInput = Chat | RawText


@dataclass(frozen=True)
class ToolReply:
    """The model's reply to one input, or why there is none.

    Attributes:
        text: the reply as the model wrote it (not stripped); None when the request failed.
        failure: why the request failed (``request failed after 5 retries: ...``); None when it did not.
        choice_probabilities: with ``first_token_choices`` (hf), each choice's probability at the first reply token
            that is not whitespace, normalised over the choices; None when not asked for, or not available.
    """

    text: str | None
    failure: str | None = None
    choice_probabilities: dict[str, float] | None = None


class TextModel:
    """Answers texts with one model; built lazily.

    Args:
        config: the model and backend.
        role: what the model is for (``win-rate judge``), named in error messages.
        fake: builds the ``fake`` backend's stand-in generator.
        generator: use this generator instead of building one (tests inject scripted ones).

    Raises:
        InputError: the openai backend's API key variable is not set (checked at once, before any work).
    """

    def __init__(self, config: ToolModelConfig, role: str, *, fake: Callable[[], Generator] | None = None,
                 generator: Generator | None = None) -> None:
        from safemix.generate.runner import run_settings

        self.config = config
        self.role = role
        self._generate_config = config.generate_config()
        if config.backend == "openai" and generator is None:
            _require_api_key(config, role)
        settings = run_settings(self._generate_config, self._generate_config.resolved_decoding())
        model = settings["model"]
        #: identifies the weights (hf: a hash of the files) or the served model; part of cache keys.
        self.fingerprint: str = model.get("fingerprint") or model["name"]
        self._fake = fake
        self._generator = generator

    def complete(self, texts: Sequence[str]) -> list[str]:
        """One reply per text, in order."""
        prompts = [Prompt(id=str(index), suite="tool", category="general", prompt=text) for index, text in enumerate(texts)]
        return [generation.response for generation in self._backend().generate(prompts)]

    def answer(self, inputs: Sequence[ToolInput], first_token_choices: Sequence[str] = ()) -> list[ToolReply]:
        """One reply per input, in order; a request that fails (openai) is a reply with the reason.

        Args:
            inputs: chat turns or raw texts.
            first_token_choices: words (``safe``, ``unsafe``) whose probabilities at the first reply token that is
                not whitespace the hf backend returns; other backends return none.

        Raises:
            InputError: the hf model has no chat template for :class:`Chat` inputs, two choices start with the
                same token, or a ``fake`` backend is given anything but single user messages.
        """
        from safemix.generate.hf_backend import HFGenerator
        from safemix.generate.openai_backend import OpenAIGenerator

        backend = self._backend()
        if isinstance(backend, HFGenerator):
            return self._hf_answers(backend, inputs, first_token_choices)
        if isinstance(backend, OpenAIGenerator):
            return self._openai_answers(backend, inputs)
        texts = [_single_user_message(item, self.role) for item in inputs]
        return [ToolReply(text) for text in self.complete(texts)]

    def _hf_answers(self, backend: HFGenerator, inputs: Sequence[ToolInput], choices: Sequence[str]) -> list[ToolReply]:
        tokenizer = backend.tokenizer
        choice_ids = _first_token_ids(tokenizer, choices, self.role)
        token_ids = [self._hf_token_ids(tokenizer, item) for item in inputs]
        replies: list[ToolReply | None] = [None] * len(inputs)
        for batch in backend.iter_continuations(token_ids, choice_ids):
            for index, continuation in batch:
                text = tokenizer.decode(continuation.tokens, skip_special_tokens=True)
                probabilities = _first_word_probabilities(tokenizer, continuation, choices) if choices else None
                replies[index] = ToolReply(text, choice_probabilities=probabilities)
        return [reply for reply in replies if reply is not None]

    def _hf_token_ids(self, tokenizer: Any, item: ToolInput) -> list[int]:
        if isinstance(item, RawText):
            return list(tokenizer(item.text, add_special_tokens=True)["input_ids"])
        if not tokenizer.chat_template:
            raise InputError(f"{self.role}: {self.config.model!r} has no chat template to format chat turns with")
        # The chat template writes the special tokens (a BOS among them) itself.
        text = tokenizer.apply_chat_template([{"role": role, "content": content} for role, content in item.turns],
                                             tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _openai_answers(self, backend: OpenAIGenerator, inputs: Sequence[ToolInput]) -> list[ToolReply]:
        def reply(item: ToolInput) -> ToolReply:
            try:
                if isinstance(item, RawText):
                    return ToolReply(backend.text_reply(item.text))
                return ToolReply(backend.chat_reply([{"role": role, "content": content} for role, content in item.turns]))
            except Exception as err:
                failure = backend.failure(err)
                if failure is None:
                    raise
                return ToolReply(None, failure=failure)

        with ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="safemix-tool") as pool:
            return list(pool.map(reply, inputs))

    def close(self) -> None:
        """Release the backend (threads, memory)."""
        if self._generator is not None:
            self._generator.close()

    def _backend(self) -> Generator:
        if self._generator is None:
            if self.config.backend == "fake":
                if self._fake is None:
                    raise InputError(f"{self.role}: backend 'fake' is not available here")
                self._generator = self._fake()
            else:
                from safemix.generate.runner import build_generator

                config = self._generate_config
                self._generator = build_generator(config, config.resolved_decoding(), config.template or "alpaca")
        return self._generator


def _single_user_message(item: ToolInput, role: str) -> str:
    if isinstance(item, Chat) and len(item.turns) == 1 and item.turns[0][0] == "user":
        return item.turns[0][1]
    raise InputError(f"{role}: this backend answers single user messages only")


def _first_token_ids(tokenizer: Any, words: Sequence[str], role: str) -> list[int]:
    ids = [tokenizer.encode(word, add_special_tokens=False)[0] for word in words]
    if len(set(ids)) != len(ids):
        raise InputError(f"{role}: the tokenizer starts {', '.join(words)} with the same token")
    return ids


def _first_word_probabilities(tokenizer: Any, continuation: Continuation, words: Sequence[str]) -> dict[str, float] | None:
    """The choices' probabilities at the first reply token that is not whitespace, normalised over the choices."""
    for token, probabilities in zip(continuation.tokens, continuation.choice_probabilities):
        if tokenizer.decode([token]).strip():
            total = sum(probabilities)
            return {word: p / total for word, p in zip(words, probabilities)} if total > 0 else None
    return None


def _require_api_key(config: ToolModelConfig, role: str) -> None:
    if config.api_key_env and not os.environ.get(config.api_key_env):
        raise InputError(f"{role}: environment variable {config.api_key_env} is not set; it holds the API key for "
                         f"{config.base_url or OpenAIConfig().base_url} (any non-empty value for a server without keys)")
