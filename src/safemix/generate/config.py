"""The ``generate`` config section and decoding presets (no torch here: configs validate before heavy imports)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from safemix.data.suites import SuiteSpec
from safemix.errors import InputError
from safemix.prompts import TemplateName

Backend = Literal["hf", "vllm", "openai", "fake"]


class DecodingConfig(BaseModel):
    """How answers are decoded. Without sampling, one beam is greedy decoding and more beams is beam search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(ge=1, description="most tokens generated per answer")
    num_beams: int = Field(default=1, ge=1, description="beams of beam search; 1 = greedy (or sampling)")
    do_sample: bool = False
    temperature: float = Field(default=1.0, gt=0, description="sampling temperature (only with do_sample)")
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling mass (only with do_sample)")
    top_k: int = Field(default=0, ge=0, description="sample from the k most likely tokens; 0 = off")
    repetition_penalty: float = Field(default=1.0, gt=0)
    seed: int = Field(default=0, description="seed of the sampler")


class DecodingOverrides(BaseModel):
    """Decoding fields that replace the preset's values; unset fields keep the preset's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int | None = Field(default=None, ge=1)
    num_beams: int | None = Field(default=None, ge=1)
    do_sample: bool | None = None
    temperature: float | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)
    seed: int | None = None


class Preset(DecodingConfig):
    """A named decoding preset from ``presets.yaml``."""

    description: str


@cache
def load_presets() -> dict[str, Preset]:
    """The built-in decoding presets (``greedy``, ``paper``), name -> preset."""
    text = resources.files("safemix.generate").joinpath("presets.yaml").read_text(encoding="utf-8")
    return {name: Preset.model_validate(fields) for name, fields in yaml.safe_load(text).items()}


class OpenAIConfig(BaseModel):
    """An OpenAI-compatible chat endpoint: a hosted API, or a vLLM / llama.cpp server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(default="https://api.openai.com/v1", description="the API root, ending in /v1")
    api_key_env: str = Field(
        default="OPENAI_API_KEY", description="environment variable holding the key; '' for a server without one"
    )
    concurrency: int = Field(default=8, ge=1, description="requests in flight at once")
    max_retries: int = Field(default=6, ge=0, description="retries of a request after 429, 5xx or a timeout")
    backoff_s: float = Field(default=1.0, ge=0, description="first retry delay; doubles on every retry")
    max_backoff_s: float = Field(default=60.0, gt=0, description="longest delay between two tries")
    timeout_s: float = Field(default=120.0, gt=0, description="time allowed for one request")


class VLLMConfig(BaseModel):
    """The vllm backend: a vLLM server that safemix starts from vLLM's own environment (or one already running)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    python: Path | None = Field(
        default=None, description="the vLLM environment's python; default $SAFEMIX_VLLM_PYTHON, else .venv-vllm/bin/python")
    url: str | None = Field(
        default=None, description="a running server's API root (ending in /v1) serving the base model as 'base' "
        "and each adapter under its run label; safemix then starts none")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs the model is split over")
    memory_share: float | None = Field(
        default=None, gt=0, le=1, description="--gpu-memory-utilization: the share of GPU memory (CPU build: of RAM) "
        "vLLM takes; default 0.9 on a GPU, 0.2 on the CPU")
    max_model_len: int = Field(default=2048, gt=0, description="longest prompt plus answer, in tokens")
    startup_timeout_s: float = Field(default=900.0, gt=0, description="how long the server may take to load")
    request_timeout_s: float = Field(
        default=900.0, gt=0, description="how long one answer may take (beam search on a CPU takes minutes)")
    concurrency: int = Field(default=16, ge=1, description="requests in flight at once")
    extra_args: list[str] = Field(default_factory=list, description="further 'vllm serve' arguments, passed as given")


class GenerateConfig(BaseModel):
    """The ``generate`` section: which model answers which suites, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend = "hf"
    base_model: str | None = Field(default=None, description="model dir, built-in name, HF id, or served model name")
    adapter: Path | None = Field(default=None, description="LoRA adapter dir written by 'safemix train'")
    template: TemplateName | None = Field(
        default=None, description="prompt template; default: the adapter's, else alpaca (openai: the server's chat)"
    )
    suites: list[SuiteSpec] = Field(default_factory=list)
    preset: str = "greedy"
    decoding: DecodingOverrides = Field(default_factory=DecodingOverrides)
    batch_size: int = Field(default=32, ge=1, description="most prompts per batch (hf, vllm, fake); hf balances them")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="float32", description="weights' dtype; auto: bfloat16 where the device computes it natively (hf, vllm)"
    )
    device: str = "cpu"
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in load_presets():
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(load_presets())}")
        return name

    def resolved_decoding(self) -> DecodingConfig:
        """The preset's decoding settings with every override applied."""
        preset = load_presets()[self.preset]
        fields = preset.model_dump(exclude={"description"})
        fields.update(self.decoding.model_dump(exclude_none=True))
        return DecodingConfig.model_validate(fields)

    def required_base_model(self) -> str:
        """The base model, or an input error saying how to give it."""
        if not self.base_model:
            raise InputError("generate.base_model: required (--base-model MODEL)")
        return self.base_model
