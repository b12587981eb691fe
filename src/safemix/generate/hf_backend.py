"""Batched generation with Hugging Face transformers (CPU or GPU), optionally with a LoRA adapter.

Prompts are rendered with the template the adapter was trained with, tokenised once, sorted by length (longest
first, so a batch that does not fit in memory fails at once) and cut into batches that need little padding.
Each batch is padded on the left with an attention mask and decoded with the KV cache until EOS or
``max_new_tokens`` (a cache that copies less than transformers' default, see ``kv_cache``). With greedy decoding a prompt gets the same answer in any batch (a test checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safemix.generate.base import Generator, balanced_chunks, eos_token_ids, make_generation
from safemix.generate.config import DecodingConfig
from safemix.models.dtypes import Dtype
from safemix.models.loading import load_model_and_tokenizer
from safemix.prompts import PromptTemplate, TemplateName, get_template
from safemix.records import Generation, Prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Continuation:
    """What the model generated after one input.

    Attributes:
        tokens: the new tokens, up to and without the first EOS.
        stopped: whether an EOS ended it (else ``max_new_tokens`` did).
        choice_probabilities: per step of ``tokens``, the probabilities of the requested choice tokens.
    """

    tokens: list[int]
    stopped: bool
    choice_probabilities: list[list[float]]


class HFGenerator(Generator):
    """Generates with a transformers causal LM (an adapter is merged into it when loaded).

    Args:
        model: the model, in eval mode with ``use_cache=True``.
        tokenizer: its tokenizer, with a pad token.
        template: renders each prompt into the model's input text.
        decoding: decoding settings.
        batch_size: prompts per ``generate`` call.
    """

    def __init__(self, model: Any, tokenizer: Any, template: PromptTemplate, decoding: DecodingConfig,
                 batch_size: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.decoding = decoding
        self.batch_size = batch_size
        self.eos_token_ids = eos_token_ids(model.generation_config, tokenizer)
        self.generation_config = self._generation_config()

    @classmethod
    def load(cls, base_model: str, adapter: Path | None, template_name: TemplateName, decoding: DecodingConfig,
             batch_size: int, *, dtype: Dtype = "float32", device: str = "cpu") -> HFGenerator:
        """Load the base model (and adapter) and build a generator on it.

        An adapter is merged into the base weights: every decoding step then runs the base model's matmuls only,
        instead of two more small ones per adapted module (with LoRA on every projection of SmolLM2-135M in
        bfloat16 on a CPU, unmerged generation took over twice as long).
        """
        model, tokenizer = load_model_and_tokenizer(base_model, adapter, dtype=dtype, device=device)
        if adapter is not None:
            model = model.merge_and_unload()
        return cls(model, tokenizer, get_template(template_name, tokenizer), decoding, batch_size)

    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        """Yield answers batch by batch, longest prompts first, in balanced batches of at most ``batch_size``."""
        add_special = self.template.add_special_tokens
        token_ids = [
            self.tokenizer(self.template.prompt(prompt.prompt, prompt.input), add_special_tokens=add_special)["input_ids"]
            for prompt in prompts
        ]
        for batch in self.iter_continuations(token_ids):
            yield [self._record(prompts[index], continuation) for index, continuation in batch]

    def iter_continuations(self, token_ids: Sequence[list[int]], choice_ids: Sequence[int] = ()
                           ) -> Iterator[list[tuple[int, Continuation]]]:
        """Continue already tokenised inputs; yield ``(input index, continuation)`` pairs batch by batch.

        Inputs run longest first, in balanced batches of at most ``batch_size``. With ``choice_ids`` (greedy
        decoding only) each continuation also holds the probabilities of those tokens at every step.
        """
        if choice_ids and (self.decoding.num_beams != 1 or self.decoding.do_sample):
            raise ValueError("token probabilities are only kept with greedy decoding")
        order = sorted(range(len(token_ids)), key=lambda index: (-len(token_ids[index]), index))
        for batch in balanced_chunks(order, self.batch_size):
            yield list(zip(batch, self._generate_batch([token_ids[index] for index in batch], choice_ids), strict=True))

    def _generate_batch(self, token_ids: list[list[int]], choice_ids: Sequence[int]) -> list[Continuation]:
        import torch

        from safemix.generate.kv_cache import generation_cache

        width = max(len(ids) for ids in token_ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in token_ids], device=self.model.device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in token_ids],
                                      device=self.model.device)
        if self.decoding.do_sample:
            torch.manual_seed(self.decoding.seed)
        keep_scores = {"output_scores": True, "return_dict_in_generate": True} if choice_ids else {}
        with torch.inference_mode():
            cache = generation_cache(self.model, input_ids, attention_mask, self.decoding.num_beams,
                                     self.decoding.max_new_tokens)
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                         generation_config=self.generation_config,
                                         **({"cache": cache} if cache is not None else {}), **keep_scores)
        sequences = output.sequences if choice_ids else output
        probabilities = (torch.softmax(torch.stack(output.scores, dim=1).float(), dim=-1)[..., list(choice_ids)].tolist()
                         if choice_ids else [[] for _ in token_ids])
        return [self._continuation(row[width:].tolist(), steps) for row, steps in zip(sequences, probabilities, strict=True)]

    def _continuation(self, new_tokens: list[int], choice_probabilities: list[list[float]]) -> Continuation:
        stop = next((index for index, token in enumerate(new_tokens) if token in self.eos_token_ids), None)
        return Continuation(new_tokens if stop is None else new_tokens[:stop], stop is not None,
                            choice_probabilities[: len(new_tokens) if stop is None else stop])

    def _record(self, prompt: Prompt, continuation: Continuation) -> Generation:
        response = self.tokenizer.decode(continuation.tokens, skip_special_tokens=True).strip()
        return make_generation(prompt, response, "stop" if continuation.stopped else "length", len(continuation.tokens))

    def _generation_config(self) -> Any:
        from transformers import GenerationConfig

        decoding = self.decoding
        sampling = {"temperature": decoding.temperature, "top_p": decoding.top_p, "top_k": decoding.top_k}
        # do_sample, beams and limits are always set, so the model's generation_config.json (which may ask for
        # sampling) cannot change the decoding; its sampling knobs are ignored unless do_sample is on.
        return GenerationConfig(
            max_new_tokens=decoding.max_new_tokens,
            num_beams=decoding.num_beams,
            do_sample=decoding.do_sample,
            repetition_penalty=decoding.repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_token_ids),
            use_cache=True,
            **(sampling if decoding.do_sample else {}),
        )
