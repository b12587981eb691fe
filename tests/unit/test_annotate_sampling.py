"""The study's sample and blinding: seeded, stratified by suite, independent of input order."""

from __future__ import annotations

from collections import Counter

import pytest

from safemix.annotate.sampling import blind_order, sample_items
from safemix.errors import InputError

SUITES = {f"{suite}-{i}": suite for suite, size in (("a", 50), ("b", 30), ("c", 20)) for i in range(size)}


def test_sample_is_stratified_by_suite_with_largest_remainders() -> None:
    # 10 of 100: shares 5, 3, 2 exactly
    assert Counter(SUITES[i] for i in sample_items(SUITES, 10, seed=0)) == {"a": 5, "b": 3, "c": 2}
    # 7 of 100: shares 3.5, 2.1, 1.4 -> floors 3, 2, 1 and the one place left goes to a (remainder .5)
    assert Counter(SUITES[i] for i in sample_items(SUITES, 7, seed=0)) == {"a": 4, "b": 2, "c": 1}


def test_sample_depends_on_seed_and_ids_only() -> None:
    first = sample_items(SUITES, 10, seed=0)
    assert sample_items(dict(reversed(list(SUITES.items()))), 10, seed=0) == first
    assert sample_items(SUITES, 10, seed=1) != first
    assert len(set(first)) == 10


def test_presentation_order_mixes_suites_and_all_means_every_prompt() -> None:
    everything = sample_items(SUITES, None, seed=0)
    assert sorted(everything) == sorted(SUITES)
    assert [SUITES[i] for i in everything[:10]] != sorted(SUITES[i] for i in everything[:10])


@pytest.mark.parametrize("n", [0, 101])
def test_sample_size_out_of_range_is_an_input_error(n: int) -> None:
    with pytest.raises(InputError, match=f"--sample {n}: must be between 1 and the 100 prompts"):
        sample_items(SUITES, n, seed=0)


def test_blinding_is_a_seeded_permutation_that_puts_each_model_first_about_half_the_time() -> None:
    orders = [blind_order(f"p{i}", 2, seed=0) for i in range(400)]
    assert all(sorted(order) == [0, 1] for order in orders)
    first_is_model_0 = sum(order[0] == 0 for order in orders)
    assert 160 < first_is_model_0 < 240  # a fair coin stays in this band with probability > 0.9999
    assert [blind_order(f"p{i}", 2, seed=0) for i in range(400)] == orders
    assert [blind_order(f"p{i}", 2, seed=1) for i in range(400)] != orders
    assert sorted(blind_order("p", 4, seed=0)) == [0, 1, 2, 3]
