"""The refusal judge's network: all-MiniLM-L6-v2 reading (prompt, response) as one input, LoRA-tuned, 3 classes.

A cross-encoder sees the request and the answer together, so attention can relate the two: whether the answer
takes the request up or turns it down. (The first judge embedded the response alone with the frozen encoder; a
linear head over those embeddings separated topics, not stances.) Input: ``[CLS] prompt [SEP] response [SEP]``,
the prompt cut to ``max_prompt_tokens`` and the response to what is left of ``max_tokens`` (refusals announce
themselves early). Output: logits over :data:`~safemix.scoring.labels.REFUSAL_LABELS` from the mean of the
last hidden states, as sentence-transformers pools this encoder, next to XSTest's prefix-rule flag.

Only the LoRA matrices and the classifier are trained and saved (about 0.7 MB); loading merges them into the
encoder's weights, so scoring runs the plain encoder. This module imports torch at the top: import it lazily.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, AutoTokenizer
from transformers.masking_utils import create_bidirectional_mask

from safemix.scoring.judge import NetworkShape
from safemix.scoring.strmatch import is_prefix_refusal

log = logging.getLogger(__name__)

#: Every linear layer of the BERT blocks: attention (query, key, value, output dense) and the MLP (dense).
TARGET_MODULES = ["query", "key", "value", "dense"]


@dataclass(frozen=True)
class PairInput:
    """One (prompt, response) pair as the network reads it: token ids, token types, XSTest's prefix-rule flag."""

    ids: list[int]
    types: list[int]
    flag: float


@dataclass(frozen=True)
class FrozenState:
    """One pair's hidden states entering the top layers, ``(length, hidden)`` float32, and its flag."""

    hidden: torch.Tensor
    flag: float


class CrossEncoder(torch.nn.Module):
    """An encoder (with LoRA adapters while training) and a linear classifier over its mean-pooled output.

    Since only the top ``trainable_layers`` change, training runs the frozen layers below once per example
    (:func:`frozen_states`) and each step only the top layers (:meth:`top_forward`): the same function as
    :meth:`forward`, at a fraction of the cost.
    """

    def __init__(self, encoder: Any, n_labels: int, trainable_layers: int):
        super().__init__()
        self.encoder = encoder
        # the pooled output and XSTest's prefix-rule flag: a stock refusal opening is strong evidence, and the
        # encoder learns when it misleads ("I'm sorry to hear that. Here is how...")
        self.classifier = torch.nn.Linear(encoder.config.hidden_size + 1, n_labels)
        self.trainable_layers = trainable_layers

    def forward(self, batch: dict[str, torch.Tensor], flags: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(batch, n_labels)``, in float32, from token ids and prefix-rule flags."""
        return self._classify(self.encoder(**batch).last_hidden_state, batch["attention_mask"], flags)

    def top_forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """Logits from the hidden states that enter the top layers (see :func:`frozen_states`)."""
        bert = self.bert()
        mask = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in bert.encoder.layer[-self.trainable_layers :]:
            hidden = layer(hidden, mask)
        return self._classify(hidden, attention_mask, flags)

    def bert(self) -> Any:
        """The underlying transformers BertModel (inside the peft wrapper while adapters are separate)."""
        return self.encoder.get_base_model() if hasattr(self.encoder, "get_base_model") else self.encoder

    def _classify(self, hidden: torch.Tensor, attention_mask: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits: torch.Tensor = self.classifier(torch.cat([pooled.float(), flags.float().unsqueeze(-1)], dim=-1))
        return logits


def new_network(encoder_dir: Path, shape: NetworkShape, n_labels: int, *, dropout: float, seed: int) -> CrossEncoder:
    """The encoder with fresh LoRA adapters on its top layers and a fresh classifier (initialised from ``seed``)."""
    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(encoder_dir)
    n_layers = encoder.config.num_hidden_layers
    config = LoraConfig(r=shape.lora_r, lora_alpha=shape.lora_alpha, lora_dropout=dropout, target_modules=TARGET_MODULES,
                        layers_to_transform=list(range(n_layers - shape.trainable_layers, n_layers)), layers_pattern="layer")
    return CrossEncoder(get_peft_model(encoder, config), n_labels, shape.trainable_layers)


def frozen_states(network: CrossEncoder, pairs: Sequence[PairInput], encoder: PairEncoder,
                  batch_size: int = 64) -> list[FrozenState]:
    """Per pair, the hidden states that enter the top layers (the layers below are frozen) and its flag."""
    bert = network.bert()
    first_top = bert.config.num_hidden_layers - network.trainable_layers
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].ids))
    states: list[FrozenState] = [FrozenState(torch.empty(0), 0.0)] * len(pairs)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            hidden = bert(**encoder.batch([pairs[i] for i in chunk]), output_hidden_states=True).hidden_states[first_top]
            for row, i in enumerate(chunk):
                states[i] = FrozenState(hidden[row, : len(pairs[i].ids)].clone(), pairs[i].flag)
    return states


def padded(states: Sequence[FrozenState]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad hidden states into a batch; returns (hidden, attention mask, flags)."""
    width = max(len(s.hidden) for s in states)
    hidden = torch.zeros(len(states), width, states[0].hidden.shape[-1])
    mask = torch.zeros(len(states), width, dtype=torch.long)
    for row, state in enumerate(states):
        hidden[row, : len(state.hidden)] = state.hidden
        mask[row, : len(state.hidden)] = 1
    return hidden, mask, torch.tensor([s.flag for s in states])


def load_tokenizer(encoder_dir: Path) -> Any:
    """The encoder's WordPiece tokenizer."""
    return AutoTokenizer.from_pretrained(encoder_dir)


class PairEncoder:
    """Token ids of (prompt, response) pairs, cut to the network's input lengths; tokenizes each text once."""

    def __init__(self, tokenizer: Any, shape: NetworkShape):
        self.tokenizer = tokenizer
        self.shape = shape

    def ids(self, prompt: str, response: str) -> PairInput:
        """Input ids, token type ids and prefix-rule flag of one pair, without padding."""
        tok = self.tokenizer
        prompt_ids = tok(prompt, add_special_tokens=False, truncation=True, max_length=self.shape.max_prompt_tokens)["input_ids"]
        room = self.shape.max_tokens - len(prompt_ids) - 3
        response_ids = tok(response, add_special_tokens=False, truncation=True, max_length=max(room, 1))["input_ids"]
        first = [tok.cls_token_id, *prompt_ids, tok.sep_token_id]
        second = [*response_ids, tok.sep_token_id]
        return PairInput(first + second, [0] * len(first) + [1] * len(second), float(is_prefix_refusal(response)))

    def batch(self, pairs: Sequence[PairInput]) -> dict[str, torch.Tensor]:
        """Pad a list of :meth:`ids` results into the encoder's inputs (right padding)."""
        width = max(len(p.ids) for p in pairs)
        pad = self.tokenizer.pad_token_id
        return {
            "input_ids": torch.tensor([p.ids + [pad] * (width - len(p.ids)) for p in pairs]),
            "token_type_ids": torch.tensor([p.types + [0] * (width - len(p.types)) for p in pairs]),
            "attention_mask": torch.tensor([[1] * len(p.ids) + [0] * (width - len(p.ids)) for p in pairs]),
        }


@dataclass(frozen=True)
class Fitting:
    """How one training stage runs."""

    epochs: int
    learning_rate: float
    batch_size: int
    weight_decay: float
    warmup_share: float
    seed: int
    bfloat16: bool


def length_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """A shuffled order, cut into batches of similar lengths (sorted within windows of 50 batches), batches shuffled."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def fit(network: CrossEncoder, states: Sequence[FrozenState], labels: Sequence[int], fitting: Fitting, describe: str) -> float:
    """Train the LoRA adapters and the classifier by AdamW on cross-entropy; returns the last epoch's mean loss.

    ``states`` are the examples' :func:`frozen_states`.
    """
    generator = torch.Generator().manual_seed(fitting.seed)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=fitting.learning_rate, weight_decay=fitting.weight_decay)
    steps = fitting.epochs * math.ceil(len(states) / fitting.batch_size)
    warmup = max(1, int(steps * fitting.warmup_share))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    targets = torch.tensor(list(labels))
    lengths = [len(state.hidden) for state in states]
    network.train()
    mean_loss = math.nan
    for epoch in range(fitting.epochs):
        total, count = 0.0, 0
        for batch_ids in length_batches(lengths, fitting.batch_size, generator):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fitting.bfloat16):
                logits = network.top_forward(*padded([states[i] for i in batch_ids]))
            loss = torch.nn.functional.cross_entropy(logits, targets[batch_ids])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
            total, count = total + loss.item() * len(batch_ids), count + len(batch_ids)
        mean_loss = total / max(count, 1)
        log.info("%s: epoch %d/%d, loss %.4f", describe, epoch + 1, fitting.epochs, mean_loss)
    network.eval()
    return mean_loss


def predict(network: CrossEncoder, pairs: Sequence[PairInput], encoder: PairEncoder, batch_size: int = 64) -> Any:
    """Class probabilities, a float32 numpy array of shape ``(n, n_labels)``, in input order (batched by length)."""
    def logits(chunk: list[int]) -> torch.Tensor:
        chosen = [pairs[i] for i in chunk]
        chunk_logits: torch.Tensor = network(encoder.batch(chosen), torch.tensor([p.flag for p in chosen]))
        return chunk_logits

    return _batched_probabilities(len(pairs), lambda i: len(pairs[i].ids), batch_size, logits, network)


def predict_states(network: CrossEncoder, states: Sequence[FrozenState], batch_size: int = 64) -> Any:
    """Class probabilities from :func:`frozen_states` (same values as :func:`predict` on the pairs)."""
    return _batched_probabilities(len(states), lambda i: len(states[i].hidden), batch_size,
                                  lambda chunk: network.top_forward(*padded([states[i] for i in chunk])), network)


def _batched_probabilities(n: int, length: Any, batch_size: int, logits_of: Any, network: CrossEncoder) -> Any:
    import numpy as np

    order = sorted(range(n), key=length)
    out = np.zeros((n, network.classifier.out_features), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = torch.softmax(logits_of(chunk), dim=-1).numpy()
    return out


def trained_tensors(network: CrossEncoder) -> dict[str, torch.Tensor]:
    """The trained weights (LoRA matrices and classifier), by parameter name."""
    return {name: param.detach().contiguous().clone() for name, param in network.named_parameters() if param.requires_grad}


def load_trained(network: CrossEncoder, tensors: dict[str, torch.Tensor]) -> None:
    """Put saved trained weights back; every trainable parameter must be among them, and nothing else."""
    expected = {name for name, param in network.named_parameters() if param.requires_grad}
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(f"weights do not fit the network (missing {missing[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        params = dict(network.named_parameters())
        for name, tensor in tensors.items():
            params[name].copy_(tensor)


def merged(network: CrossEncoder) -> CrossEncoder:
    """The network with its LoRA adapters merged into the encoder (faster to run; no longer trainable)."""
    network.encoder = network.encoder.merge_and_unload()
    return network.eval()
