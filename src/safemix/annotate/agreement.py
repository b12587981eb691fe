"""Agreement statistics on nominal labels, as pure functions: Cohen's kappa, Krippendorff's alpha, ROC AUC.

Each returns None where the statistic is undefined (no data, or no variation to agree beyond chance on).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa of two raters: ``(p_o - p_e) / (1 - p_e)``.

    Args:
        pairs: (first rater's label, second rater's label) for every unit both rated.

    Returns:
        kappa; None without pairs, or when chance agreement ``p_e`` is 1 (both raters used one same label).
    """
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(first == second for first, second in pairs) / n
    first_counts = Counter(first for first, _ in pairs)
    second_counts = Counter(second for _, second in pairs)
    expected = sum(first_counts[label] * second_counts[label] for label in first_counts) / (n * n)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def krippendorff_alpha_nominal(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal labels, any number of raters, missing ratings allowed.

    ``alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c * n_k``, where the coincidence ``o_ck`` counts,
    within each unit rated ``m >= 2`` times, the ordered pairs of ratings (c, k) from different raters, weighted
    ``1 / (m - 1)``; ``n_c`` is the coincidences of label c and ``n`` their total. Units rated once are ignored.

    Args:
        units: per unit, the labels its raters gave (one per rater who rated it).

    Returns:
        alpha; None when fewer than two pairable ratings exist or all of them carry one label.
    """
    coincidence: defaultdict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for first, n_first in counts.items():
            for second, n_second in counts.items():
                ordered_pairs = n_first * (n_second - (first == second))
                coincidence[(first, second)] += ordered_pairs / (m - 1)
    totals: defaultdict[Hashable, float] = defaultdict(float)
    for (first, _), weight in coincidence.items():
        totals[first] += weight
    n = sum(totals.values())
    expected = sum(totals[first] * totals[second] for first in totals for second in totals if first != second)
    if n <= 1 or expected == 0:
        return None
    observed = sum(weight for (first, second), weight in coincidence.items() if first != second)
    return 1 - (n - 1) * observed / expected


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """Probability that a positive scores above a negative (ties count half); None without both kinds."""
    if not positives or not negatives:
        return None
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))
