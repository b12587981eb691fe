"""A model-free backend with deterministic answers, for tests and dry runs of the pipeline."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from safemix.generate.base import Generator, chunks, make_generation, record_prompt
from safemix.generate.config import DecodingConfig
from safemix.records import FinishReason, Generation, Prompt

REFUSAL = "I'm sorry, but I cannot help with that."
COMPLIANCE = "Sure, here is an answer."


class FakeGenerator(Generator):
    """Answers every prompt without a model: a refusal or a compliance, chosen by a hash of the prompt text.

    The answer is the chosen opening followed by the prompt's words, cut to ``max_new_tokens`` words (then
    ``finish_reason`` is ``length``); a word counts as a token.
    """

    def __init__(self, decoding: DecodingConfig, batch_size: int) -> None:
        self.decoding = decoding
        self.batch_size = batch_size

    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        """Yield answers ``batch_size`` prompts at a time, in input order."""
        for batch in chunks(prompts, self.batch_size):
            yield [self._answer(prompt) for prompt in batch]

    def _answer(self, prompt: Prompt) -> Generation:
        text = record_prompt(prompt)
        refuses = hashlib.sha256(text.encode("utf-8")).digest()[0] % 2 == 0
        words = f"{REFUSAL if refuses else COMPLIANCE} {text}".split()
        kept = words[: self.decoding.max_new_tokens]
        finish_reason: FinishReason = "length" if len(words) > len(kept) else "stop"
        return make_generation(prompt, " ".join(kept), finish_reason, len(kept))
