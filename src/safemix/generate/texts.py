"""A language model used as a tool (a pairwise judge, a rewriter): texts in, replies out, through the generation
backends.

Each text is answered with greedy decoding by one of the ordinary generation backends: ``hf`` wraps it in the
model's chat template (or the Alpaca template) as one user turn; ``openai`` sends it as one user message to an
OpenAI-compatible server; ``fake`` is a model-free stand-in that the caller supplies. The backend is built on the
first call, so a run whose every reply is cached loads no model. No torch is imported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safemix.errors import InputError
from safemix.generate.base import Generator
from safemix.generate.config import DecodingOverrides, GenerateConfig, OpenAIConfig
from safemix.prompts import TemplateName
from safemix.records import Prompt

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

    runtime_only: ClassVar[set[str]] = {"api_key_env", "batch_size", "device", "concurrency"}

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
                              concurrency=self.concurrency)
        return GenerateConfig(backend=self.backend, base_model=self.model or FAKE_MODEL,
                              template=self.template if self.backend == "hf" else None, preset="greedy",
                              decoding=DecodingOverrides(max_new_tokens=self.max_new_tokens), batch_size=self.batch_size,
                              dtype=self.dtype, device=self.device, openai=openai)


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


def _require_api_key(config: ToolModelConfig, role: str) -> None:
    if config.api_key_env and not os.environ.get(config.api_key_env):
        raise InputError(f"{role}: environment variable {config.api_key_env} is not set; it holds the API key for "
                         f"{config.base_url or OpenAIConfig().base_url} (any non-empty value for a server without keys)")
