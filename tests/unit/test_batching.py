"""Length-grouped batches: the exact batches extraction, training and inference get (order and members), pinned
so that regrouping code never changes an artifact."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from layershift.data.batching import length_grouped_batches, shuffled_length_grouped_batches

SMALL = np.array([5, 3, 5, 1, 7, 3, 2, 9, 5, 1, 4])
LARGE = np.random.default_rng(0).integers(1, 129, size=1000)


def listed(batches: list[np.ndarray]) -> list[list[int]]:
    return [b.tolist() for b in batches]


def fingerprint(batches: list[np.ndarray]) -> str:
    """The first 16 hex digits of the SHA-256 of the batches as JSON lists."""
    return hashlib.sha256(json.dumps(listed(batches)).encode()).hexdigest()[:16]


def test_extraction_batches_are_pinned():
    """Stream order kept run by run, each run shortest first."""
    assert listed(length_grouped_batches(SMALL, 3, run_batches=2)) == [
        [3, 1, 5],
        [0, 2, 4],
        [9, 6, 10],
        [8, 7],
    ]
    assert fingerprint(length_grouped_batches(LARGE, 32, run_batches=16)) == "b2d6c574b4146453"
    assert fingerprint(length_grouped_batches(LARGE, 7, run_batches=3)) == "68d3f0e6a16019fc"


def test_inference_batches_are_pinned():
    """All rows sorted longest first, ties in row order."""
    assert listed(length_grouped_batches(SMALL, 3, longest_first=True)) == [
        [7, 4, 0],
        [2, 8, 10],
        [1, 5, 6],
        [3, 9],
    ]
    assert fingerprint(length_grouped_batches(LARGE, 32, longest_first=True)) == "177ee5b92de5d0be"


@pytest.mark.parametrize(
    ("lengths", "batch_size", "seed", "run_batches", "expected"),
    [
        (SMALL, 3, [7, 0], 2, [[7, 8, 2], [5, 9], [4, 0, 10], [1, 6, 3]]),
        (SMALL, 3, [7, 1], 2, [[7, 0, 8], [4, 2, 1], [10, 6, 9], [5, 3]]),
        (LARGE, 32, [0, 0], 50, "cba8a60c69092439"),
        (LARGE, 7, [3, 2], 4, "35724d414185135b"),
    ],
)
def test_training_batches_are_pinned(lengths, batch_size, seed, run_batches, expected):
    batches = shuffled_length_grouped_batches(lengths, batch_size, np.random.default_rng(seed), run_batches)
    assert (listed(batches) if isinstance(expected, list) else fingerprint(batches)) == expected


def test_batches_are_row_positions_covering_every_row_once():
    for batches in (
        length_grouped_batches(LARGE, 32, run_batches=16),
        length_grouped_batches(LARGE, 32, longest_first=True),
        shuffled_length_grouped_batches(LARGE, 32, np.random.default_rng(0), 50),
    ):
        assert all(b.dtype == np.int64 for b in batches)
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(LARGE)))


def test_no_rows_give_no_batches():
    assert length_grouped_batches(np.zeros(0, np.int64), 3) == []
    assert length_grouped_batches(np.zeros(0, np.int64), 3, run_batches=16) == []


def test_callers_get_the_pinned_batches():
    """Fine-tuning's make_batches (seeded from [seed, epoch], or sorted for inference) and extraction's
    stream batches (runs of 16 batches) are the groupings pinned above."""
    from layershift.models.batches import Encodings, make_batches
    from layershift.models.extract import TokenizedSentences

    enc = Encodings(np.zeros((len(SMALL), SMALL.max()), np.int64), SMALL, None, pad_id=0)
    assert [b.index.tolist() for b in make_batches(enc, 3, seed=7, epoch=1, megabatch_mult=2)] == [
        [7, 0, 8],
        [4, 2, 1],
        [10, 6, 9],
        [5, 3],
    ]
    assert [b.index.tolist() for b in make_batches(enc, 3)] == listed(
        length_grouped_batches(SMALL, 3, longest_first=True)
    )
    stream = TokenizedSentences(np.arange(len(LARGE)), [[0] * n for n in LARGE], [], [])
    assert fingerprint(stream.batches(32)) == "b2d6c574b4146453"
