"""How much greedy answers change with what differs between machines: (a) torch's CPU thread count, 1 vs 2;
(b) float32 vs bfloat16 weights; (c) the bfloat16 kernels, native AVX512-BF16 vs those of CPUs without it.

On one machine with one setting a rerun gives the same bytes (tests/integration/test_determinism.py); this script
measures what changes when the setting changes. One model answers the same prompts greedily in safemix's batches
(``HFGenerator``) once per setting, each dtype and kernel choice in a fresh process. (c) caps oneDNN, which runs
torch's bfloat16 matmuls on a CPU, at an older instruction set (``ONEDNN_MAX_CPU_ISA``): the same bfloat16
arithmetic through another CPU's kernels. It is a stand-in: safemix itself runs bfloat16 on a CPU only where it
is native, and an AMX machine (Intel Sapphire Rapids and later) runs yet other kernels, not reachable from here.

Each comparison reports, over the prompts: the answers that are byte-identical; those whose first
``--prefix-tokens`` tokens are identical (the quickstart keeps 48 new tokens); for the answers that differ, the
median token at which they first differ; and how many answers change their ``refusal-strmatch`` label (the
quickstart's headline scorer). Tokens are the answer re-tokenised, the same way for both sides.

    python benchmarks/determinism.py [--model smollm2-135m-instruct] [--suite xstest] [--n-prompts 50]
    python benchmarks/determinism.py --model tiny --max-new-tokens 32
    python benchmarks/determinism.py --adapter runs/quickstart/train/k300/adapter --suite starter-safe \
        --n-prompts 60 --max-new-tokens 48      # the quickstart's K=300 answers to its safe prompts (after make demo)

Without native bfloat16 on this CPU, (b) and (c) are skipped. On a machine shared with other work the timings
are rough; the answers do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

#: oneDNN instruction-set caps for (c), with the CPUs whose kernels they stand in for.
ISA_CAPS = {"AVX512_CORE": "AVX-512 without BF16", "AVX2": "AVX2 only"}
NATIVE = "native"

Setting = tuple[str, str, int]  # (dtype, kernels: NATIVE or an ISA cap, torch threads)


def threads_text(n: int) -> str:
    """``1 thread``, ``2 threads``."""
    return f"{n} thread" + ("s" if n != 1 else "")


def setting_text(setting: Setting) -> str:
    """``bfloat16, AVX2 kernels, 1 thread``."""
    dtype, kernels, threads = setting
    return f"{dtype}, {kernels} kernels, {threads_text(threads)}"


def spread_prompts(prompts: list[Any], n: int) -> list[Any]:
    """``n`` prompts spread evenly over the suite (XSTest groups its safe and unsafe prompts by type)."""
    step = max(1, len(prompts) // n)
    return prompts[::step][:n]


def load_prompts(args: argparse.Namespace) -> list[Any]:
    """The prompts every setting answers: ``--n-prompts`` spread over ``--suite``."""
    from safemix.data.catalog import default_data_dir
    from safemix.data.suites import load_suite

    return spread_prompts(list(load_suite(args.suite, default_data_dir(args.data_dir)).prompts), args.n_prompts)


def answer(args: argparse.Namespace) -> None:
    """Worker: load the model in ``--dtype`` and answer with each thread count; write ``{threads: answers}``."""
    import torch

    from safemix.generate.config import DecodingConfig
    from safemix.generate.hf_backend import HFGenerator

    # peft's merge reads a property transformers 5 deprecates; nothing to act on (as in safemix.train.recipe)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    prompts = load_prompts(args)
    decoding = DecodingConfig(max_new_tokens=args.max_new_tokens)  # greedy: one beam, no sampling
    generator = HFGenerator.load(args.model, args.adapter, args.template, decoding, args.batch_size, dtype=args.dtype)
    answers = {}
    for n_threads in args.thread_counts:
        torch.set_num_threads(n_threads)
        start = time.perf_counter()
        answers[n_threads] = [record.response for record in generator.generate(prompts)]
        kernels = os.environ.get("ONEDNN_MAX_CPU_ISA", NATIVE)
        print(f"  {setting_text((args.dtype, kernels, n_threads))}: {time.perf_counter() - start:.1f} s", flush=True)
    generator.close()
    args.answers_out.write_text(json.dumps(answers), encoding="utf-8")


def answer_in_new_process(args: argparse.Namespace, dtype: str, kernels: str, threads: list[int],
                          folder: Path) -> dict[Setting, list[str]]:
    """Run the worker for one dtype and kernel choice (oneDNN reads its cap once, at start) and read its answers."""
    out = folder / f"{dtype}-{kernels}.json"
    command = [sys.executable, __file__, "--worker", "--model", args.model, "--template", args.template, "--suite",
               args.suite, "--n-prompts", str(args.n_prompts), "--max-new-tokens", str(args.max_new_tokens),
               "--batch-size", str(args.batch_size), "--dtype", dtype, "--threads", ",".join(map(str, threads)),
               "--answers-out", str(out)]
    for option, value in (("--adapter", args.adapter), ("--data-dir", args.data_dir)):
        if value is not None:
            command += [option, str(value)]
    env = {**os.environ, **({} if kernels == NATIVE else {"ONEDNN_MAX_CPU_ISA": kernels})}
    subprocess.run(command, env=env, check=True)
    return {(dtype, kernels, int(n)): texts for n, texts in json.loads(out.read_text(encoding="utf-8")).items()}


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The 1-based position of the first token where ``a`` and ``b`` differ; None when they are equal."""
    for position, (x, y) in enumerate(zip(a, b), start=1):
        if x != y:
            return position
    return None if len(a) == len(b) else min(len(a), len(b)) + 1


def compare(a: list[str], b: list[str], tokenizer: Any, prefix_tokens: int) -> dict[str, Any]:
    """Identical answers, identical first ``prefix_tokens`` tokens, first differing tokens, strmatch label flips."""
    from safemix.scoring.strmatch import is_prefix_refusal

    tokens_a = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in a]
    tokens_b = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in b]
    differences = [first_difference(x, y) for x, y in zip(tokens_a, tokens_b, strict=True)]
    return {
        "identical": sum(x == y for x, y in zip(a, b, strict=True)),
        "same_prefix": sum(x[:prefix_tokens] == y[:prefix_tokens] for x, y in zip(tokens_a, tokens_b, strict=True)),
        "first_difference": [d for d in differences if d is not None],
        "label_flips": sum(is_prefix_refusal(x) != is_prefix_refusal(y) for x, y in zip(a, b, strict=True)),
    }


def comparison_line(name: str, result: dict[str, Any], n: int) -> str:
    """One row of the comparison table."""
    def share(count: int) -> str:
        return f"{count}/{n} ({100 * count / n:.0f}%)"

    where = result["first_difference"]
    median = f"{statistics.median(where):.0f}" if where else "-"
    return (f"{name:44} {share(result['identical']):>14} {share(result['same_prefix']):>14} {median:>9} "
            f"{result['label_flips']:>6}")


def comparisons(answers: dict[Setting, list[str]], threads: list[int]) -> list[tuple[str, Setting, Setting]]:
    """(a) each thread count against the first, per dtype; (b) bfloat16 against float32, per thread count;
    (c) each capped instruction set against the native bfloat16 kernels, on the first thread count."""
    first = threads[0]
    pairs = []
    for dtype in ("float32", "bfloat16"):
        pairs += [(f"(a) {threads_text(first)} vs {n}, {dtype}", (dtype, NATIVE, first), (dtype, NATIVE, n))
                  for n in threads[1:] if (dtype, NATIVE, n) in answers]
    pairs += [(f"(b) float32 vs bfloat16, {threads_text(n)}", ("float32", NATIVE, n), ("bfloat16", NATIVE, n))
              for n in threads if ("bfloat16", NATIVE, n) in answers]
    pairs += [(f"(c) bfloat16 kernels, native vs {cap}", ("bfloat16", NATIVE, first), ("bfloat16", cap, first))
              for cap in ISA_CAPS if ("bfloat16", cap, first) in answers]
    return pairs


def default_template(model: str, adapter: Path | None) -> str:
    """The adapter's template; without one, alpaca for the tiny model and chat for a chat model."""
    if adapter is not None:
        from safemix.models import read_adapter_info

        return read_adapter_info(adapter).template
    return "alpaca" if model == "tiny" else "chat"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="'tiny' (built here), a built-in name or a model directory")
    parser.add_argument("--adapter", type=Path, default=None, help="a LoRA adapter written by 'safemix train'")
    parser.add_argument("--template", default=None,
                        help="prompt template (default: the adapter's, else chat, alpaca for tiny)")
    parser.add_argument("--suite", default="xstest")
    parser.add_argument("--n-prompts", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prefix-tokens", type=int, default=48, help="compare the first N answer tokens too")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", default="1,2", help="torch thread counts, the first being the reference")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--answers-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.thread_counts = [int(n) for n in args.threads.split(",")]
    args.template = args.template or default_template(args.model, args.adapter)
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        answer(args)
        return
    from safemix.models import build_tiny_model, load_tokenizer, native_bfloat16, resolve_model
    from safemix.scoring.strmatch import is_prefix_refusal
    from safemix.versions import compute_environment

    prompts = load_prompts(args)
    environment = compute_environment("cpu")
    native_bf16 = native_bfloat16("cpu")
    categories = ", ".join(f"{name} {n}" for name, n in sorted(Counter(p.category for p in prompts).items()))
    adapter = f" with adapter {args.adapter}" if args.adapter else ""
    print(f"model {args.model}{adapter} ({args.template} template); suite {args.suite}, {len(prompts)} prompts ({categories}); "
          f"greedy, {args.max_new_tokens} new tokens, batch size {args.batch_size}")
    print(f"CPU {environment['cpu']} ({environment['machine']}), native bfloat16: "
          f"{'yes' if native_bf16 else 'no, (b) and (c) skipped'}; torch {environment['torch']}; "
          f"load average at the start {os.getloadavg()[0]:.2f}")

    threads = args.thread_counts
    runs = [("float32", NATIVE, threads)]
    if native_bf16:
        runs += [("bfloat16", NATIVE, threads)] + [("bfloat16", cap, threads[:1]) for cap in ISA_CAPS]
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            args.model = str(build_tiny_model(Path(tmp) / "tiny"))
        answers: dict[Setting, list[str]] = {}
        for dtype, kernels, thread_counts in runs:
            answers |= answer_in_new_process(args, dtype, kernels, thread_counts, Path(tmp))
        tokenizer = load_tokenizer(resolve_model(args.model))

    print("strmatch refusals: " + "; ".join(f"{setting_text(setting)} {sum(map(is_prefix_refusal, texts))}"
                                             for setting, texts in answers.items()))
    print("(c) caps oneDNN at " + ", ".join(f"{cap} ({what})" for cap, what in ISA_CAPS.items()))
    print(f"{'comparison':44} {'identical':>14} {f'first {args.prefix_tokens} tok':>14} {'1st diff':>9} {'flips':>6}")
    for name, a, b in comparisons(answers, threads):
        print(comparison_line(name, compare(answers[a], answers[b], tokenizer, args.prefix_tokens), len(prompts)))


if __name__ == "__main__":
    main()
