"""Which prompts a study shows, in which order, and in which order each item shows its answers.

Every choice is a sort by ``safemix.data.mixture.permutation_key`` (sha256 of the seed, a role and an id), like the
mixture builder's: it depends only on the seed and the ids, never on Python's ``random``, file order or platform.

- Sample: with ``n`` of ``N`` prompts requested, each suite gets ``n * size / N`` places, rounded down, and the
  places left go to the suites with the largest remainders (ties: suite name); a suite's sampled prompts are the
  first of its seeded order.
- Presentation order: the sampled items sorted by their seeded key, so suites are mixed.
- Blinding: per item, the models sorted by a key of the item id and the model's position; slot 0 is answer A.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from safemix.data.mixture import permutation_key
from safemix.errors import InputError


def sample_items(suite_of: Mapping[str, str], n_sample: int | None, seed: int) -> list[str]:
    """The prompt ids a study shows, in presentation order.

    Args:
        suite_of: prompt id -> suite name, for every prompt the inputs answer.
        n_sample: how many prompts to show (stratified by suite); None shows every prompt.
        seed: the seed of the sample, the presentation order and (elsewhere) the blinding.

    Raises:
        InputError: ``n_sample`` is below 1 or above the number of prompts.
    """
    if n_sample is not None and not 1 <= n_sample <= len(suite_of):
        raise InputError(f"--sample {n_sample}: must be between 1 and the {len(suite_of)} prompts the inputs answer")
    by_suite: dict[str, list[str]] = defaultdict(list)
    for prompt_id, suite in suite_of.items():
        by_suite[suite].append(prompt_id)
    quotas = _quotas({suite: len(ids) for suite, ids in by_suite.items()}, n_sample or len(suite_of))
    chosen = []
    for suite, ids in by_suite.items():
        ids.sort(key=lambda prompt_id: permutation_key(seed, f"sample\x00{suite}", prompt_id))
        chosen.extend(ids[: quotas[suite]])
    return sorted(chosen, key=lambda prompt_id: permutation_key(seed, "order", prompt_id))


def _quotas(sizes: Mapping[str, int], n_sample: int) -> dict[str, int]:
    """Largest-remainder allocation of ``n_sample`` places in proportion to the suite sizes (integer arithmetic)."""
    total = sum(sizes.values())
    quotas = {suite: n_sample * size // total for suite, size in sizes.items()}
    by_remainder = sorted(sizes, key=lambda suite: (-(n_sample * sizes[suite] % total), suite))
    for suite in by_remainder[: n_sample - sum(quotas.values())]:
        quotas[suite] += 1
    return quotas


def blind_order(prompt_id: str, n_models: int, seed: int) -> list[int]:
    """The models' positions (indexes into the study's inputs) in the order an item shows their answers."""
    return sorted(range(n_models), key=lambda model: permutation_key(seed, f"blind\x00{prompt_id}", str(model)))
