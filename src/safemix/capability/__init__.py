"""Capability benchmarks (PIQA, BoolQ, OpenBookQA; ARC, WinoGrande on request) through lm-evaluation-harness.

``evaluate_capability`` runs one model, ``run_capability_stage`` every model of a ``safemix run`` directory, and
``safemix.report.capability:capability_section`` draws the report's section. Offline, the tasks read the LLM
Foundry JSONL files of the data dir's ``capability-benchmarks/`` through YAMLs shipped here; online, lm-eval's
built-in tasks. Importing this package imports neither torch nor lm-eval (install it with ``safemix[eval]``).
"""

from safemix.capability.config import CapabilityConfig

__all__ = ["CapabilityConfig"]
