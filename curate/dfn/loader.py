"""Batches for training: a deterministic batch order and lazy decoding in DataLoader workers.

The batch order is a pure function of (seed, step): epoch e uses permutation rng([seed, e]) of
the set, step s takes the s-th slice of it, and each training worker takes its rank's part of
that global batch. So a run resumed at step s sees exactly the batches an uninterrupted run sees
from step s on, with no loader state to save.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler


def steps_per_epoch(num_pairs: int, global_batch: int) -> int:
    return num_pairs // global_batch  # a partial last batch would change the loss scale; drop it


class StepBatchSampler(Sampler[list[int]]):
    """Index lists for steps start_step … end_step-1 of one worker (rank of world_size)."""

    def __init__(self, num_pairs: int, global_batch: int, seed: int, start_step: int, end_step: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if steps_per_epoch(num_pairs, global_batch) < 1:
            raise ValueError(f"{num_pairs} pairs are fewer than one batch of {global_batch}")
        self.num_pairs, self.global_batch, self.seed = num_pairs, global_batch, seed
        self.start_step, self.end_step = start_step, end_step
        self.rank, self.world_size = rank, world_size
        self.local_batch = global_batch // world_size

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        cached_epoch, perm = -1, np.empty(0, dtype=np.int64)
        per_epoch = steps_per_epoch(self.num_pairs, self.global_batch)
        for step in range(self.start_step, self.end_step):
            epoch, within = divmod(step, per_epoch)
            if epoch != cached_epoch:
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_pairs)
                cached_epoch = epoch
            batch = perm[within * self.global_batch:(within + 1) * self.global_batch]
            yield batch[self.rank * self.local_batch:(self.rank + 1) * self.local_batch].tolist()


class PairDataset(Dataset):
    """Decodes one pair's image and applies the model's preprocess; bad images come back as None."""

    def __init__(self, table: pa.Table, preprocess: Callable[[Image.Image], torch.Tensor]) -> None:
        self.images = table["image"].combine_chunks()
        self.captions = table["caption"].combine_chunks()
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, str]:
        caption = self.captions[index].as_py()
        try:
            with Image.open(io.BytesIO(self.images[index].as_py())) as img:
                return self.preprocess(img.convert("RGB")), caption
        except Exception:
            return None, caption


class Collate:
    """Stacks images and tokenizes captions in one call; counts undecodable images instead of failing."""

    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: list[tuple[torch.Tensor | None, str]]) -> dict[str, Any]:
        good = [(img, cap) for img, cap in items if img is not None]
        if not good:
            return {"images": None, "texts": None, "undecodable": len(items)}
        images = torch.stack([img for img, _ in good])
        texts = self.tokenizer([cap for _, cap in good])
        return {"images": images, "texts": texts, "undecodable": len(items) - len(good)}


def make_loader(dataset: PairDataset, sampler: StepBatchSampler, tokenizer: Callable[[list[str]], torch.Tensor],
                workers: int, pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=Collate(tokenizer), num_workers=workers,
                      pin_memory=pin_memory, persistent_workers=False,
                      prefetch_factor=4 if workers else None)
