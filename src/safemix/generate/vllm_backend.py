"""Generation with vLLM in-process (CUDA), with a LoRA adapter passed as a LoRA request.

vLLM schedules its own continuous batches; prompts are handed over ``batch_size`` at a time only so that answers
reach the disk as they finish. Prompts are rendered and tokenised exactly as in the HF backend. Beam search is
not offered here (use the HF backend for the ``paper`` preset).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from safemix.errors import InputError
from safemix.generate.base import Generator, chunks, make_generation
from safemix.generate.config import DecodingConfig
from safemix.models.adapters import find_adapter_dir
from safemix.models.resolve import resolve_model
from safemix.prompts import PromptTemplate, TemplateName, get_template
from safemix.records import Generation, Prompt

INSTALL_HINT = ("the vllm backend needs the vllm package and a CUDA GPU: pip install vllm in an environment whose "
                "torch and transformers versions vllm supports, or run 'vllm serve' and use --backend openai")


class VLLMGenerator(Generator):
    """Generates with a ``vllm.LLM``; greedy (temperature 0) or sampling.

    Args:
        llm: the vLLM engine.
        template: renders each prompt into the model's input text.
        decoding: decoding settings (``num_beams`` must be 1).
        batch_size: prompts handed to vLLM per call (and written to disk per call).
        lora_request: the adapter as a ``vllm.lora.request.LoRARequest``, or None.
    """

    def __init__(self, llm: Any, template: PromptTemplate, decoding: DecodingConfig, batch_size: int,
                 lora_request: Any = None) -> None:
        from vllm import SamplingParams

        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.template = template
        self.batch_size = batch_size
        self.lora_request = lora_request
        self.sampling_params = SamplingParams(
            max_tokens=decoding.max_new_tokens,
            temperature=decoding.temperature if decoding.do_sample else 0.0,
            top_p=decoding.top_p if decoding.do_sample else 1.0,
            top_k=decoding.top_k if decoding.do_sample and decoding.top_k else -1,
            repetition_penalty=decoding.repetition_penalty,
            seed=decoding.seed,
        )

    @classmethod
    def load(cls, base_model: str, adapter: Path | None, template_name: TemplateName, decoding: DecodingConfig,
             batch_size: int, *, dtype: str = "float32") -> VLLMGenerator:
        """Start a vLLM engine on the base model, with LoRA enabled when an adapter is given.

        Raises:
            InputError: vllm is not installed, or beam search was asked for.
        """
        if decoding.num_beams != 1:
            raise InputError(f"decoding.num_beams: the vllm backend runs greedy or sampling only (got "
                             f"{decoding.num_beams}); use --backend hf for beam search")
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise InputError(INSTALL_HINT) from None
        lora_request, lora_options = None, {}
        if adapter is not None:
            adapter_dir = find_adapter_dir(adapter)
            rank = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))["r"]
            lora_request = LoRARequest("safemix-adapter", 1, str(adapter_dir))
            lora_options = {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1}
        llm = LLM(model=str(resolve_model(base_model)), dtype=dtype, seed=decoding.seed, **lora_options)
        tokenizer = llm.get_tokenizer()
        return cls(llm, get_template(template_name, tokenizer), decoding, batch_size, lora_request)

    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        """Yield answers ``batch_size`` prompts at a time."""
        add_special = self.template.add_special_tokens
        for batch in chunks(prompts, self.batch_size):
            inputs = [
                {"prompt_token_ids": self.tokenizer(self.template.prompt(p.prompt, p.input),
                                                    add_special_tokens=add_special)["input_ids"]}
                for p in batch
            ]
            outputs = self.llm.generate(inputs, self.sampling_params, lora_request=self.lora_request, use_tqdm=False)
            yield [self._record(prompt, output.outputs[0]) for prompt, output in zip(batch, outputs, strict=True)]

    def _record(self, prompt: Prompt, completion: Any) -> Generation:
        tokens = list(completion.token_ids)
        stopped = completion.finish_reason != "length"
        if stopped and tokens and tokens[-1] == self.tokenizer.eos_token_id:
            tokens = tokens[:-1]  # vLLM keeps the EOS among the output ids; the record counts answer tokens only
        return make_generation(prompt, completion.text.strip(), "stop" if stopped else "length", len(tokens))
