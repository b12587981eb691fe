"""Training data: reading mixtures, tokenising with label masks, and planning micro-batches by length.

Everything here but ``collate`` is plain Python, so the label masking and the batch plan are unit-tested
without torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from safemix.data.readers import read_rows
from safemix.errors import first_problem, input_error
from safemix.prompts import PromptTemplate
from safemix.records import Example

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # label value that cross-entropy skips (PyTorch's default ignore_index)


def read_examples(path: Path) -> list[Example]:
    """Read a ``mixture-K.jsonl`` or ``val.jsonl`` written by ``safemix data build``.

    Raises:
        InputError: the file is missing or empty, or a line is not a mixture record (names the line and field).
    """
    examples = []
    for row in read_rows(Path(path), "jsonl"):
        try:
            examples.append(Example.model_validate(dict(row.values)))
        except ValidationError as err:
            raise input_error(path, f"not a mixture record: {first_problem(err)}", row.where) from None
    return examples


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: ``labels`` equals ``input_ids`` except ``IGNORE_INDEX`` where no loss is taken."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_loss_tokens(self) -> int:
        """Tokens the model is scored on: labels after the first position (nothing predicts position 0)."""
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def encode_example(
    example: Example, template: PromptTemplate, tokenizer: Any, cutoff_len: int, train_on_inputs: bool
) -> Encoded:
    """Tokenise ``prompt + output + eos`` and mask the labels.

    The prompt and the answer are tokenised separately and their ids concatenated, so the boundary is exact and
    the prompt tokens are the very ones generation will feed. Sequences longer than ``cutoff_len`` are cut
    (losing the eos, as Alpaca-LoRA does: the answer does not end there).

    Args:
        example: one mixture record.
        template: the prompt template.
        tokenizer: a Hugging Face tokenizer with an eos token.
        cutoff_len: longest sequence in tokens.
        train_on_inputs: take the loss on the prompt too (the paper's setting); otherwise on the answer only.
    """
    prompt_ids = tokenizer(template.prompt(example.instruction, example.input), add_special_tokens=template.add_special_tokens)["input_ids"]
    answer_ids = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + answer_ids)[:cutoff_len]
    prompt_labels = prompt_ids if train_on_inputs else [IGNORE_INDEX] * len(prompt_ids)
    labels = (prompt_labels + answer_ids)[:cutoff_len]
    return Encoded(input_ids, labels)


class BatchPlan:
    """Which examples form each micro-batch of each optimizer step; a pure function of the seed and step.

    Every epoch shuffles the examples with ``random.Random((seed, epoch))``. With ``length_grouping`` the shuffled
    examples are then sorted by length (ties keep the shuffled order), cut into micro-batches, and the
    micro-batches are shuffled: padding stays small and short and long examples still arrive throughout the
    epoch. (HF Trainer's ``group_by_length`` emits long-to-short mega-batches instead, which moves a small
    mixture's short safety examples to the end of the epoch.) Without it, micro-batches are consecutive slices
    of the shuffled order, as in Alpaca-LoRA.

    Epochs are chained into one stream of micro-batches and every optimizer step takes the next
    ``micro_batches_per_step`` of them, so every step has the same number of micro-batches (which gradient
    accumulation under DeepSpeed and FSDP needs) and a resumed run only needs the step number.
    """

    def __init__(
        self, lengths: Sequence[int], micro_batch_size: int, micro_batches_per_step: int, seed: int, length_grouping: bool
    ):
        self.lengths = list(lengths)
        self.micro_batch_size = micro_batch_size
        self.micro_batches_per_step = micro_batches_per_step
        self.seed = seed
        self.length_grouping = length_grouping
        self.micro_batches_per_epoch = math.ceil(len(self.lengths) / micro_batch_size)
        self._epoch = cache(self._plan_epoch)

    def steps_for_epochs(self, epochs: float) -> int:
        """Optimizer steps that cover ``epochs`` passes over the examples (rounded up to a whole step)."""
        return max(1, math.ceil(epochs * self.micro_batches_per_epoch / self.micro_batches_per_step))

    def _plan_epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}/{epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if self.length_grouping:
            order.sort(key=self.lengths.__getitem__)
        batches = [order[start : start + self.micro_batch_size] for start in range(0, len(order), self.micro_batch_size)]
        if self.length_grouping:
            rng.shuffle(batches)
        return batches

    def step(self, step: int) -> list[list[int]]:
        """The micro-batches (lists of example indices) of optimizer step ``step`` (0-based)."""
        first = step * self.micro_batches_per_step
        batches = []
        for position in range(first, first + self.micro_batches_per_step):
            epoch, index = divmod(position, self.micro_batches_per_epoch)
            batches.append(self._epoch(epoch)[index])
        return batches


def length_batches(lengths: Sequence[int], micro_batch_size: int) -> list[list[int]]:
    """Micro-batches of examples sorted by length, for evaluation (order does not matter there)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start : start + micro_batch_size] for start in range(0, len(order), micro_batch_size)]


def padded_width(lengths: Sequence[int], pad_to_multiple_of: int | None = None) -> int:
    """The width of a micro-batch: its longest sequence, rounded up to ``pad_to_multiple_of`` when given."""
    width = max(lengths, default=0)
    return -(-width // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else width


def padded_tokens(lengths: Sequence[int], pad_to_multiple_of: int | None = None) -> int:
    """Tokens a micro-batch of these lengths occupies once padded (see ``padded_width``)."""
    return padded_width(lengths, pad_to_multiple_of) * len(lengths)


def collate(
    examples: Sequence[Encoded], pad_token_id: int, device: torch.device | str = "cpu", pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to ``padded_width``: ``input_ids``, ``attention_mask`` and ``labels``."""
    import torch

    width = padded_width([len(example.input_ids) for example in examples], pad_to_multiple_of)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device), "labels": labels.to(device)}
