"""The vllm backend on the tiny model (CUDA and the vllm package needed; skipped otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from safemix.generate.config import DecodingConfig
from safemix.records import Prompt

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safemix.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


def test_vllm_answers_every_prompt_greedily_and_deterministically(tiny_model_dir: Path) -> None:
    pytest.importorskip("vllm")
    from safemix.generate.vllm_backend import VLLMGenerator

    prompts = [Prompt(id=f"p-{index}", suite="p", category="general", prompt=f"question {index} " + "word " * index)
               for index in range(10)]
    generator = VLLMGenerator.load(str(tiny_model_dir), None, "alpaca", DecodingConfig(max_new_tokens=12), batch_size=4)
    first = generator.generate(prompts)
    second = generator.generate(prompts)
    assert [record.id for record in first] == [prompt.id for prompt in prompts]
    assert first == second
    assert all(0 <= record.n_new_tokens <= 12 for record in first)
    assert all(record.n_new_tokens == 12 for record in first if record.finish_reason == "length")
