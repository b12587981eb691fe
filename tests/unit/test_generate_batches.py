"""How prompts are cut into batches."""

from __future__ import annotations

import pytest

from safemix.generate.base import balanced_chunks


@pytest.mark.parametrize(("n_items", "max_size", "sizes"), [
    (50, 32, [25, 25]),
    (160, 32, [32, 32, 32, 32, 32]),
    (7, 3, [3, 2, 2]),
    (5, 16, [5]),
    (0, 4, []),
])
def test_balanced_chunks_are_as_few_as_possible_and_differ_by_at_most_one(n_items: int, max_size: int,
                                                                         sizes: list[int]) -> None:
    items = list(range(n_items))
    slices = list(balanced_chunks(items, max_size))
    assert [len(piece) for piece in slices] == sizes
    assert [item for piece in slices for item in piece] == items  # consecutive, in order, nothing lost
