"""Harmfulness scoring speed: the reference loop against safemix, on the same texts and the same model.

(a) reference: a ``datasets`` Dataset, ``map`` tokenisation (truncation at 512), batches of 128 in input
    order, each padded to its longest member (``DataCollatorWithPadding``), score ``logits[:, 0]``;
(b) safemix: ``harmfulness-rm`` (length-sorted batches, padded to their own longest member).
The model is a tiny random DeBERTa-v2 regressor (``build_tiny_regressor``) unless ``--model`` names a local
directory. The texts are XSTest's 1,350 labelled completions (from the data directory), or synthetic
texts of mixed length when the data is absent. Prints the largest score difference and ``speedup=X.XX``.

    .venv/bin/python benchmarks/scoring.py [--model DIR] [--repeats 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from safemix.data.catalog import default_data_dir
from safemix.models.tiny import build_tiny_regressor
from safemix.scoring.harmfulness import HarmfulnessRewardModel, HarmfulnessSettings, format_text
from safemix.scoring.judge_data import XSTEST_COMPLETIONS, read_xstest_completions

REFERENCE_BATCH_SIZE = 128
MAX_TOKENS = 512


def benchmark_pairs() -> list[tuple[str, str]]:
    """XSTest's labelled completions when the data directory is present, else seeded synthetic pairs."""
    data_dir = default_data_dir()
    if data_dir is not None:
        pairs = []
        for name in XSTEST_COMPLETIONS.values():
            examples, _ = read_xstest_completions(name, data_dir)
            pairs.extend((e.prompt, e.response) for e in examples)
        return pairs
    rng = random.Random(0)
    words = ["the", "model", "refuses", "to", "answer", "because", "safety", "matters", "here", "are", "steps", "you", "can", "follow"]
    return [("Explain " + " ".join(rng.choices(words, k=8)), " ".join(rng.choices(words, k=rng.randint(5, 400))))
            for _ in range(1350)]


def reference_scores(model_dir: Path, pairs: list[tuple[str, str]]) -> list[float]:
    """The reference predictor's procedure: dataset map, input-order batches of 128, pad to the longest."""
    from datasets import Dataset
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    dataset = Dataset.from_dict({"text": [format_text(p, r) for p, r in pairs]})
    dataset = dataset.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=MAX_TOKENS),
                          batched=True, remove_columns=["text"])
    loader = DataLoader(dataset, batch_size=REFERENCE_BATCH_SIZE, collate_fn=DataCollatorWithPadding(tokenizer))
    scores: list[float] = []
    with torch.inference_mode():
        for batch in loader:
            scores.extend(model(**batch).logits[:, 0].tolist())
    return scores


def safemix_scores(model_dir: Path, pairs: list[tuple[str, str]], batch_size: int) -> list[float]:
    """safemix's harmfulness-rm scorer, loaded from the same directory."""
    scorer = HarmfulnessRewardModel(HarmfulnessSettings(model=str(model_dir), device="cpu", batch_size=batch_size))
    return [float(j.value) for j in scorer.score([p for p, _ in pairs], [r for _, r in pairs])]  # type: ignore[arg-type]


def timed(fn, *args) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="local sequence-classification model (default: tiny random DeBERTa-v2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="safemix batch size")
    args = parser.parse_args()
    pairs = benchmark_pairs()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_tiny_regressor(Path(tmp) / "tiny-regressor")
        reference_s, safemix_s = [], []
        for _ in range(args.repeats):
            seconds, reference = timed(reference_scores, model_dir, pairs)
            reference_s.append(seconds)
            seconds, ours = timed(safemix_scores, model_dir, pairs, args.batch_size)
            safemix_s.append(seconds)
    difference = max(abs(a - b) for a, b in zip(reference, ours))
    scale = max(abs(a) for a in reference)
    print(f"texts={len(pairs)} torch_threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"reference_s={min(reference_s):.2f} safemix_s={min(safemix_s):.2f} (best of {args.repeats}, model load included)")
    print(f"max_abs_difference={difference:.2e} (largest |score| {scale:.2f})")
    assert difference <= 1e-4 * max(1.0, scale), "scores disagree"
    print(f"speedup={min(reference_s) / min(safemix_s):.2f}")


if __name__ == "__main__":
    main()
