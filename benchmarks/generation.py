"""Generate one suite twice with the same model and decoding: (a) as the paper's reference code does, one prompt at
a time; (b) with safemix (length-sorted batches, left padding). Check the answers agree; print both times.

(a) follows alpaca-lora's ``generate.py``, which the paper's code ran: Alpaca prompt, tokenised alone, then
``model.generate`` with ``GenerationConfig(temperature=0.1, top_p=0.75, top_k=40, num_beams=4)`` and
``max_new_tokens=128`` (no sampling, so beam search), the answer being the decoded text after ``### Response:``.
(b) is ``HFGenerator`` with the same decoding (the ``paper`` preset). Batched beam search may pick different
beams than unbatched because padding changes the floating-point sums, so the exact-match rate is reported, not
assumed. The last line is ``speedup=X.XX`` (time of (a) / time of (b)).

    python benchmarks/generation.py --model tiny [--n-prompts 50] [--batch-size 32]
    python benchmarks/generation.py --model smollm2-135m-instruct [--threads 1] [--preset greedy]
    SAFEMIX_VLLM_PYTHON=.venv-vllm/bin/python python benchmarks/generation.py --backend vllm --model smollm2-135m-instruct

With ``--backend vllm`` the baseline is (b) and the run measured is (c), the same prompts through a vLLM server
that safemix starts (its start-up time is printed apart and not counted); the last line is then
``speedup=X.XX`` = time of (b) / time of (c), with the share of identical answers above it.

On a machine shared with other work, give ``--threads 1``: with one torch thread per core, every operation waits
for a thread that another process has descheduled, which slows small operations (the reference's) far more
than large ones and so flatters the batched run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from safemix.data.catalog import default_data_dir
from safemix.data.suites import load_suite
from safemix.generate.config import GenerateConfig, load_presets
from safemix.generate.hf_backend import HFGenerator
from safemix.models import build_tiny_model, load_model_and_tokenizer
from safemix.prompts import ALPACA_TEMPLATE, get_template
from safemix.records import Prompt

# alpaca-lora generate.py's evaluate() defaults, as the paper's code called it
REFERENCE_SAMPLING_KNOBS = {"temperature": 0.1, "top_p": 0.75, "top_k": 40}


def reference_answers(model: Any, tokenizer: Any, prompts: list[Prompt], num_beams: int, max_new_tokens: int) -> list[str]:
    """Answer one prompt at a time, as the reference code does."""
    from transformers import GenerationConfig

    template = get_template("alpaca")
    config = GenerationConfig(num_beams=num_beams, **REFERENCE_SAMPLING_KNOBS)
    answers = []
    for prompt in prompts:
        inputs = tokenizer(template.prompt(prompt.prompt, prompt.input), return_tensors="pt")
        with torch.no_grad():
            output = model.generate(input_ids=inputs["input_ids"], generation_config=config,
                                    max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(output[0], skip_special_tokens=True)
        answers.append(text.split(ALPACA_TEMPLATE["response_split"], 1)[1].strip())
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (built here), a built-in name or a model directory")
    parser.add_argument("--suite", default="i-alpaca")
    parser.add_argument("--n-prompts", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=GenerateConfig().batch_size)
    parser.add_argument("--preset", default="paper", help="decoding preset shared by (a) and (b)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for both runs (default: torch's choice, one per core)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--backend", choices=("reference", "vllm"), default="reference",
                        help="what (b) is compared with: the reference code (a), or a vLLM server (c)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    decoding = load_presets()[args.preset]
    prompts = list(load_suite(args.suite, default_data_dir(args.data_dir)).prompts[: args.n_prompts])
    with tempfile.TemporaryDirectory() as tmp:
        model_name = str(build_tiny_model(Path(tmp) / "tiny")) if args.model == "tiny" else args.model
        model, tokenizer = load_model_and_tokenizer(model_name)
        print(f"model {args.model}; suite {args.suite}, {len(prompts)} prompts; {decoding.num_beams} beams, "
              f"{decoding.max_new_tokens} new tokens; safemix batch size {args.batch_size}")

        if args.backend == "reference":
            start = time.perf_counter()
            reference = reference_answers(model, tokenizer, prompts, decoding.num_beams, decoding.max_new_tokens)
            reference_s = time.perf_counter() - start
            print(f"(a) reference, one prompt at a time: {reference_s:.1f} s "
                  f"({len(prompts) / reference_s:.2f} prompts/s)")

        generator = HFGenerator(model, tokenizer, get_template("alpaca"), decoding, args.batch_size)
        start = time.perf_counter()
        records = generator.generate(prompts)
        safemix_s = time.perf_counter() - start
        print(f"(b) safemix, batched and length-sorted: {safemix_s:.1f} s ({len(prompts) / safemix_s:.2f} prompts/s)")
        del model
        if args.backend == "vllm":
            reference, reference_s = served_answers(model_name, prompts, decoding, Path(tmp))

    print("load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}; torch threads: {}".format(
        *os.getloadavg(), torch.get_num_threads()))
    same = sum(record.response == answer for record, answer in zip(records, reference, strict=True))
    print(f"agreement: {same}/{len(prompts)} answers identical ({100 * same / len(prompts):.0f}%)")
    print(f"speedup={(reference_s / safemix_s) if args.backend == 'reference' else (safemix_s / reference_s):.2f}")


def served_answers(model_name: str, prompts: list[Prompt], decoding: Any, log_dir: Path) -> tuple[list[str], float]:
    """(c): the prompts through a vLLM server started here (alpaca template, the same decoding); the answers and
    the seconds they took, start-up excluded."""
    from safemix.generate.vllm_backend import standalone_generator

    config = GenerateConfig(backend="vllm", base_model=model_name)
    start = time.perf_counter()
    generator = standalone_generator(config, decoding, "alpaca", log_dir)
    print(f"(c) vLLM server started in {time.perf_counter() - start:.1f} s")
    try:
        start = time.perf_counter()
        records = generator.generate(prompts)
        served_s = time.perf_counter() - start
    finally:
        generator.close()
    print(f"(c) vLLM server, {config.vllm.concurrency} requests in flight: {served_s:.1f} s "
          f"({len(prompts) / served_s:.2f} prompts/s)")
    return [record.response for record in records], served_s


if __name__ == "__main__":
    main()
