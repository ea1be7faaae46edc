"""Positions and masks against the reference's definitions (§2), written out by hand."""
import torch

from glm130b.model.masks import AttentionMask, multiple_choice_mask, position_ids

X, o = True, False  # blocked, visible


def test_prefix_lm_matches_reference_generation_mask():
    # §2.1: tril over the sequence, then every column before the sop visible to every row.
    mask = AttentionMask.from_context_lengths(3, 5).dense()[0, 0]
    expected = torch.tensor([
        [o, o, o, X, X],
        [o, o, o, X, X],
        [o, o, o, X, X],
        [o, o, o, o, X],
        [o, o, o, o, o],
    ])
    assert torch.equal(mask, expected)


def test_unidirectional_is_causal_and_rows_are_per_sample():
    mask = AttentionMask.from_context_lengths([0, 4], 4, batch_size=2).dense()
    assert torch.equal(mask[0, 0], ~torch.ones(4, 4, dtype=torch.bool).tril())
    assert not mask[1].any()


def test_packed_segments_are_block_diagonal_prefix_lms():
    # two chunks as the [MASK] objective packs them: (length 4, context 2), (length 3, context 1),
    # then one padding token in a segment of its own
    mask = AttentionMask.packed([[(4, 2), (3, 1)]], seq_len=8).dense()[0, 0]
    expected = torch.tensor([
        [o, o, X, X, X, X, X, X],
        [o, o, X, X, X, X, X, X],
        [o, o, o, X, X, X, X, X],
        [o, o, o, o, X, X, X, X],
        [X, X, X, X, o, X, X, X],
        [X, X, X, X, o, o, X, X],
        [X, X, X, X, o, o, o, X],
        [X, X, X, X, X, X, X, o],
    ])
    assert torch.equal(mask, expected)


def test_dense_rows_for_cached_queries():
    mask = AttentionMask.from_context_lengths(2, 5)
    assert torch.equal(mask.dense(query_start=3, query_length=2), mask.dense()[:, :, 3:5])


def test_positions_gmask_count_on_mask_reuses_mask_position():
    assert position_ids(6).tolist() == [0, 1, 2, 3, 4, 5]
    # "a b [MASK] c [sop] x y": sop at 4, the mask at 2
    assert position_ids(7, sop_index=4, mask_position=2).tolist() == [0, 1, 2, 3, 2, 2, 2]


def test_multiple_choice_mask_matches_reference_block_diagonal():
    # §2.3: context of 2 (incl. the mask), choices of 2 and 1 tokens ([sop] + c[:-1])
    mask = multiple_choice_mask(2, [2, 1])[0, 0]
    expected = torch.tensor([
        [o, o, X, X, X],
        [o, o, X, X, X],
        [o, o, o, X, X],
        [o, o, o, o, X],
        [o, o, X, X, o],
    ])
    assert torch.equal(mask, expected)
