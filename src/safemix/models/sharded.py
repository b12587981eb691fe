"""Sharded loading for FSDP2: a LoRA model whose base weights no process ever holds whole.

Every process builds the model on the meta device (no weight memory), adds the LoRA adapters, shards it with
``torch.distributed.fsdp.fully_shard`` (one unit per frozen weight matrix, one per decoder layer for the rest
of it, the rest in the root unit; see :func:`shard_in_units`) and then reads
from the safetensors files only the rows of each weight that its shard holds. FSDP2 shards every parameter on
dim 0 in ``torch.chunk`` pieces, so a shard is a contiguous byte range of the file: it is read straight into the
process's shard, without a memory map and without a full copy anywhere.

The LoRA weights are drawn here, identically in every process, from a generator seeded with ``seed``
(:func:`lora_initial_values`: ``lora_A`` Kaiming-uniform as PEFT draws it, ``lora_B`` zero), so that a loaded
model can be compared with an unsharded one initialised by the same function.

Needs an initialised ``torch.distributed`` process group; runs on CPUs over gloo as on GPUs over NCCL.
torch, transformers and peft are imported inside functions only.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from safemix.errors import input_error

SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
PEFT_PREFIX = "base_model.model."


def load_sharded_lora_model(resolved: Path, lora_config: Any, *, seed: int, device_type: str = "cpu",
                            gradient_checkpointing: bool = False, compute_dtype: str = "float32") -> Any:
    """Load ``resolved`` (a local model directory with safetensors weights) with LoRA, sharded over all processes.

    Args:
        resolved: directory holding ``config.json`` and ``model.safetensors`` (or an index and its shards).
        lora_config: a ``peft.LoraConfig``.
        seed: seed of the LoRA initialisation (see :func:`lora_initial_values`).
        device_type: ``cpu`` (gloo) or ``cuda`` (NCCL); the shards live there.
        gradient_checkpointing: recompute each decoder layer's activations in the backward pass instead of
            keeping them.
        compute_dtype: ``float32``, or ``bfloat16``: the frozen base weights are stored in it (a bfloat16 shard
            holds half the bytes of a float32 one), FSDP2 gathers every weight as bfloat16 and computes in it, and
            reduces the gradients in float32 (``MixedPrecisionPolicy``); the LoRA weights the optimizer steps stay
            float32.

    Returns:
        The ``PeftModel``, sharded with FSDP2; only the LoRA weights require gradients.

    Raises:
        InputError: the directory has no safetensors weights, or they miss a weight the model needs.
    """
    import torch
    import torch.distributed as dist
    from accelerate import init_empty_weights
    from peft import get_peft_model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.tensor import DTensor
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(resolved))
    with init_empty_weights():  # parameters on the meta device; buffers (rotary frequencies) computed as usual
        base = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, compute_dtype))
    base.tie_weights()  # from_config (transformers 5) leaves tied embeddings two weights; one unit must hold both
    if gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(base, lora_config)  # LoRA weights in float32 whatever the base's dtype
    lora_values = lora_initial_values(model, seed)

    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    precision = MixedPrecisionPolicy(param_dtype=getattr(torch, compute_dtype), reduce_dtype=torch.float32)
    shard_in_units(model, set(getattr(base, "_no_split_modules", None) or ()), mesh, precision)

    reader = SafetensorsRows(resolved)
    shards = {}
    for name, param in model.named_parameters():
        rows = _shard_rows(param.shape[0], mesh.get_local_rank(), mesh.size())
        if name in lora_values:
            local = lora_values[name][rows[0] : rows[1]].clone()
        else:
            local = reader.read_rows(checkpoint_name(name), rows[0], rows[1]).to(param.dtype)
        shards[name] = DTensor.from_local(
            local.to(device_type), param.device_mesh, param.placements, shape=param.shape, stride=param.stride(),
            run_check=False,
        )
    model.load_state_dict(shards, strict=False, assign=True)
    base.tie_weights()  # assign=True replaced the input embedding; a tied output embedding must follow it
    still_empty = [name for name, param in model.named_parameters() if param.device.type == "meta"]
    if still_empty:
        raise RuntimeError(f"sharded loading left weights on the meta device: {still_empty[:5]}")
    return model


def shard_in_units(model: Any, layer_classes: set[str], mesh: Any, precision: Any = None) -> None:
    """Shard ``model`` with FSDP2 in small units: each frozen weight matrix (the linear layers of the decoder layers,
    the input and output embeddings; a tied pair together), then each decoder layer (its norms and LoRA weights),
    then the root (the final norm).

    While FSDP2 runs a unit it holds the unit's all-gather buffer and its unsharded weights at once, so a process
    peaks at its shard plus about twice its largest unit: one weight matrix here, not a whole decoder layer (at
    hidden 2048, 34 MB instead of 151 MB).

    Args:
        model: the PEFT model, on the meta device or not.
        layer_classes: class names of the decoder layers (``_no_split_modules`` of a transformers model).
        mesh: the 1-D device mesh to shard over.
        precision: FSDP2's ``MixedPrecisionPolicy`` for every unit (default: compute in the weights' dtype).
    """
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    precision = precision or MixedPrecisionPolicy()
    modules_of_weight: dict[int, list[Any]] = {}
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) and not module.weight.requires_grad:
            modules_of_weight.setdefault(id(module.weight), []).append(module)
    for modules in modules_of_weight.values():
        fully_shard(modules, mesh=mesh, mp_policy=precision)
    for layer in [module for module in model.modules() if type(module).__name__ in layer_classes]:
        fully_shard(layer, mesh=mesh, mp_policy=precision)
    fully_shard(model, mesh=mesh, mp_policy=precision)


def lora_initial_values(model: Any, seed: int) -> dict[str, Any]:
    """The initial value of every LoRA weight of a PEFT model, as full CPU tensors, drawn from ``seed``.

    ``lora_A`` is Kaiming-uniform with ``a=sqrt(5)`` (PEFT's default), ``lora_B`` zero, so the adapter starts as
    the identity. The same model structure and seed give the same values in every process, whatever device the
    weights are on (meta included).

    Raises:
        ValueError: a trainable weight that is neither ``lora_A`` nor ``lora_B`` (e.g. ``modules_to_save``).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    values = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        value = torch.zeros(param.shape, dtype=torch.float32)
        if ".lora_A." in name:
            torch.nn.init.kaiming_uniform_(value, a=math.sqrt(5), generator=generator)
        elif ".lora_B." not in name:
            raise ValueError(f"sharded loading initialises LoRA weights only, not {name}")
        values[name] = value
    return values


def seeded_lora_model(base_model: Any, lora_config: Any, seed: int) -> Any:
    """``base_model`` with LoRA adapters whose weights are :func:`lora_initial_values` of ``seed``.

    The unsharded counterpart of :func:`load_sharded_lora_model`: both start from the same adapter weights, so
    their training steps can be compared.
    """
    import torch
    from peft import get_peft_model

    model = get_peft_model(base_model, lora_config)
    with torch.no_grad():
        for name, value in lora_initial_values(model, seed).items():
            model.get_parameter(name).copy_(value)
    return model


def checkpoint_name(parameter_name: str) -> str:
    """The safetensors name of a base weight of a PEFT model (``base_model.model.`` and ``.base_layer`` dropped)."""
    return parameter_name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")


def _shard_rows(n_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of dim 0 that FSDP2's shard of ``rank`` holds (``torch.chunk`` pieces)."""
    chunk = -(-n_rows // world_size)
    start = min(rank * chunk, n_rows)
    return start, min(start + chunk, n_rows)


class SafetensorsRows:
    """Reads a row range (dim 0) of one tensor from a model's safetensors files, without mapping the file.

    A memory-mapped read would leave every page it touched resident in the process; a plain read into the
    destination tensor costs that tensor only.
    """

    def __init__(self, model_dir: Path) -> None:
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted({model_dir / file for file in weight_map.values()})
        elif (model_dir / "model.safetensors").is_file():
            files = [model_dir / "model.safetensors"]
        else:
            raise input_error(str(model_dir), "sharded loading needs safetensors weights (model.safetensors)")
        self._entries: dict[str, tuple[Path, int, dict[str, Any]]] = {}
        for file in files:
            with file.open("rb") as handle:
                header_size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(header_size))
            for name, entry in header.items():
                if name != "__metadata__":
                    self._entries[name] = (file, 8 + header_size, entry)

    def read_rows(self, name: str, start: int, stop: int) -> Any:
        """Rows ``[start, stop)`` of tensor ``name`` in its stored dtype.

        Raises:
            InputError: no tensor of that name, or a dtype this reader does not know.
        """
        import torch

        if name not in self._entries:
            raise input_error(name, "not found in the model's safetensors files")
        file, data_start, entry = self._entries[name]
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise input_error(name, f"sharded loading reads {sorted(SAFETENSORS_DTYPES)}, not {entry['dtype']}")
        shape = entry["shape"]
        rows = torch.empty([stop - start, *shape[1:]], dtype=getattr(torch, SAFETENSORS_DTYPES[entry["dtype"]]))
        row_bytes = math.prod(shape[1:]) * rows.element_size()
        with file.open("rb") as handle:
            handle.seek(data_start + entry["data_offsets"][0] + start * row_bytes)
            handle.readinto(rows.view(-1).view(torch.uint8).numpy().data)
        return rows

