"""Small answer files for the win-rate tests: model ``side`` answers ``Instruction i`` with ``<side>-answer i``."""

from __future__ import annotations

from pathlib import Path

from safemix.records import Generation


def write_answers(path: Path, side: str, n: int, skip: int | None = None) -> Path:
    """Write ``n`` i-alpaca generation records (ids ``i-alpaca-0`` ...), leaving out item ``skip``; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [Generation(id=f"i-alpaca-{i}", suite="i-alpaca", category="general", prompt=f"Instruction {i}",
                        response=f"{side}-answer {i}", finish_reason="stop", n_new_tokens=2).model_dump_json()
             for i in range(n) if i != skip]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
