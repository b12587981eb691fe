"""Generation: answer evaluation suites with a model (HF, vLLM, an OpenAI-compatible server, or a fake).

The stage itself is :func:`safemix.generate.runner.generate_suites`. Importing this package imports no torch;
backends load their libraries when a run needs them.
"""

from safemix.generate.base import Generator
from safemix.generate.config import DecodingConfig, GenerateConfig, OpenAIConfig, load_presets

__all__ = ["DecodingConfig", "GenerateConfig", "Generator", "OpenAIConfig", "load_presets"]
