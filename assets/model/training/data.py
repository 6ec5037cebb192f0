"""Tokenize once, batch by length, pad per batch: the input side of training and inference."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from textops_core.inference import pad_batch, sorted_batches


@dataclass(frozen=True)
class Encoded:
    """A tokenized split: one list of token ids per text, and the labels."""

    input_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


def encode(tokenizer, texts: Sequence[str], labels: Sequence[int], max_length: int) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return Encoded(input_ids=ids, labels=list(labels))


class EncodedDataset(Dataset):
    def __init__(self, encoded: Encoded) -> None:
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.encoded.input_ids[index], self.encoded.labels[index]


def collate(batch: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of this batch, not to max_length."""
    input_ids, attention_mask = pad_batch([ids for ids, _ in batch], pad_id)
    labels = torch.tensor([label for _, label in batch], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class Collator:
    """Picklable collate function for DataLoader workers."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch):
        return collate(batch, self.pad_id)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar lengths, in random order.

    Each epoch shuffles the indices, cuts them into groups of `group_batches` batches, sorts each
    group by length into batches, and shuffles the batches: padding stays small while the order
    and the company of every example stay random.

    Under DDP every rank draws the same global batches (`batch_size` per rank times the world
    size, from the same seed) and takes its own share of each: the ranks' batches are disjoint,
    every rank takes the same number of steps, and the global batches are those one process
    with the whole global batch would take.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        group_batches: int = 50,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_batches = group_batches
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // (self.batch_size * self.world_size))

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            # the last global batch may hold fewer texts than ranks: repeat some, so no rank
            # is left without a step while the others wait for it
            batch = (batch * self.world_size)[: max(len(batch), self.world_size)]
            yield batch[self.rank :: self.world_size]

    def global_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size * self.world_size
        group = size * self.group_batches
        batches = []
        for start in range(0, len(order), group):
            chunk = sorted(order[start : start + group], key=self.lengths.__getitem__, reverse=True)
            batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        return [batches[p] for p in torch.randperm(len(batches), generator=generator).tolist()]


class SplitsDataModule(L.LightningDataModule):
    """The `text_splits` parquet files, tokenized once in `setup`; downloads nothing."""

    def __init__(
        self,
        split_paths: dict[str, Path],
        tokenizer,
        max_length: int,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.split_paths = split_paths
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size * 2
        self.seed = seed
        self.num_workers = num_workers
        self.encoded: dict[str, Encoded] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "validation"):
            if split not in self.encoded:
                frame = pl.read_parquet(self.split_paths[split])
                self.encoded[split] = encode(
                    self.tokenizer,
                    frame["text"].to_list(),
                    frame["label"].to_list(),
                    self.max_length,
                )

    def _loader(self, split: str, batch_sampler) -> DataLoader:
        return DataLoader(
            EncodedDataset(self.encoded[split]),
            batch_sampler=batch_sampler,
            collate_fn=Collator(self.tokenizer.pad_token_id or 0),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        lengths = [len(ids) for ids in self.encoded["train"].input_ids]
        rank, world = self._rank()
        sampler = LengthGroupedBatchSampler(
            lengths, self.batch_size, self.seed, rank=rank, world_size=world
        )
        return self._loader("train", sampler)

    def val_dataloader(self) -> DataLoader:
        lengths = [len(ids) for ids in self.encoded["validation"].input_ids]
        rank, world = self._rank()
        return self._loader(
            "validation", validation_shard(lengths, self.eval_batch_size, rank, world)
        )


def validation_shard(
    lengths: Sequence[int], batch_size: int, rank: int, world_size: int
) -> list[list[int]]:
    """One rank's validation batches: the texts dealt out by length, so each rank holds a
    disjoint share of similar lengths (the metrics are summed across ranks). Every rank needs
    at least one text, or it would never join the others' metric sync."""
    if len(lengths) < world_size:
        raise ValueError(
            f"the validation split has {len(lengths)} rows, fewer than the {world_size} "
            "training processes: each process validates a share of at least one row"
        )
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    mine = order[rank::world_size]
    return [[mine[i] for i in b] for b in sorted_batches([lengths[i] for i in mine], batch_size)]
