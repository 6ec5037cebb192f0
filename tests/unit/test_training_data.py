import pytest
import torch

from assets.model.training.data import LengthGroupedBatchSampler, collate, validation_shard
from textops_core.inference import sorted_batches


def test_collate_pads_to_the_longest_in_the_batch_only():
    batch = collate([([101, 7, 102], 0), ([101, 102], 1)], pad_id=0)
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [0, 1]
    assert batch["input_ids"].dtype == torch.long


def test_length_grouped_batches_cover_every_index_once_and_group_lengths():
    lengths = [(i * 37) % 120 + 1 for i in range(1000)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=10, seed=3, group_batches=20)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 100
    assert sorted(i for b in batches for i in b) == list(range(1000))
    grouped_padding = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    generator = torch.Generator().manual_seed(0)
    shuffled = torch.randperm(1000, generator=generator).tolist()
    random_batches = [shuffled[i : i + 10] for i in range(0, 1000, 10)]
    random_padding = sum(len(b) * max(lengths[i] for i in b) for b in random_batches)
    assert grouped_padding < 0.7 * random_padding


def test_length_grouped_order_is_random_per_epoch_and_reproducible():
    lengths = list(range(1, 201))
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=1)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second
    again = LengthGroupedBatchSampler(lengths, batch_size=8, seed=1)
    again.set_epoch(0)
    assert list(again) == first
    # batch order is shuffled, not longest-first
    maxima = [max(lengths[i] for i in b) for b in first]
    assert maxima != sorted(maxima, reverse=True)


def test_length_sorted_batches_for_inference():
    assert sorted_batches([3, 9, 1, 5], 2) == [[1, 3], [0, 2]]


def test_micro_batches_end_where_padding_would_pass_the_cap():
    lengths = [40, 10, 38, 9, 36, 12]
    assert sorted_batches(lengths, 32) == [[0, 2, 4, 5, 1, 3]]
    assert sorted_batches(lengths, 32, max_padding=0.2) == [[0, 2, 4], [5, 1], [3]]
    assert sorted_batches(lengths, 2, max_padding=0.2) == [[0, 2], [4], [5, 1], [3]]


def test_ranks_take_disjoint_shares_of_the_global_batches_one_process_would_take():
    lengths = [(i * 37) % 120 + 1 for i in range(1001)]
    alone = list(LengthGroupedBatchSampler(lengths, batch_size=16, seed=5))
    ranks = [
        list(LengthGroupedBatchSampler(lengths, batch_size=8, seed=5, rank=r, world_size=2))
        for r in range(2)
    ]
    # the same number of steps on every rank, one per global batch of 2 x 8
    assert len(ranks[0]) == len(ranks[1]) == len(alone) == 63
    for whole, first, second in zip(alone, *ranks, strict=True):
        if len(whole) >= 2:
            assert not set(first) & set(second)
            assert sorted(first + second) == sorted(whole)
        assert first and second
    covered = sorted(i for batches in ranks for batch in batches for i in batch)
    assert covered == list(range(1001))


def test_a_last_global_batch_smaller_than_the_world_leaves_no_rank_without_a_step():
    lengths = [5] * 9  # batches of 2 x 4: one full, then one text for four ranks
    shares = [
        list(LengthGroupedBatchSampler(lengths, batch_size=2, seed=0, rank=r, world_size=4))
        for r in range(4)
    ]
    assert [len(s) for s in shares] == [2, 2, 2, 2]
    assert all(batch for share in shares for batch in share)


def test_validation_is_dealt_out_by_length_and_covers_every_row_once():
    lengths = [(i * 13) % 50 + 1 for i in range(101)]
    shards = [validation_shard(lengths, 8, r, 3) for r in range(3)]
    rows = sorted(i for shard in shards for batch in shard for i in batch)
    assert rows == list(range(101))
    with pytest.raises(ValueError, match="fewer than the 4 training processes"):
        validation_shard([3, 4, 5], 8, 0, 4)
