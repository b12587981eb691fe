"""The generator interface that every backend implements, and small helpers they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from safemix.records import FinishReason, Generation, Prompt

T = TypeVar("T")


class Generator(ABC):
    """Answers prompts with one model and fixed decoding settings.

    Backends implement :meth:`iter_batches`, which yields answers as each batch finishes (so the caller can
    append them to disk at once); over the whole iteration every prompt is answered exactly once.
    """

    @abstractmethod
    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        """Yield the answers to ``prompts`` batch by batch, in any order."""

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        """Return exactly one answer per prompt, in the order of ``prompts``."""
        by_id = {generation.id: generation for batch in self.iter_batches(prompts) for generation in batch}
        return [by_id[prompt.id] for prompt in prompts]

    def close(self) -> None:  # noqa: B027 - a hook with a default, not an abstract method
        """Release what the backend holds (threads, GPU memory); the default holds nothing."""


def eos_token_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """The tokenizer's EOS and every EOS the model's generation config names (chat models often list several):
    where an answer stops, in every backend that decodes it itself."""
    configured = generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def record_prompt(prompt: Prompt) -> str:
    """The prompt text written into a generation record: the instruction, then its input after a blank line."""
    return f"{prompt.prompt}\n\n{prompt.input}" if prompt.input else prompt.prompt


def make_generation(prompt: Prompt, response: str, finish_reason: FinishReason, n_new_tokens: int) -> Generation:
    """Build the record of one answer to ``prompt``."""
    if prompt.category is None:
        raise ValueError(f"prompt {prompt.id} has no category")
    return Generation(
        id=prompt.id,
        suite=prompt.suite,
        category=prompt.category,
        prompt=record_prompt(prompt),
        response=response,
        finish_reason=finish_reason,
        n_new_tokens=n_new_tokens,
    )


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` holding ``size`` items (the last may hold fewer)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def balanced_chunks(items: Sequence[T], max_size: int) -> Iterator[Sequence[T]]:
    """As few consecutive slices of at most ``max_size`` items as possible, their sizes differing by at most one.

    50 prompts in batches of at most 32 become 25 + 25, not 32 + 18: a short last batch decodes as many steps as a
    full one at a fraction of the throughput.
    """
    n_slices = -(-len(items) // max_size)
    start = 0
    for index in range(n_slices):
        end = start + len(items) // n_slices + (index < len(items) % n_slices)
        yield items[start:end]
        start = end
