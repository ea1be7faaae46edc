"""Generation under tensor parallelism on gloo: rank 0's input reaches every rank, and every
rank, sampling with the same seed, decodes what the single-process model decodes. One launch."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glm130b.parallel import broadcast_object
from glm130b.generation import BaseStrategy, BeamSearchStrategy, batch_filling_sequence
from glm130b.parallel import destroy_model_parallel, initialize_model_parallel
from helpers import copy_into_shards, CONTEXTS, MASK_POSITIONS, lively_model

pytestmark = pytest.mark.slow


def decode(model):
    sampled = batch_filling_sequence(model, CONTEXTS, MASK_POSITIONS,
                                     BaseStrategy(top_k=0, top_p=0.9, end_tokens=[125], seed=5), 24)
    beams = batch_filling_sequence(model, CONTEXTS, MASK_POSITIONS,
                                   BeamSearchStrategy(2, consider_end=True, end_tokens=[125],
                                                      no_repeat_ngram_size=2, seed=5), 24)
    return sampled, beams


def worker(rank, world, init_file, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        single = lively_model()  # before the groups exist: TP=1, the same on every rank
        expected = decode(single)
        initialize_model_parallel(world)
        model = lively_model()
        copy_into_shards(model, single)
        assert broadcast_object("from rank 0" if rank == 0 else None) == "from rank 0"
        results[rank] = (decode(model), expected)
    finally:
        destroy_model_parallel()
        dist.destroy_process_group()


def test_tp2_ranks_decode_as_one_process(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(2, str(tmp_path / "init"), results), nprocs=2)
        (tp0, single), (tp1, _) = results[0], results[1]
    assert tp0 == tp1 == single
