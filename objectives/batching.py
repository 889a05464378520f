"""Length-grouped batches: examples of similar length share a batch, so dynamic padding pads little.

Each epoch takes a seeded permutation of the training examples, cuts it into groups of ``group_batches``
batches, sorts each group by length and cuts it into batches, then shuffles the epoch's batches. Batches are
as random as the permutation, only their members are alike in length; the same generator state gives the same
batches. (HF's ``group_by_length`` does the same with groups of 50 batches, but keeps the longest batch first.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

GROUP_BATCHES = 50


class LengthGroupedBatches(Sampler[list[int]]):
    """Batches of example indices for a DataLoader's ``batch_sampler``; every example once per epoch."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        generator: torch.Generator,
        group_batches: int = GROUP_BATCHES,
    ) -> None:
        self.lengths, self.batch_size, self.generator = list(lengths), batch_size, generator
        self.group_size = batch_size * group_batches

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches = []
        for start in range(0, len(order), self.group_size):
            group = sorted(order[start : start + self.group_size], key=self.lengths.__getitem__, reverse=True)
            batches.extend(group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size))
        for index in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[index]
