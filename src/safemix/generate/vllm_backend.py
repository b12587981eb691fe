"""Generation through a vLLM server: one server per base model serves it and every adapter of the run.

vLLM runs in its own environment (see :mod:`safemix.generate.vllm_server`); safemix talks to it through the
OpenAI-compatible completions endpoint with the token ids of its own prompt template, so the model reads what the
hf backend feeds it, answers stop at the same tokens, and greedy and beam-search (``use_beam_search``) presets both
run. Requests go ``generate.vllm.concurrency`` at a time; vLLM batches them itself.

``safemix generate --backend vllm`` starts a server for its one model and stops it when the answers are written;
``safemix run`` starts one per base model for all of that model's adapters (:class:`VLLMServers`) and stops them
after the last generation. With ``generate.vllm.url`` safemix starts nothing and uses that server, which must
serve the base model as ``base`` and each adapter under its :func:`served_name`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from safemix.generate.base import Generator, eos_token_ids
from safemix.generate.config import DecodingConfig, GenerateConfig, OpenAIConfig
from safemix.generate.openai_backend import OpenAIGenerator
from safemix.generate.vllm_server import BASE_NAME, ServerSpec, VLLMServer, lora_module, vllm_python
from safemix.models.adapters import find_adapter_dir
from safemix.models.dtypes import resolve_dtype
from safemix.models.resolve import resolve_model
from safemix.prompts import PromptTemplate, TemplateName, get_template
from safemix.records import Generation, Prompt

log = logging.getLogger(__name__)

CPU_MEMORY_SHARE = 0.2
GPU_MEMORY_SHARE = 0.9
SINGLE_ADAPTER = "adapter"
SERVER_LOG = "vllm-server.log"


class TemplateEncoder:
    """safemix's prompt template and the base model's tokenizer, as the hf backend uses them.

    Args:
        model_dir: the base model's local directory (or Hugging Face id).
        template_name: the template the adapter was trained with.
    """

    def __init__(self, model_dir: Path | str, template_name: TemplateName):
        from transformers import AutoTokenizer, GenerationConfig

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.template: PromptTemplate = get_template(template_name, self.tokenizer)
        self.stop_token_ids = frozenset(eos_token_ids(GenerationConfig.from_pretrained(model_dir), self.tokenizer))

    def encode(self, prompt: Prompt) -> list[int]:
        """The token ids of the rendered prompt."""
        text = self.template.prompt(prompt.prompt, prompt.input)
        ids: list[int] = self.tokenizer(text, add_special_tokens=self.template.add_special_tokens)["input_ids"]
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        """The answer text, special tokens dropped and whitespace stripped."""
        text = self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
        return str(text).strip()


def served_name(train_dir: str) -> str:
    """The name a run's adapter is served under: its training directory in the run with anything but letters,
    digits, ``.``, ``_`` and ``-`` replaced (``train/seed1__k300`` -> ``train-seed1__k300``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", train_dir)


def server_spec(config: GenerateConfig, adapters: Mapping[str, Path]) -> ServerSpec:
    """The server for ``config``'s base model with ``adapters`` (served name -> adapter directory)."""
    settings = config.vllm
    share = settings.memory_share or (CPU_MEMORY_SHARE if config.device == "cpu" else GPU_MEMORY_SHARE)
    return ServerSpec(
        python=vllm_python(settings.python),
        model=resolve_model(config.required_base_model()),
        loras=tuple(lora_module(name, find_adapter_dir(path)) for name, path in adapters.items()),
        dtype=resolve_dtype(config.dtype, config.device),
        max_model_len=settings.max_model_len,
        memory_share=share,
        tensor_parallel_size=settings.tensor_parallel_size,
        extra_args=tuple(settings.extra_args),
    )


def server_generator(config: GenerateConfig, decoding: DecodingConfig, template: TemplateName, base_url: str,
                     model: str) -> OpenAIGenerator:
    """The generator that sends ``config``'s prompts to the server at ``base_url`` as ``model`` (``base`` or an
    adapter's served name), tokenised with ``template``."""
    encoder = TemplateEncoder(resolve_model(config.required_base_model()), template)
    endpoint = OpenAIConfig(base_url=base_url, api_key_env="", concurrency=config.vllm.concurrency,
                            timeout_s=config.vllm.request_timeout_s)
    return OpenAIGenerator(model, decoding, endpoint, encoder=encoder)


class ServedGenerator(Generator):
    """Answers through a vLLM server; closing it also stops the server when the generator owns one."""

    def __init__(self, inner: OpenAIGenerator, own_server: VLLMServer | None = None):
        self.inner = inner
        self.own_server = own_server

    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        """The answers as their requests finish (see :class:`OpenAIGenerator`)."""
        return self.inner.iter_batches(prompts)

    def close(self) -> None:
        """Close the connections, then stop an own server."""
        try:
            self.inner.close()
        finally:
            if self.own_server is not None:
                self.own_server.stop()


def standalone_generator(config: GenerateConfig, decoding: DecodingConfig, template: TemplateName,
                         log_dir: Path) -> Generator:
    """A generator for ``config``'s one model: through ``generate.vllm.url`` when given, else through a server
    started here for the base model and its adapter (log in ``log_dir``), stopped when the generator is closed."""
    model = SINGLE_ADAPTER if config.adapter is not None else BASE_NAME
    if config.vllm.url is not None:
        return ServedGenerator(server_generator(config, decoding, template, config.vllm.url, model))
    adapters = {SINGLE_ADAPTER: config.adapter} if config.adapter is not None else {}
    server = VLLMServer.start(server_spec(config, adapters), log_dir / SERVER_LOG,
                              startup_timeout_s=config.vllm.startup_timeout_s)
    try:
        return ServedGenerator(server_generator(config, decoding, template, server.base_url, model), server)
    except BaseException:
        server.stop()
        raise


class VLLMServers:
    """The vLLM servers of a run: one per base model, serving every adapter of that base model under its
    :func:`served_name`; each starts when its first model has answers to make, and :meth:`close` stops them all.

    Args:
        adapters: base model -> served name -> adapter directory, for every adapter of the run.
        log_dir: where each server's log goes (``vllm-server-<n>.log``).
    """

    def __init__(self, adapters: Mapping[str, Mapping[str, Path]], log_dir: Path):
        self.adapters = {base: dict(named) for base, named in adapters.items()}
        self.log_dir = log_dir
        self.servers: dict[str, VLLMServer] = {}

    def generator(self, config: GenerateConfig, decoding: DecodingConfig, template: TemplateName) -> Generator:
        """A generator for ``config``'s model through its base model's server (started now if need be)."""
        base = config.required_base_model()
        model = self._model_name(base, config.adapter)
        if config.vllm.url is not None:
            return ServedGenerator(server_generator(config, decoding, template, config.vllm.url, model))
        if base not in self.servers:
            log_path = self.log_dir / f"vllm-server-{len(self.servers) + 1}.log"
            self.servers[base] = VLLMServer.start(server_spec(config, self.adapters.get(base, {})), log_path,
                                                  startup_timeout_s=config.vllm.startup_timeout_s)
        return ServedGenerator(server_generator(config, decoding, template, self.servers[base].base_url, model))

    def close(self) -> None:
        """Stop every server started so far (idempotent)."""
        servers, self.servers = self.servers, {}
        for server in servers.values():
            server.stop()

    def _model_name(self, base: str, adapter: Path | None) -> str:
        if adapter is None:
            return BASE_NAME
        wanted = find_adapter_dir(adapter).resolve()
        for name, path in self.adapters.get(base, {}).items():
            if find_adapter_dir(path).resolve() == wanted:
                return name
        raise ValueError(f"{adapter} is not among the adapters of {base} this run serves")
