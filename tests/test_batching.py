"""Length-grouped batches: every example once per epoch, little padding, reproducible from the seed."""

from __future__ import annotations

import random

import torch

from hps.objectives.batching import LengthGroupedBatches


def padded_tokens(batches: list[list[int]], lengths: list[int]) -> int:
    """Tokens the collator produces: every batch padded to its longest example."""
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def test_each_epoch_holds_every_example_once_in_full_batches():
    lengths = [random.Random(n).randint(3, 120) for n in range(1000)]
    sampler = LengthGroupedBatches(lengths, 16, torch.Generator().manual_seed(0), group_batches=10)
    for _ in range(2):
        batches = list(sampler)
        assert len(batches) == len(sampler) == 63
        assert sorted(i for batch in batches for i in batch) == list(range(1000))
        assert sum(len(batch) < 16 for batch in batches) == 1  # only the remainder


def test_grouped_batches_pad_far_less_than_shuffled_ones():
    lengths = [random.Random(n).randint(3, 120) for n in range(1000)]
    grouped = list(LengthGroupedBatches(lengths, 16, torch.Generator().manual_seed(0)))
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [order[i : i + 16] for i in range(0, 1000, 16)]
    assert padded_tokens(grouped, lengths) < 0.6 * padded_tokens(shuffled, lengths)
    assert padded_tokens(grouped, lengths) < 1.05 * sum(lengths)


def test_same_seed_same_batches_and_epochs_differ():
    lengths = list(range(200))
    first = LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(3), group_batches=5)
    second = LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(3), group_batches=5)
    epoch_1, epoch_2 = list(first), list(first)
    assert epoch_1 == list(second) and epoch_2 == list(second)
    assert epoch_1 != epoch_2
