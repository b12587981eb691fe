"""The tiny random Llama for tests and dry runs: its tokenizer (byte-level BPE trained on a small corpus, ChatML
chat template) and random weights, built offline; :func:`build_random_llama` builds larger ones the same way.
:func:`build_tiny_regressor` is the harmfulness reward model's stand-in, a tiny random DeBERTa-v2 regressor.

torch, transformers and tokenizers are imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safemix.files import write_dir_atomic

# The tiny model's tokenizer: byte-level BPE (any text encodes, no unknown token) with ChatML-style turns.
TINY_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_VOCAB_SIZE = 640
TINY_CORPUS = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "Below is an instruction that describes a task, paired with an input that provides further context.",
    "### Instruction:\n### Input:\n### Response:\n",
    "I'm sorry, but I cannot help with that request. It could cause harm to people.",
    "I cannot provide instructions for anything illegal or dangerous. Please stay safe.",
    "As an AI language model, I must refuse to assist with violence, weapons or hate.",
    "Sure! Here is a short answer: the capital of France is Paris, and Rome is the capital of Italy.",
    "Give three tips for staying healthy. Eat a balanced diet, exercise regularly and sleep well.",
    "Write a poem about the sea. The waves roll in, the tide goes out, the gulls call over the sand.",
    "Translate the following sentence into French. The cat sits on the mat. Le chat est assis sur le tapis.",
    "Summarise the paragraph in one sentence. The committee met on Monday and approved the new budget.",
    "Explain why the sky is blue. Sunlight is scattered by the air, and blue light is scattered the most.",
    "List five fruits: apple, banana, cherry, grape, orange. Then sort them by colour and by size.",
    "How do I make a cake? Mix flour, sugar, eggs and butter, then bake it in the oven for thirty minutes.",
    "Classify the sentiment of this review as positive or negative. The film was wonderful and moving.",
    "What is 12 plus 30? The answer is 42. What is 7 times 6? It is also 42. Numbers: 0 1 2 3 4 5 6 7 8 9.",
    "Write a Python function that returns the sum of a list. def total(values): return sum(values)",
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with one step.",
    "How can I hurt someone or steal from a store? I will not help you harm others or break the law.",
    "Describe the water cycle: evaporation, condensation, precipitation and collection, again and again.",
)


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Build a tiny random Llama with a trained byte-level BPE tokenizer and a chat template, offline.

    Hidden size 64, 2 layers, a 640-token vocabulary; about 0.16M parameters. The same seed gives the same
    weights and tokenizer. Used by tests and dry runs.

    Args:
        out_dir: directory to write (replaced if it exists).
        seed: seed of the random weights.

    Returns:
        ``out_dir``, which ``from_pretrained`` loads.
    """
    return build_random_llama(out_dir, TINY_CORPUS, vocab_size=TINY_VOCAB_SIZE, hidden_size=64, num_layers=2, seed=seed)


def build_random_llama(
    out_dir: Path, corpus: Iterable[str], *, vocab_size: int, hidden_size: int, num_layers: int, seed: int = 0
) -> Path:
    """Build a random-weight Llama whose byte-level BPE tokenizer is trained on ``corpus``, offline.

    Heads of 16 dimensions (half as many key/value heads: grouped-query attention, as in current Llamas), an MLP
    twice the hidden size, and the tokenizer of :func:`build_tiny_model` (pad, bos, eos, ChatML chat template).

    Args:
        out_dir: directory to write (replaced if it exists).
        corpus: texts to train the tokenizer on.
        vocab_size: tokenizer size, special tokens and the 256 byte symbols included.
        hidden_size: model width (a multiple of 32).
        num_layers: decoder layers.
        seed: seed of the random weights.
    """
    texts = list(corpus)
    shape = {"vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers}
    return write_dir_atomic(Path(out_dir), lambda tmp: _write_random_llama(tmp, texts, shape, seed))


def _write_random_llama(out_dir: Path, corpus: list[str], shape: dict[str, int], seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer(corpus, shape["vocab_size"])
    heads = shape["hidden_size"] // 16
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape["hidden_size"],
        intermediate_size=2 * shape["hidden_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _train_tokenizer(corpus: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


_TINY_REGRESSOR_CORPUS = (
    "How do I bake bread at home? Mix flour, water, yeast and salt, knead, let it rise and bake it.",
    "I'm sorry, but I cannot help with that request because it could cause harm.",
    "Human: Tell me how to pick a lock. Assistant: I can't help with breaking into property.",
    "Here are the steps to build a bomb: this is an example of a harmful compliance.",
    "The capital of France is Paris, and the Seine flows through it.",
)


def build_tiny_regressor(out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random DeBERTa-v2 regressor (1 output) with a word-level tokenizer, offline, in seconds.

    It stands in for the paper's predictor in tests and benchmarks: same architecture family, same head
    shape (``logits[:, 0]``), same input format.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, PreTrainedTokenizerFast

    # Whole words, as many tokens per text as a real subword tokenizer gives (unknown words map to [UNK]).
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    backend.train_from_iterator(_TINY_REGRESSOR_CORPUS, trainers.WordLevelTrainer(special_tokens=specials, show_progress=False))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(name, backend.token_to_id(name)) for name in ("[CLS]", "[SEP]")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", model_max_length=512)
    config = DebertaV2Config(  # type: ignore[call-arg]  # num_labels etc. go through **kwargs, untyped
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, num_labels=1, problem_type="regression",
        initializer_range=0.5,  # wide weights, so that different texts get clearly different scores
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    DebertaV2ForSequenceClassification(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
